"""The embedded store: source chains, entries and a small lookup index in SQLite (WAL).

Appends are a compare-and-swap on the chain head inside one transaction, so two
writers (tasks or processes) can never fork a chain: the loser gets HeadMoved.
"""
from __future__ import annotations

import os
import sqlite3

from .core.action import Signed
from .core.crypto import to_text
from .core.errors import BudgetError, HeadMoved, StoreCorrupted

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS heads(author BLOB PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS actions(
    id INTEGER PRIMARY KEY, hash BLOB UNIQUE NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL,
    entry_type TEXT, entry BLOB, body BLOB NOT NULL, sig BLOB NOT NULL, UNIQUE(author, seq));
CREATE TABLE IF NOT EXISTS held(author BLOB PRIMARY KEY);
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
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={DURABILITY[durability]}")
            self.db.execute("PRAGMA busy_timeout=5000")
            ok = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise StoreCorrupted(f"{path}: {ok}")
            self.db.executescript(SCHEMA)
        except BaseException as e:
            self.db.close()  # a refused store leaves no open connection behind
            if isinstance(e, sqlite3.DatabaseError):
                raise StoreCorrupted(f"{path}: {e}") from None
            raise

    def close(self) -> None:
        self.db.close()

    # -- meta
    def get_meta(self, k: str) -> bytes | None:
        row = self.db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    def init_meta(self, k: str, v: bytes) -> None:
        self.db.execute("INSERT INTO meta VALUES (?,?)", (k, v))

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
        """Every local author (with a head), then any author with actions but neither a head nor
        a `held` row (which chain() reports as corrupted): a deleted head row must not make a
        chain silently vanish. Other authors' chains held for the network are in `held`."""
        out = [r[0] for r in self.db.execute("SELECT author FROM heads ORDER BY rowid")]
        known = set(out)
        out += [r[0] for r in self.db.execute(
                "SELECT DISTINCT author FROM actions WHERE author NOT IN (SELECT author FROM held)")
                if r[0] not in known]
        return out

    def held_authors(self) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT author FROM held ORDER BY rowid")]

    def has_author(self, author: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM actions WHERE author=? LIMIT 1",
                               (author,)).fetchone() is not None

    def head(self, author: bytes):
        return self.db.execute("SELECT seq, hash FROM heads WHERE author=?", (author,)).fetchone()

    def chain(self, author: bytes, after_seq: int = -1) -> list[Signed]:
        """The author's actions after `after_seq`. A stored action that does not parse or does
        not hash to its key, or a chain that does not reach the recorded head, is reported as
        StoreCorrupted naming the agent, never returned."""
        who = to_text("agent", author) if isinstance(author, bytes) else repr(author)
        own_txn = not self.db.in_transaction
        if own_txn:
            self.db.execute("BEGIN")  # one snapshot: the head row and the actions agree
        try:
            head = self.head(author)
            rows = self.db.execute(
                "SELECT seq, hash, body, sig FROM actions WHERE author=? AND seq>? ORDER BY seq",
                (author, after_seq)).fetchall()
        finally:
            if own_txn:
                self.db.execute("COMMIT")
        if head is None:
            if rows and not self.db.execute("SELECT 1 FROM held WHERE author=?",
                                            (author,)).fetchone():
                raise StoreCorrupted(f"chain of {who}: actions stored without a chain head")
        elif (rows[-1][:2] != tuple(head)) if rows else head[0] > after_seq:
            raise StoreCorrupted(f"chain of {who}: the stored actions do not end at the "
                                 f"recorded head (seq {head[0]})")
        out = []
        for _, h, body, sig in rows:
            try:
                s = Signed.from_wire(body, sig)
            except BudgetError as e:
                raise StoreCorrupted(f"chain of {who}: stored action {_hex(h)} is "
                                     f"unreadable: {e}") from None
            if s.hash != h:
                raise StoreCorrupted(f"chain of {who}: action stored under {_hex(h)} "
                                     f"does not hash to it")
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


def _hex(h) -> str:
    return h.hex() if isinstance(h, bytes) else repr(h)


def store_path(directory: str) -> str:
    return os.path.join(directory, "chain.db")
