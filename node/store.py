"""The embedded store: source chains, entries and a small lookup index in SQLite (WAL).

Appends are a compare-and-swap on the chain head inside one transaction, so two
writers (tasks or processes) can never fork a chain: the loser gets HeadMoved.

Group commit: appends from concurrent writers of one node (`commit`) share one
transaction; each keeps its own head compare-and-swap inside its own SAVEPOINT, so a
failed append fails alone, and no writer returns before the shared COMMIT has.

Waiting for the write lock never blocks the event loop: the connection's busy timeout is
zero, every write is awaited (`write`), and while another connection (a one-shot
`budgetnode call --path` sharing the store) holds the lock the writer sleeps in trio, with
bounded exponential backoff, and gives up with StoreBusy after LOCK_WAIT_S, having written
nothing. A free lock costs nothing extra: the first `BEGIN IMMEDIATE` takes it, with no
scheduler checkpoint (so a simulation's trace is unchanged).

Batches (`batch`): a task storing many received actions at once (a publish request, a chain
fetch's answer) runs each write in a SAVEPOINT of one transaction, committed when it is done,
before it waits on anything else, or when another task writes.

Each chain's checkpoint (its verified state, node/verifier.py) is written here, in the
transaction of the action it follows.

(Over 500 lines: this is the one module that speaks SQL about chains, their writes, group
commit, reads and checkpoints; split, each part would reach into the others' transactions.)
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeAlias

import trio

from .core import ledger
from .core.action import Signed, grant_hash
from .core.encoding import decode_stored
from .core.ledger import LEDGER0, Ledger
from .core.budget import BudgetState
from .core.crypto import to_text
from .core.errors import BudgetError, HeadMoved, StoreBusy, StoreCorrupted
from .core.validate import ChainState

# One append as `append` takes it: (action, prev_seq, prev_hash, entry, index keys, meta rows,
# the verified chain state after the action: its checkpoint, or None to leave it where it is).
Append: TypeAlias = tuple[
    Signed,
    int | None,
    bytes | None,
    tuple[bytes, bytes] | None,
    Iterable[tuple[str, str]],
    dict[str, bytes] | None,
    ChainState | None,
]


@dataclass(slots=True)
class _Queued:
    """An append waiting for a group commit: its outcome, and the writer to wake with it."""

    item: Append
    error: BaseException | None = None
    waiter: trio.lowlevel.Task | None = None


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS heads(author BLOB PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS actions(
    id INTEGER PRIMARY KEY, hash BLOB UNIQUE NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL,
    entry_type TEXT, entry BLOB, body BLOB NOT NULL, sig BLOB NOT NULL, UNIQUE(author, seq));
CREATE TABLE IF NOT EXISTS held(author BLOB PRIMARY KEY);
CREATE TABLE IF NOT EXISTS entries(hash BLOB PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idx(kind TEXT NOT NULL, key TEXT NOT NULL, action_id INTEGER NOT NULL,
    PRIMARY KEY(kind, key, action_id) ON CONFLICT IGNORE) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS actions_type ON actions(entry_type, id);
CREATE TABLE IF NOT EXISTS checkpoints(author BLOB PRIMARY KEY, seq INTEGER NOT NULL,
    hash BLOB NOT NULL, ts INTEGER NOT NULL, ws INTEGER NOT NULL, rem INTEGER NOT NULL,
    used INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims(author BLOB NOT NULL, grant BLOB NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY(author, grant)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS window_claims(author BLOB PRIMARY KEY, ws INTEGER NOT NULL,
    n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledgers(author BLOB PRIMARY KEY, seq INTEGER NOT NULL,
    body BLOB NOT NULL) WITHOUT ROWID;
"""
# checkpoints: a chain's verified state (ChainState) after the action at `seq`, written in the
# transaction that stores that action (so never ahead of the data); opening a store starts each
# chain from it (node/verifier.py). claims: the grants a chain claimed, each by seq (a row per
# stored claim action; a legacy chain verified in full gets its rows at its checkpoint's seq),
# so a checkpoint's `claimed` set is rebuilt without reading the chain. ledgers: the budget
# ledger (core/ledger.py) of a chain that has one, at its checkpoint's seq.
# window_claims: how many grants the chain claimed in the window starting at `ws`
# (dna.max_grants_per_window), written with a checkpoint whose window holds any; a row for an
# older window reads as none.
# entries and idx are clustered on their keys (one b-tree each, no rowid table beside an
# index). A key indexed twice by one action (e.g. a repeated tag) is stored once. Stores
# created with the earlier schema (rowid tables + idx_kk) open and work unchanged.

