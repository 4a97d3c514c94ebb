"""What is checked when (docs/ARCHITECTURE.md, "What is checked when").

At open (`open_states`, for every chain: the node's own and those it holds for the network) a
chain starts from its checkpoint, the verified state the store keeps with the action it follows
(written in that action's transaction, so never ahead of the data). The checkpoint must agree
with that action, which is read and hashed, and the chain must end where its head says; only
the actions past it (none, unless something appended without one) are validated. A chain
without a checkpoint (a store from before them) is validated from genesis once and
checkpointed. So opening costs two queries, then a parse and a hash per chain, whatever the
chains' lengths.

Everything else is verified in full, from genesis, a chunk at a time (`verify_store`): by a
network node in the background at a bounded rate (`Verifier`), and on demand
(`budgetnode verify --path DIR`). Each action's hash is also checked whenever it is read.
Any failure is StoreCorrupted naming the chain (or op): the store is refused, not used.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Iterator

import trio

from .apps import resolve
from .core.app import App
from .core.crypto import blake2b_256, to_text, verify
from .core.dna import Dna
from .core.encoding import decode
from .core.errors import BudgetError, InvalidChain, NotFound, StoreCorrupted
from .core.budget import BudgetState
from .core.validate import ChainState, validate_chain, validate_genesis, validate_tail
from .store import Store, read_action, store_path

CHUNK = 256  # actions verified between two looks at the clock (and the event loop)
VERIFY_RATE = 500  # actions a second a background pass verifies (~20% of a core here: ~400 µs each)
VERIFY_EVERY_S = 86_400.0  # from the end of one background pass to the start of the next
# The first pass starts this long after open: a node serves first, and a short-lived node (a
# test, a simulation run) is not slowed by re-reading what it just opened.
VERIFY_DELAY_S = 60.0


def open_states(store: Store, authors: list[bytes], dna: Dna, app: App) -> dict[bytes, ChainState]:
    """The verified state of each author's chain, as a node opening the store starts from it:
    what every chain needs is read in two queries (`Store.opening`), then each chain costs a
    parse and a hash, unless something lies past its checkpoint."""
    try:
        found, claims = store.opening()
        held = set(store.held_authors())
        ledgers = store.ledgers()
        return {
            a: _open_state(store, a, found.get(a), claims, held, ledgers, dna, app) for a in authors
        }
    except sqlite3.DatabaseError as e:  # a damaged page on the way
        raise StoreCorrupted(f"{store.path}: {e}") from None


def _open_state(store, author, found, claims, held, ledgers, dna, app) -> ChainState:
    if found is None:  # no checkpoint: a chain from before them, verified in full once
        if store.head(author) is None and author not in held:
            raise StoreCorrupted(f"chain of {_who(author)}: actions stored without a chain head")
        try:
            state = validate_chain(store.chain(author), dna, app, store.entries_of(author))
        except InvalidChain as e:
            raise StoreCorrupted(f"chain of {_who(author)} is invalid: {e}") from None
        store.try_write(lambda db: Store.put_checkpoint(db, state, claims=True))
        return state
    cp_row, action, head, last = found
    seq, h, ts, ws, rem, used, window_claims = cp_row
    claimed = frozenset(g for g, at in claims.get(author, ()) if at <= seq)
    cp = ChainState(
        author,
        seq,
        h,
        ts,
        BudgetState(ws, rem, used),
        claimed,
        store.ledger_at(author, seq, ledgers),
        window_claims,
    )
    if head is None and author not in held:
        raise StoreCorrupted(f"chain of {_who(author)}: actions stored without a chain head")
    _check_checkpoint(cp, action, head, dna)
    if last == cp.seq:  # the usual case: the checkpoint is the head
        if head is not None and tuple(head) != (cp.seq, cp.hash):
            raise StoreCorrupted(
                f"chain of {_who(author)}: the stored actions do not end at the recorded head "
                f"(seq {head[0]})"
            )
        return cp
    try:  # actions past the checkpoint (appended without one): validated now
        tail = store.chain(author, cp.seq)
        state = validate_tail(cp, tail, dna, app, store.entries_of(author, cp.seq))
    except InvalidChain as e:
        raise StoreCorrupted(f"chain of {_who(author)} is invalid: {e}") from None
    store.try_write(lambda db: Store.put_checkpoint(db, state))  # next open starts here
    return state


def _check_checkpoint(cp: ChainState, action: tuple | None, head: tuple | None, dna: Dna) -> None:
    """The checkpoint is the state after the action it names, as far as that action says: the
    action is there and hashes to its key, records the same time and budget, and the chain's
    head row is not behind it. (Its signature, 90% of this check's cost, is left to the full
    verification: a flipped bit changes the hash, and whoever can rewrite the action and its
    key can rewrite the checkpoint too.)"""
    if (
        action is None
        or action[0] != cp.hash
        or (head is not None and (head[0] < cp.seq or (head[0] == cp.seq and head[1] != cp.hash)))
    ):
        raise StoreCorrupted(
            f"chain of {_who(cp.author)}: its checkpoint (seq {cp.seq}) is not on the chain"
        )
    try:
        s = read_action(*action)
    except StoreCorrupted as e:
        raise StoreCorrupted(f"chain of {_who(cp.author)}: {e.message}") from None
    a, b = s.action, cp.budget
    if s.seq != cp.seq or a.get("author") != cp.author:
        agrees = False
    elif cp.seq == 0:
        try:
            agrees = validate_genesis(s, dna, verify_sig=False) == cp
        except InvalidChain:
            agrees = False
    else:
        rec = a.get("budget")
        agrees = (
            isinstance(rec, dict)
            and a.get("ts") == cp.ts
            and rec.get("ws") == b.window_start_us
            and rec.get("rem") == b.remaining_mru
            and 0 <= b.used_mru
        )
    if not agrees:
        raise StoreCorrupted(
            f"chain of {_who(cp.author)}: its checkpoint (seq {cp.seq}) disagrees with the "
            f"action there"
        )


def verify_chain(store: Store, author: bytes, dna: Dna, app: App) -> Iterator[int]:
    """Verify `author`'s chain from genesis, a chunk at a time: yields how many actions each
    chunk checked. The state re-derived at the checkpoint's seq must be the checkpoint (read
    first: the chain may grow meanwhile), and the chain must end at its head row, if any."""
    who = _who(author)
    cp = store.checkpoint(author)
    state: ChainState | None = None
    try:
        while True:
            chunk = store.chain(author, -1 if state is None else state.seq, CHUNK)
            if chunk:
                entries = store.entries_of(author, chunk[0].seq - 1, chunk[-1].seq)
                for s in chunk:
                    if state is None:
                        state = validate_genesis(s, dna)
                    else:
                        state = validate_tail(state, [s], dna, app, entries)
                    if cp is not None and s.seq == cp.seq and state != cp:
                        raise InvalidChain("checkpoint_differs", s.seq)
                yield len(chunk)
            if len(chunk) == CHUNK:
                continue
            head = store.head(author)
            if state is not None and head is not None and head[0] > state.seq:
                continue  # appended to while this pass ran
            break
    except InvalidChain as e:
        raise StoreCorrupted(f"chain of {who} is invalid: {e}") from None
    if state is None:
        raise StoreCorrupted(f"chain of {who}: no actions")
    if head is not None and tuple(head) != (state.seq, state.hash):
        raise StoreCorrupted(f"chain of {who}: the actions do not end at its head row")
    if cp is not None and cp.seq > state.seq:
        raise StoreCorrupted(f"chain of {who}: its checkpoint is past its last action")


def verify_ops(store: Store) -> Iterator[int]:
    """The single ops a network node holds for a hash or entry basis: each parses, hashes to
    its key, is signed by its author, and its entry (if kept) hashes to what the action names."""
    after = 0
    while True:
        rows = store.op_rows(after, CHUNK)
        for rowid, h, body, sig, eh, entry in rows:
            try:
                s = read_action(h, body, sig)
            except StoreCorrupted as e:
                raise StoreCorrupted(f"held op: {e.message}") from None
            author = s.action.get("author")
            if not isinstance(author, bytes) or not isinstance(sig, bytes):
                raise StoreCorrupted(f"held op {h.hex()}: malformed")
            if not verify(author, sig, body):
                raise StoreCorrupted(f"held op {h.hex()} of {_who(author)}: bad signature")
            if entry is not None and blake2b_256(entry) != eh:
                raise StoreCorrupted(f"held op {h.hex()}: its entry does not hash to it")
            after = rowid
        if rows:
            yield len(rows)
        if len(rows) < CHUNK:
            return


def verify_store(store: Store, dna: Dna, app: App) -> Iterator[int]:
    """Everything, in full: every chain (own, held, and any whose head row is missing) from
    genesis, then the held ops. Yields actions checked, a chunk at a time."""
    for author in dict.fromkeys(store.authors(every=True) + store.held_authors()):
        yield from verify_chain(store, author, dna, app)
    yield from verify_ops(store)


class Verifier:
    """A network node's background pass over its whole store, at most `rate` actions a second,
    again `every_s` after each pass. Corruption found stops the node (StoreCorrupted escapes
    `run`), as it would have stopped it at open."""

    def __init__(
        self,
        store: Store,
        dna: Dna,
        app: App,
        metrics: Counter,
        rate: float = VERIFY_RATE,
        every_s: float = VERIFY_EVERY_S,
        delay_s: float = VERIFY_DELAY_S,
    ) -> None:
        self.store, self.dna, self.app, self.metrics = store, dna, app, metrics
        self.rate, self.every_s, self.delay_s = rate, every_s, delay_s
        self.passes = 0

    async def run(self) -> None:
        await trio.sleep(self.delay_s)
        while True:
            await self.verify_all()
            await trio.sleep(self.every_s)

    async def verify_all(self) -> None:
        try:
            for n in verify_store(self.store, self.dna, self.app):
                self.metrics["actions_verified"] += n
                await trio.sleep(n / self.rate)
        except StoreCorrupted:
            self.metrics["store_corrupted"] += 1
            raise
        self.passes += 1
        self.metrics["verify_passes"] += 1


def verify_path(path: str, app: App | None = None) -> dict:
    """`budgetnode verify --path DIR`: the whole store verified now under `app`'s rules (None:
    the default app, as the CLI runs), StoreCorrupted naming the first bad chain, or a
    summary. Reads only."""
    if not os.path.exists(store_path(path)):
        raise NotFound(f"no node store at {path!r} (create one with: budgetnode init --path DIR)")
    store = Store(store_path(path))
    try:
        ok = store.db.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise StoreCorrupted(f"{path}: {ok}")
        raw = store.get_meta("dna")
        if raw is None:
            raise StoreCorrupted(f"{path}: the store names no network")
        try:
            dna = Dna.from_dict(decode(raw))
        except (BudgetError, KeyError, TypeError, ValueError) as e:
            raise StoreCorrupted(f"{path}: the stored DNA is unreadable ({e})") from None
        n = sum(verify_store(store, dna, resolve(app)))
        chains = len(dict.fromkeys(store.authors(every=True) + store.held_authors()))
        return {"path": path, "ok": True, "actions": n, "chains": chains}
    finally:
        store.close()


def _who(author: object) -> str:
    return to_text("agent", author) if isinstance(author, bytes) else repr(author)
