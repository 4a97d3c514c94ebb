"""The embedded store: source chains, entries and a small lookup index in SQLite (WAL).

Appends are a compare-and-swap on the chain head inside one transaction, so two
writers (tasks or processes) can never fork a chain: the loser gets HeadMoved.
"""
from __future__ import annotations

import os
import sqlite3

from .core.action import Signed
from .core.errors import HeadMoved, StoreCorrupted

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS heads(author BLOB PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS actions(
    id INTEGER PRIMARY KEY, hash BLOB UNIQUE NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL,
    entry_type TEXT, entry BLOB, body BLOB NOT NULL, sig BLOB NOT NULL, UNIQUE(author, seq));
CREATE TABLE IF NOT EXISTS entries(hash BLOB PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS idx(kind TEXT NOT NULL, key TEXT NOT NULL, action_id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS idx_kk ON idx(kind, key, action_id);
CREATE INDEX IF NOT EXISTS actions_type ON actions(entry_type, id);
"""

# "process": a commit survives the writing process being killed (WAL, synchronous=NORMAL).
# "power": it also survives power loss, at the price of an fsync per commit.
DURABILITY = {"process": "NORMAL", "power": "FULL"}


class Store:
    def __init__(self, path: str, durability: str = "process"):
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {sorted(DURABILITY)}")
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={DURABILITY[durability]}")
            self.db.execute("PRAGMA busy_timeout=5000")
            ok = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise StoreCorrupted(f"{path}: {ok}")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise StoreCorrupted(f"{path}: {e}") from None

    def close(self) -> None:
        self.db.close()

    # -- meta
    def get_meta(self, k: str) -> bytes | None:
        row = self.db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    # -- writes
    def append(self, s: Signed, prev_seq: int | None, prev_hash: bytes | None,
               entry: tuple[bytes, bytes] | None = None, index=(),
               meta: dict | None = None) -> None:
        """Append `s` if the author's head is still (prev_seq, prev_hash); genesis passes None."""
        a = s.action
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if prev_seq is None:
                if db.execute("SELECT 1 FROM heads WHERE author=?", (a["author"],)).fetchone():
                    raise HeadMoved("this agent already has a genesis")
                db.execute("INSERT INTO heads VALUES (?,?,?)", (a["author"], s.seq, s.hash))
            else:
                cur = db.execute("UPDATE heads SET seq=?, hash=? WHERE author=? AND seq=? AND hash=?",
                                 (s.seq, s.hash, a["author"], prev_seq, prev_hash))
                if cur.rowcount != 1:
                    raise HeadMoved("another writer appended to this chain first; nothing was written")
            cur = db.execute("INSERT INTO actions(hash,author,seq,entry_type,entry,body,sig) "
                             "VALUES (?,?,?,?,?,?,?)",
                             (s.hash, a["author"], s.seq, a.get("entry_type"), a.get("entry"),
                              s.body, s.sig))
            if entry is not None:
                db.execute("INSERT OR IGNORE INTO entries VALUES (?,?)", entry)
            if index:
                aid = cur.lastrowid
                db.executemany("INSERT INTO idx VALUES (?,?,?)", [(k, key, aid) for k, key in index])
            for k, v in (meta or {}).items():
                db.execute("INSERT INTO meta VALUES (?,?)", (k, v))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- reads
    def authors(self) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT author FROM heads ORDER BY rowid")]

    def head(self, author: bytes):
        return self.db.execute("SELECT seq, hash FROM heads WHERE author=?", (author,)).fetchone()

    def chain(self, author: bytes, after_seq: int = -1) -> list[Signed]:
        out = []
        for h, body, sig in self.db.execute(
                "SELECT hash, body, sig FROM actions WHERE author=? AND seq>? ORDER BY seq",
                (author, after_seq)):
            s = Signed.from_wire(body, sig)
            if s.hash != h:
                raise StoreCorrupted(f"action stored under {h.hex()} does not hash to it")
            out.append(s)
        return out

    def entries_of(self, author: bytes) -> dict:
        return dict(self.db.execute(
            "SELECT e.hash, e.body FROM actions a JOIN entries e ON e.hash=a.entry "
            "WHERE a.author=?", (author,)))

    def record(self, action_hash: bytes):
        row = self.db.execute(
            "SELECT a.body, a.sig, e.body FROM actions a LEFT JOIN entries e ON e.hash=a.entry "
            "WHERE a.hash=?", (action_hash,)).fetchone()
        return None if row is None else (Signed.from_wire(row[0], row[1]), row[2])

    def find(self, kind: str, key: str, limit: int) -> list[bytes]:
        return [r[0] for r in self.db.execute(
            "SELECT a.hash FROM idx i JOIN actions a ON a.id=i.action_id "
            "WHERE i.kind=? AND i.key=? ORDER BY i.action_id DESC LIMIT ?", (kind, key, limit))]

    def of_type(self, entry_type: str, limit: int, author: bytes | None = None) -> list[bytes]:
        if author is None:
            q = ("SELECT hash FROM actions WHERE entry_type=? ORDER BY id DESC LIMIT ?",
                 (entry_type, limit))
        else:
            q = ("SELECT hash FROM actions WHERE entry_type=? AND author=? ORDER BY id DESC LIMIT ?",
                 (entry_type, author, limit))
        return [r[0] for r in self.db.execute(*q)]


def store_path(directory: str) -> str:
    return os.path.join(directory, "chain.db")