# Fewer, larger checkpoints: a page rewritten by many commits is copied back to the
# database once per checkpoint rather than once per 1,000 WAL frames.
WAL_AUTOCHECKPOINT = 10_000
PAGE_SIZE = 2048

# "process": a commit survives the writing process being killed (WAL, synchronous=NORMAL).
# "power": it also survives power loss, at the price of an fsync per commit.
DURABILITY = {"process": "NORMAL", "power": "FULL"}

# A writer that finds the write lock taken sleeps (trio time: virtual under a MockClock) from
# FIRST_BACKOFF_S, doubling up to MAX_BACKOFF_S, and gives up after LOCK_WAIT_S (what the busy
# timeout used to be, but without freezing the node meanwhile).
LOCK_WAIT_S = 5.0
FIRST_BACKOFF_S = 0.001
MAX_BACKOFF_S = 0.05
# Only opening may block in SQLite itself, and only on a new store: CREATE TABLE IF NOT EXISTS
# of tables that exist and the pragmas take no write lock; creating the tables
# (and switching a new file to WAL) does. The node serves nobody yet.
OPEN_WAIT_MS = 5000


def _busy(e: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY and its extended codes (BUSY_SNAPSHOT, BUSY_RECOVERY)."""
    return (getattr(e, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


class _Redo(Exception):
    """append_many's one-transaction try failed other than by HeadMoved: redo it item by item."""


class Store:
    def __init__(self, path: str, durability: str = "process"):
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {sorted(DURABILITY)}")
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute(f"PRAGMA busy_timeout={OPEN_WAIT_MS}")
            if PAGE_SIZE:  # takes effect only while the file is new (before the first table)
                self.db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={DURABILITY[durability]}")
            self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
            # no quick_check here: it reads the whole file (seconds at a million actions);
            # `budgetnode verify` runs it (node/verifier.py: what is checked when)
            self.create_tables(SCHEMA)
        except BaseException as e:
            self.db.close()  # a refused store leaves no open connection behind
            if isinstance(e, sqlite3.OperationalError) and _busy(e):
                raise StoreBusy(
                    f"{path}: another process held the store's write lock for "
                    f"{OPEN_WAIT_MS / 1000:g} s while it was being opened"
                ) from None
            if isinstance(e, sqlite3.DatabaseError):
                raise StoreCorrupted(f"{path}: {e}") from None
            raise
        self.db.execute("PRAGMA busy_timeout=0")  # from now on, writers wait in trio (write)
        self.writers = 0  # chains with a write in progress (kept by Cell); a batching hint
        self._queue: list[_Queued] = []  # appends waiting for the group commit
        self.lock_waits = 0  # writes that found the write lock taken and waited for it
        self._data_version = self._read_data_version()
        # Batches (`batch`): the tasks inside one, the one whose transaction is open now, and
        # what to undo in memory if that transaction is rolled back instead of committed.
        self._batching: set[trio.lowlevel.Task] = set()
        self._batch_task: trio.lowlevel.Task | None = None
        self._on_lost: list[Callable[[], None]] = []

    def _read_data_version(self) -> int:
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def changed_elsewhere(self) -> bool:
        """Whether another connection (another process sharing this store) has committed
        since the last call; this connection's own commits do not count."""
        v = self._read_data_version()
        changed, self._data_version = v != self._data_version, v
        return changed

    def create_tables(self, script: str) -> None:
        """Run a CREATE ... IF NOT EXISTS script at open; only a new store needs the write
        lock for it, and waits for it (at most OPEN_WAIT_MS) inside SQLite."""
        self.db.execute(f"PRAGMA busy_timeout={OPEN_WAIT_MS}")
        try:
            self.db.executescript(script)
        finally:
            self.db.execute("PRAGMA busy_timeout=0")

    def close(self) -> None:
        self.db.close()

    # -- meta
    def get_meta(self, k: str) -> bytes | None:
        row = self.db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    async def init_meta(self, k: str, v: bytes) -> None:
        await self.write(lambda db: db.execute("INSERT INTO meta VALUES (?,?)", (k, v)))

    # -- writes
    async def write(self, fn):
        """Run `fn(db)` (plain code: it must not await) in one write transaction and return
        its result: committed if it returns, rolled back (nothing written) if anything
        escapes it. Waits for the write lock without blocking the event loop.

        Inside a `batch` of the calling task, `fn` runs in a SAVEPOINT of the batch's one
        transaction instead: undone alone if anything escapes it, committed with the batch."""
        task = self._batch_task
        if task is not None or self._batching:
            me = trio.lowlevel.current_task()
            if task is me:
                return self._savepoint(fn)
            if task is not None:  # the batch's task is waiting on something: commit its part
                self.end_batch()
            if me in self._batching:
                if not self._try_begin():
                    await self._wait_for_lock()
                self._batch_task = me
                return self._savepoint(fn)
        if not self._try_begin():
            await self._wait_for_lock()
        return self._run(fn)

    def try_write(self, fn) -> bool:
        """`write` for what can as well be written later (a cache): False, nothing written,
        if another connection holds the write lock now."""
        if self._batch_task is not None:
            self.end_batch()
        if not self._try_begin():
            return False
        self._run(fn)
        return True

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The calling task's writes (`write`) until the block ends share one transaction,
        committed when it ends (however it ends: each write in it was complete), or earlier
        (`end_batch`) when another task writes, or when the task says it is about to wait on
        something else. A crash before the COMMIT loses the batch's writes, each whole: none
        is half-written, and none was acknowledged (the block's caller answers after it)."""
        me = trio.lowlevel.current_task()
        if me in self._batching:  # nested: the outer block commits
            yield
            return
        self._batching.add(me)
        try:
            yield
        finally:
            self._batching.discard(me)
            if self._batch_task is me:
                self.end_batch()

    def end_batch(self) -> None:
        """Commit the open batch transaction, if any. Should the COMMIT fail, the batch is
        rolled back, every `if_lost` callback undoes what was kept in memory, and the error
        is raised."""
        if self._batch_task is None:
            return
        self._batch_task = None
        lost, self._on_lost = self._on_lost, []
        try:
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            for undo in reversed(lost):
                undo()
            raise

    def if_lost(self, undo: Callable[[], None]) -> None:
        """Inside an open batch transaction: call `undo` should it be rolled back (what the
        caller changed in memory after a write the batch has not committed yet)."""
        if self._batch_task is not None:
            self._on_lost.append(undo)

    def _savepoint(self, fn):
        db = self.db
        db.execute("SAVEPOINT w")
        try:
            out = fn(db)
        except BaseException:
            db.execute("ROLLBACK TO w")
            db.execute("RELEASE w")
            raise
        db.execute("RELEASE w")
        return out

    def _run(self, fn):
        db = self.db
        try:
            out = fn(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return out

    def _try_begin(self) -> bool:
        """BEGIN IMMEDIATE: True with the write lock held, False if another connection has it."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as e:
            if not _busy(e):
                raise
            return False

    async def _wait_for_lock(self) -> None:
        """The write lock, taken by another connection at the first try: tried again after a
        trio sleep, doubling from FIRST_BACKOFF_S to MAX_BACKOFF_S; after LOCK_WAIT_S,
        StoreBusy. A cancellation while waiting leaves nothing written."""
        self.lock_waits += 1
        deadline = trio.current_time() + LOCK_WAIT_S
        delay = FIRST_BACKOFF_S
        while True:
            await trio.sleep(max(0.0, min(delay, deadline - trio.current_time())))
            if self._try_begin():
                return
            if trio.current_time() >= deadline:
                raise StoreBusy(
                    f"another process has held the store's write lock for "
                    f"{LOCK_WAIT_S:g} s; nothing was written"
                )
            delay = min(2 * delay, MAX_BACKOFF_S)

    async def append(
        self,
        s: Signed,
        prev_seq: int | None,
        prev_hash: bytes | None,
        entry: tuple[bytes, bytes] | None = None,
        index: Iterable[tuple[str, str]] = (),
        meta: dict[str, bytes] | None = None,
        state: ChainState | None = None,
    ) -> None:
        """Append `s` if the author's head is still (prev_seq, prev_hash); genesis passes None.
        `state`: the verified chain state after `s`, kept as the chain's checkpoint."""
        await self.write(lambda db: self._write(s, prev_seq, prev_hash, entry, index, meta, state))

    async def append_all(self, items: list[Append]) -> None:
        """Append every item of `items` in one transaction, or (raising) none of them."""

        def write_all(db) -> None:
            for item in items:
                self._write(*item)

        await self.write(write_all)

    async def append_many(self, items: list[Append]) -> list[BaseException | None]:
        """Append each (s, prev_seq, prev_hash, entry, index, meta, state) of `items` in one
        transaction. An append whose head moved fails alone, having written nothing (its
        compare-and-swap is the first statement, and a miss writes no row); its HeadMoved is
        returned in its place (None for success). Should an append fail any other way, the
        transaction is rolled back and redone with each append in its own SAVEPOINT, so that
        only the failing ones are undone. Raises, writing nothing, if the transaction fails."""
        try:
            return await self.write(lambda db: self._write_all(items))
        except _Redo:
            return await self.write(lambda db: self._write_each(db, items))

    def _write_all(self, items: list[Append]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for item in items:
            try:
                self._write(*item)
            except HeadMoved as e:
                out.append(e)
            except Exception:
                raise _Redo() from None
            else:
                out.append(None)
        return out

    def _write_each(
        self, db: sqlite3.Connection, items: list[Append]
    ) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for item in items:
            db.execute("SAVEPOINT a")
            try:
                self._write(*item)
            except Exception as e:
                db.execute("ROLLBACK TO a")
                out.append(e)
            else:
                out.append(None)
            db.execute("RELEASE a")
        return out

    async def commit(
        self,
        s: Signed,
        prev_seq: int | None,
        prev_hash: bytes | None,
        entry: tuple[bytes, bytes] | None = None,
        index: Iterable[tuple[str, str]] = (),
        state: ChainState | None = None,
    ) -> None:
        """`append`, sharing its transaction with the appends of other chains' writers that
        are ready at the same moment (group commit). Returns (or raises, e.g. HeadMoved) only
        once the shared COMMIT has returned, so nothing is acknowledged before it is durable.
        A lone writer appends at once, without waiting for company."""
        item: Append = (s, prev_seq, prev_hash, entry, index, None, state)
        queue = self._queue
        if not queue and self.writers <= 1:
            await self.append(s, prev_seq, prev_hash, entry, index, state=state)
            return
        slot = _Queued(item)
        queue.append(slot)
        if len(queue) > 1:  # a leader is gathering this batch: wait for its COMMIT
            slot.waiter = trio.lowlevel.current_task()
            # not cancellable: once queued, an append runs to its end (commit or failure)
            await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        else:
            await self._lead(queue)
        if slot.error is not None:
            raise slot.error

    async def _lead(self, queue: list[_Queued]) -> None:
        """Gather the appends of the other active writers (each is at most a scheduler pass
        or two away), then commit them all and release their writers."""
        seen, idle = 1, 0
        while len(queue) < self.writers and idle < 2:
            await trio.lowlevel.cancel_shielded_checkpoint()
            idle = idle + 1 if len(queue) == seen else 0
            seen = len(queue)
        self._queue = []
        try:
            # shielded: the batch's other writers wait, uncancellable, for its end, so the
            # leader must reach it (a lock wait ends by LOCK_WAIT_S)
            with trio.CancelScope(shield=True):
                errors = await self.append_many([slot.item for slot in queue])
        except BaseException as e:  # the transaction failed: every append in it failed
            errors = [e] * len(queue)
        for slot, err in zip(queue, errors):
            slot.error = err
            if slot.waiter is not None:
                trio.lowlevel.reschedule(slot.waiter)

    def _write(self, s: Signed, prev_seq, prev_hash, entry, index, meta, state) -> None:
        """The statements of one append, inside the caller's transaction."""
        a = s.action
        author = a["author"]
        db = self.db
        if prev_seq is None:
            if db.execute("SELECT 1 FROM heads WHERE author=?", (author,)).fetchone():
                raise HeadMoved("this agent already has a genesis")
            db.execute("INSERT INTO heads VALUES (?,?,?)", (author, s.seq, s.hash))
        else:
            cur = db.execute(
                "UPDATE heads SET seq=?, hash=? WHERE author=? AND seq=? AND hash=?",
                (s.seq, s.hash, author, prev_seq, prev_hash),
            )
            if cur.rowcount != 1:
                raise HeadMoved("another writer appended to this chain first; nothing was written")
        cur = db.execute(
            "INSERT INTO actions(hash,author,seq,entry_type,entry,body,sig) VALUES (?,?,?,?,?,?,?)",
            (s.hash, author, s.seq, a.get("entry_type"), a.get("entry"), s.body, s.sig),
        )
        if entry is not None:
            db.execute("INSERT OR IGNORE INTO entries VALUES (?,?)", entry)
        if index:
            aid = cur.lastrowid
            db.executemany("INSERT INTO idx VALUES (?,?,?)", [(k, key, aid) for k, key in index])
        if meta:
            for k, v in meta.items():
                db.execute("INSERT INTO meta VALUES (?,?)", (k, v))
        self.note_verified(db, s, state)

    # -- checkpoints (node/verifier.py says what is checked when)
    @staticmethod
    def note_verified(db: sqlite3.Connection, s: Signed, state: ChainState | None) -> None:
        """Inside the transaction that stores `s`: its grant, if it claims one, and `state`
        (the verified state after `s`, if given) as its chain's checkpoint."""
        a = s.action
        if a.get("type") == "claim" and isinstance(a.get("grant"), dict):
            db.execute(
                "INSERT OR IGNORE INTO claims VALUES (?,?,?)",
                (s.author, grant_hash(a["grant"]), s.seq),
            )
        if state is not None:
            if (state.seq, state.hash) != (s.seq, s.hash):
                raise ValueError("a checkpoint names the action it is stored with")
            Store.put_checkpoint(db, state)

    @staticmethod
    def put_checkpoint(db: sqlite3.Connection, cs: ChainState, claims: bool = False) -> None:
        """`claims`: also record every grant `cs` claimed (a chain verified from genesis; an
        append records its own claim)."""
        b = cs.budget
        db.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?,?,?)",
            (cs.author, cs.seq, cs.hash, cs.ts, b.window_start_us, b.remaining_mru, b.used_mru),
        )
        if cs.window_claims:
            db.execute(
                "INSERT OR REPLACE INTO window_claims VALUES (?,?,?)",
                (cs.author, b.window_start_us, cs.window_claims),
            )
        led = cs.ledger
        if led is not None and led != LEDGER0:
            db.execute(
                "INSERT OR REPLACE INTO ledgers VALUES (?,?,?)",
                (cs.author, cs.seq, led.encoded),
            )
        if claims:
            db.executemany(
                "INSERT OR IGNORE INTO claims VALUES (?,?,?)",
                [(cs.author, g, cs.seq) for g in cs.claimed],
            )

    def opening(self) -> tuple[dict[bytes, tuple], dict[bytes, list[tuple[bytes, int]]]]:
        """What opening the store reads of every checkpointed chain, in two queries: author ->
        (checkpoint (seq, hash, ts, ws, rem, used, grants claimed in its window), the action at
        its seq (hash, body, sig) or None, the head row (seq, hash) or None, the last seq
        stored), and author -> the grants it claimed, (grant, seq)."""
        found = {
            r[0]: (
                (*r[1:7], r[14] if r[13] == r[4] else 0),
                r[7:10] if r[7] is not None else None,
                r[10:12] if r[10] is not None else None,
                r[12],
            )
            for r in self.db.execute(
                "SELECT c.author, c.seq, c.hash, c.ts, c.ws, c.rem, c.used, a.hash, a.body, a.sig, "
                "h.seq, h.hash, (SELECT max(m.seq) FROM actions m WHERE m.author=c.author), "
                "w.ws, w.n "
                "FROM checkpoints c LEFT JOIN actions a ON a.author=c.author AND a.seq=c.seq "
                "LEFT JOIN heads h ON h.author=c.author "
                "LEFT JOIN window_claims w ON w.author=c.author"
            )
        }
        claims: dict[bytes, list[tuple[bytes, int]]] = {}
        for author, g, seq in self.db.execute("SELECT author, grant, seq FROM claims"):
            claims.setdefault(author, []).append((g, seq))
        return found, claims

    def checkpoint(self, author: bytes) -> ChainState | None:
        """The chain's last checkpoint, with the grants claimed up to it; None if it has none."""
        row = self.db.execute(
            "SELECT seq, hash, ts, ws, rem, used FROM checkpoints WHERE author=?", (author,)
        ).fetchone()
        if row is None:
            return None
        seq, h, ts, ws, rem, used = row
        claimed = frozenset(
            r[0]
            for r in self.db.execute(
                "SELECT grant FROM claims WHERE author=? AND seq<=?", (author, seq)
            )
        )
        w = self.db.execute(
            "SELECT n FROM window_claims WHERE author=? AND ws=?", (author, ws)
        ).fetchone()
        return ChainState(
            author,
            seq,
            h,
            ts,
            BudgetState(ws, rem, used),
            claimed,
            self.ledger_at(author, seq),
            w[0] if w else 0,
        )

    def ledgers(self) -> dict[bytes, tuple[int, bytes]]:
        """Every kept ledger: author -> (seq, body), for `ledger_at` (one query at open)."""
        return {
            r[0]: (r[1], r[2]) for r in self.db.execute("SELECT author, seq, body FROM ledgers")
        }

    def ledger_at(self, author: bytes, seq: int, rows: dict | None = None) -> Ledger:
        """The ledger kept with `author`'s checkpoint at `seq` (none kept: an empty one);
        `rows`: `ledgers()`, read once for many chains."""
        if rows is not None:
            row = rows.get(author)
        else:
            row = self.db.execute(
                "SELECT seq, body FROM ledgers WHERE author=?", (author,)
            ).fetchone()
        if row is None:
            return LEDGER0
        if row[0] != seq:
            raise StoreCorrupted(
                f"chain {author.hex()[:16]}: its ledger (seq {row[0]}) is not at its checkpoint"
            )
        return ledger.load(decode_stored(row[1]))

    def op_rows(self, after_rowid: int, limit: int) -> list[tuple]:
        """(rowid, hash, body, sig, entry hash, entry) of the single ops a network node holds
        (node/net/dht_store.py), past a rowid; none in a store no network node has run on."""
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name='ops'").fetchone():
            return []
        return self.db.execute(
            "SELECT o.rowid, o.hash, o.body, o.sig, o.entry, e.body FROM ops o "
            "LEFT JOIN entries e ON e.hash=o.entry WHERE o.rowid>? ORDER BY o.rowid LIMIT ?",
            (after_rowid, limit),
        ).fetchall()

    # -- reads
    def authors(self, every: bool = False) -> list[bytes]:
        """Every local author (with a head), then any author with a checkpoint (or, `every`,
        with actions: a scan of the whole table) but neither a head nor a `held` row, which
        chain() reports as corrupted: a deleted head row must not make a chain silently vanish.
        Other authors' chains held for the network are in `held`."""
        out = [r[0] for r in self.db.execute("SELECT author FROM heads ORDER BY rowid")]
        known = set(out)
        table = "actions" if every else "checkpoints"
        out += [
            r[0]
            for r in self.db.execute(
                f"SELECT DISTINCT author FROM {table} WHERE author NOT IN (SELECT author FROM held)"
            )
            if r[0] not in known
        ]
        return out

    def is_held(self, author: bytes) -> bool:
        return (
            self.db.execute("SELECT 1 FROM held WHERE author=?", (author,)).fetchone() is not None
        )

    def held_authors(self) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT author FROM held ORDER BY rowid")]

    def has_author(self, author: bytes) -> bool:
        return (
            self.db.execute("SELECT 1 FROM actions WHERE author=? LIMIT 1", (author,)).fetchone()
            is not None
        )

    def head(self, author: bytes):
        return self.db.execute("SELECT seq, hash FROM heads WHERE author=?", (author,)).fetchone()

    def chain(self, author: bytes, after_seq: int = -1, limit: int = -1) -> list[Signed]:
        """The author's actions after `after_seq` (at most `limit`, if not -1). A stored action
        that does not parse or does not hash to its key, or a chain that does not reach the
        recorded head (checked when the answer reaches the end), is reported as StoreCorrupted
        naming the agent, never returned."""
        who = to_text("agent", author) if isinstance(author, bytes) else repr(author)
        own_txn = not self.db.in_transaction
        if own_txn:
            self.db.execute("BEGIN")  # one snapshot: the head row and the actions agree
        try:
            head = self.head(author)
            rows = self.db.execute(
                "SELECT seq, hash, body, sig FROM actions WHERE author=? AND seq>? ORDER BY seq "
                "LIMIT ?",
                (author, after_seq, limit),
            ).fetchall()
        finally:
            if own_txn:
                self.db.execute("COMMIT")
        if len(rows) == limit:
            pass  # not the end: where the chain ends is checked by the read that reaches it
        elif head is None:
            if rows and not self.is_held(author):
                raise StoreCorrupted(f"chain of {who}: actions stored without a chain head")
        elif (rows[-1][:2] != tuple(head)) if rows else head[0] > after_seq:
            raise StoreCorrupted(
                f"chain of {who}: the stored actions do not end at the "
                f"recorded head (seq {head[0]})"
            )
        try:
            return [read_action(h, body, sig) for _, h, body, sig in rows]
        except StoreCorrupted as e:
            raise StoreCorrupted(f"chain of {who}: {e.message}") from None

    def entries_of(self, author: bytes, after_seq: int = -1, upto_seq: int = 1 << 62) -> dict:
        """The entries the author's actions in (after_seq, upto_seq] created."""
        return dict(
            self.db.execute(
                "SELECT e.hash, e.body FROM actions a JOIN entries e ON e.hash=a.entry "
                "WHERE a.author=? AND a.seq>? AND a.seq<=?",
                (author, after_seq, upto_seq),
            )
        )

    def record(self, action_hash: bytes) -> tuple[Signed, bytes | None] | None:
        row = self.db.execute(
            "SELECT a.body, a.sig, e.body FROM actions a LEFT JOIN entries e ON e.hash=a.entry "
            "WHERE a.hash=?",
            (action_hash,),
        ).fetchone()
        return None if row is None else (read_action(action_hash, row[0], row[1]), row[2])

    def find(self, kind: str, key: str, limit: int) -> list[bytes]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT a.hash FROM idx i JOIN actions a ON a.id=i.action_id "
                "WHERE i.kind=? AND i.key=? ORDER BY i.action_id DESC LIMIT ?",
                (kind, key, limit),
            )
        ]

    def of_type(self, entry_type: str, limit: int, author: bytes | None = None) -> list[bytes]:
        q: tuple[str, tuple[str | bytes | int, ...]]
        if author is None:
            q = (
                "SELECT hash FROM actions WHERE entry_type=? ORDER BY id DESC LIMIT ?",
                (entry_type, limit),
            )
        else:
            q = (
                "SELECT hash FROM actions WHERE entry_type=? AND author=? ORDER BY id DESC LIMIT ?",
                (entry_type, author, limit),
            )
        return [r[0] for r in self.db.execute(*q)]


def read_action(key: bytes, body: bytes, sig: bytes) -> Signed:
    """A stored action, read: one that does not parse, or does not hash to the key it was
    stored under, is StoreCorrupted, never returned."""
    try:
        s = Signed.from_store(body, sig)
    except BudgetError as e:
        raise StoreCorrupted(f"stored action {_hex(key)} is unreadable: {e}") from None
    if s.hash != key:
        raise StoreCorrupted(f"the action stored under {_hex(key)} does not hash to it")
    return s


def _refuse_abort(_raise_cancel):
    return trio.lowlevel.Abort.FAILED


def _hex(h) -> str:
    return h.hex() if isinstance(h, bytes) else repr(h)


def store_path(directory: str) -> str:
    return os.path.join(directory, "chain.db")
