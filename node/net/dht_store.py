"""What a network node keeps beyond its own chains: other authors' validated chains (in the
same `actions` table, without a `heads` row), single ops held for a hash or entry basis (`ops`),
warrants, receipts, which own actions are published, ops still to be shown to an author-key
authority, and the peer cache.

Every write is awaited (`Store.write`): it waits for the write lock in trio, never in SQLite,
and raises StoreBusy, having written nothing, if another process holds the lock too long."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..core.action import Signed
from ..core.encoding import decode
from ..core.errors import HeadMoved, StoreBusy
from ..core.validate import ChainState
from ..store import Store, read_action

SCHEMA = """
CREATE TABLE IF NOT EXISTS warrants(hash BLOB PRIMARY KEY, offender BLOB NOT NULL,
                                    wire BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ops(hash BLOB PRIMARY KEY, author BLOB NOT NULL, seq INTEGER NOT NULL,
                               body BLOB NOT NULL, sig BLOB NOT NULL, entry BLOB);
CREATE INDEX IF NOT EXISTS ops_by_author ON ops(author, seq);
CREATE TABLE IF NOT EXISTS published(hash BLOB PRIMARY KEY, receipts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS unshown(hash BLOB PRIMARY KEY, sender BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS peer_infos(peer BLOB PRIMARY KEY, info BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS receipts(hash BLOB NOT NULL, validator BLOB NOT NULL, sig BLOB NOT NULL,
                                    PRIMARY KEY(hash, validator));
"""

# A write that lost the store to another writer: another process held the write lock past its
# bound, or another task stored the same seq first while this one waited.
STORE_CONTENTION = (StoreBusy, HeadMoved)


async def unless_store_busy(metrics, fn, *args) -> None:
    """Background work whose write lost the store is dropped, not fatal to the node: what it
    did not store is still pending where it came from (limbo, gossip, the publisher)."""
    try:
        await fn(*args)
    except STORE_CONTENTION:
        metrics["store_busy"] += 1


async def keep_running(metrics, loop) -> None:
    """A background loop (publisher, gossiper, limbo worker) whose round lost the store starts
    again (a refusal comes only after the bounded wait, so this never spins)."""
    while True:
        try:
            return await loop()
        except STORE_CONTENTION:
            metrics["store_busy"] += 1


class DhtStore:
    def __init__(self, store: Store):
        self.store = store
        self.db = store.db
        store.create_tables(SCHEMA)
        self._floor = 0

    async def set_meta(self, k: str, v: bytes) -> None:
        await self.store.write(
            lambda db: db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (k, v))
        )

    def foreign_authors(self) -> list[bytes]:
        return self.store.held_authors()

    def action_at(self, author: bytes, seq: int) -> Signed | None:
        row = self.db.execute(
            "SELECT hash, body, sig FROM actions WHERE author=? AND seq=?", (author, seq)
        ).fetchone()
        return None if row is None else read_action(*row)

    def has_action(self, h: bytes) -> bool:
        """Held as part of a chain or as a single op."""
        return (
            self.db.execute(
                "SELECT 1 FROM actions WHERE hash=? UNION ALL SELECT 1 FROM ops WHERE hash=?",
                (h, h),
            ).fetchone()
            is not None
        )

    def twin_of(self, s: Signed) -> Signed | None:
        """Another action held here (in a chain or alone) by `s`'s author at `s`'s seq."""
        row = self.db.execute(
            "SELECT body, sig FROM ops WHERE author=? AND seq=? AND hash!=? UNION ALL "
            "SELECT body, sig FROM actions WHERE author=? AND seq=? AND hash!=? LIMIT 1",
            (s.author, s.seq, s.hash, s.author, s.seq, s.hash),
        ).fetchone()
        return None if row is None else Signed.from_store(*row)

    def in_chain(self, h: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM actions WHERE hash=?", (h,)).fetchone() is not None

    async def put_op(
        self, s: Signed, entry: bytes | None, unshown_from: bytes | None = None
    ) -> None:
        """An action held for its hash or entry basis: validated against the action before it,
        kept without the author's chain (the author-key authorities keep that). `unshown_from`:
        the sender, when the op still has to be shown to an author-key authority (kept with the
        op, so a crash does not forget it)."""
        await self.put_ops([(s, entry, unshown_from)])

    async def put_ops(self, items: list[tuple[Signed, bytes | None, bytes | None]]) -> None:
        """`put_op` for each (s, entry, unshown_from), in one transaction."""

        def put(db):
            for s, entry, unshown_from in items:
                db.execute(
                    "INSERT OR IGNORE INTO ops VALUES (?,?,?,?,?,?)",
                    (s.hash, s.author, s.seq, s.body, s.sig, s.action.get("entry")),
                )
                if unshown_from is not None:
                    db.execute("INSERT OR IGNORE INTO unshown VALUES (?,?)", (s.hash, unshown_from))
                if entry is not None:
                    db.execute(
                        "INSERT OR IGNORE INTO entries VALUES (?,?)", (s.action["entry"], entry)
                    )

        await self.store.write(put)

    async def drop_ops_from(self, author: bytes, seq: int) -> None:
        """Forget the ops held alone by a warranted `author` from its offence at `seq` on: each
        was checked only as a step from the action before it, which may be the invalid one (a
        window opened without a witness, then spent from as any window), and nothing after an
        offence is taken any more (the acceptor answers "warranted")."""

        def drop(db):
            db.execute(
                "DELETE FROM unshown WHERE hash IN "
                "(SELECT hash FROM ops WHERE author=? AND seq>=?)",
                (author, seq),
            )
            db.execute("DELETE FROM ops WHERE author=? AND seq>=?", (author, seq))

        await self.store.write(drop)

    def save_peers(self, infos: dict[bytes, bytes], forget: set[bytes]) -> bool:
        """The peer cache a restarted node starts from (one transaction per flush). A cache:
        while another process holds the write lock it is not waited for (False: not saved)."""

        def save(db):
            db.executemany("INSERT OR REPLACE INTO peer_infos VALUES (?,?)", infos.items())
            db.executemany("DELETE FROM peer_infos WHERE peer=?", [(p,) for p in forget])

        return self.store.try_write(save)

    def load_peers(self, limit: int) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT info FROM peer_infos LIMIT ?", (limit,))]

    def unshown(self, limit: int) -> list[tuple[bytes, bytes]]:
        return self.db.execute("SELECT hash, sender FROM unshown LIMIT ?", (limit,)).fetchall()

    async def shown(self, h: bytes) -> None:
        await self.store.write(lambda db: db.execute("DELETE FROM unshown WHERE hash=?", (h,)))

    def op_record(self, h: bytes) -> tuple[Signed, bytes | None] | None:
        row = self.db.execute(
            "SELECT o.body, o.sig, e.body FROM ops o LEFT JOIN entries e "
            "ON e.hash=o.entry WHERE o.hash=?",
            (h,),
        ).fetchone()
        return None if row is None else (read_action(h, row[0], row[1]), row[2])

    def records(self, author: bytes, from_seq: int, limit: int) -> list[list]:
        """[body, sig, entry-or-None] for seq >= from_seq, in order."""
        return [
            [b, s, e]
            for b, s, e in self.db.execute(
                "SELECT a.body, a.sig, e.body FROM actions a LEFT JOIN entries e ON e.hash=a.entry "
                "WHERE a.author=? AND a.seq>=? ORDER BY a.seq LIMIT ?",
                (author, from_seq, limit),
            )
        ]

    async def put_foreign(
        self, s: Signed, entry: bytes | None, index, state: ChainState | None = None
    ) -> None:
        """`s` onto its author's held chain, which must end at the action before it (the one
        `s` was validated against): while this write waited for the lock, another task may
        have stored this action (then nothing more is written) or another at its seq
        (HeadMoved, nothing written). `state`: the verified state after `s`, kept as the chain's
        checkpoint."""
        await self.put_foreign_many([(s, entry, index, state)])

    async def put_foreign_many(self, items: list[tuple[Signed, bytes | None, Any, Any]]) -> None:
        """`put_foreign` for each (s, entry, index, state), in one transaction: all are written,
        or (HeadMoved) none."""

        def put(db) -> None:
            for item in items:
                self._put_foreign(db, *item)

        await self.store.write(put)

    def _put_foreign(self, db, s: Signed, entry: bytes | None, index, state) -> None:
        db.execute("INSERT OR IGNORE INTO held VALUES (?)", (s.author,))
        try:
            cur = db.execute(
                "INSERT INTO actions(hash,author,seq,entry_type,entry,body,sig) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    s.hash,
                    s.author,
                    s.seq,
                    s.action.get("entry_type"),
                    s.action.get("entry"),
                    s.body,
                    s.sig,
                ),
            )
        except sqlite3.IntegrityError:  # UNIQUE(author, seq): something is there already
            held = self.action_at(s.author, s.seq)
            if held is not None and held.hash == s.hash:
                return
            raise HeadMoved(
                "another action was stored at this seq first; nothing was written"
            ) from None
        if entry is not None:
            db.execute("INSERT OR IGNORE INTO entries VALUES (?,?)", (s.action["entry"], entry))
        if index:
            db.executemany(
                "INSERT INTO idx VALUES (?,?,?)", [(k, key, cur.lastrowid) for k, key in index]
            )
        Store.note_verified(db, s, state)

    # -- warrants
    async def put_warrant(self, h: bytes, offender: bytes, wire: bytes) -> None:
        await self.store.write(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO warrants VALUES (?,?,?)", (h, offender, wire)
            )
        )

    def warrants(self) -> list[dict]:
        return [decode(r[0]) for r in self.db.execute("SELECT wire FROM warrants ORDER BY rowid")]

    # -- publishing own actions
    def unpublished(self, limit: int) -> list[Signed]:
        # Every own action below the floor is known to be published, so each call reads only
        # the tail instead of scanning the node's whole history.
        rows = self.db.execute(
            "SELECT a.id, a.body, a.sig FROM actions a JOIN heads h ON a.author=h.author "
            "WHERE a.id>=? AND a.hash NOT IN (SELECT hash FROM published) ORDER BY a.id LIMIT ?",
            (self._floor, limit),
        ).fetchall()
        if rows:
            self._floor = rows[0][0]
        else:
            self._floor = (self.db.execute("SELECT max(id) FROM actions").fetchone()[0] or 0) + 1
        return [Signed.from_store(b, s) for _, b, s in rows]

    def own_after(self, after_id: int, limit: int) -> list[tuple[int, Signed]]:
        """Own actions (of the chains this store heads) past a row id, in order."""
        rows = self.db.execute(
            "SELECT a.id, a.body, a.sig FROM actions a JOIN heads h ON a.author=h.author "
            "WHERE a.id>? ORDER BY a.id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [(i, Signed.from_store(b, s)) for i, b, s in rows]

    async def add_receipts(self, rows: list[tuple[bytes, bytes, bytes]]) -> None:
        """(action hash, validator, receipt signature), one transaction for all; an empty
        signature: the validator holds the op but signed nothing (not an author-key authority)."""
        if not rows:
            return
        await self.store.write(
            lambda db: db.executemany("INSERT OR IGNORE INTO receipts VALUES (?,?,?)", rows)
        )

    def receipts(self, h: bytes) -> list[list]:
        return [
            [v, sig]
            for v, sig in self.db.execute("SELECT validator, sig FROM receipts WHERE hash=?", (h,))
        ]

    def receipted_by(self, h: bytes) -> set[bytes]:
        return {r[0] for r in self.db.execute("SELECT validator FROM receipts WHERE hash=?", (h,))}

    def is_published(self, h: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM published WHERE hash=?", (h,)).fetchone() is not None

    async def mark_published(self, h: bytes, receipts: int) -> None:
        await self.store.write(
            lambda db: db.execute("INSERT OR REPLACE INTO published VALUES (?,?)", (h, receipts))
        )

    def entry(self, h: bytes) -> bytes | None:
        row = self.db.execute("SELECT body FROM entries WHERE hash=?", (h,)).fetchone()
        return row[0] if row else None
