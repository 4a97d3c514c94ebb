"""A received publish batch is stored in one transaction (Store.batch), not one per op: each op
still succeeds or fails alone, a crash in the middle of a batch leaves none of it half-stored,
and a COMMIT that fails puts the node's memory back where its store is."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import trio

from node.core import warrant
from node.core.crypto import SigningKey
from node.net import protocol as P
from node.net.memory import MemoryNetwork
from node.net.node import NetNode
from node.store import Store
from chainkit import ALICE, BOB, DNA, T0_S, Chain, key, tweak
from zomes import APP

PEER = key(9)  # the sender of the batches: not a node B knows
CAROL = key(5)


def honest(k: SigningKey, n: int) -> Chain:
    """A genesis, a create (an entry comes along) and n - 1 charges."""
    c = Chain(k)
    c.create()
    for _ in range(n - 1):
        c.charge(1)
    return c


def wire_ops(chain: Chain, frm: int = 0, to: int | None = None) -> list[list]:
    return [
        [s.body, s.sig, chain.entries.get(s.action.get("entry"))] for s in chain.actions[frm:to]
    ]


def publish(node: NetNode, ops: list[list]) -> bytes:
    batch = warrant.sign_batch(ops, node.id, (T0_S + 60) * 10**6, PEER)
    return P.request("publish", node.dna.hash, ops=ops, batch=batch)


async def send(node: NetNode, ops: list[list]) -> list[str]:
    rep = P.parse_reply("publish", await node.handlers.handle(PEER.public, publish(node, ops)))
    return [r.status for r in rep.results]


def open_b(path) -> NetNode:
    return NetNode.open(
        MemoryNetwork().transport,
        path=str(path),
        clock=lambda: T0_S + 60,
        dna=DNA,
        app=APP,
        gossip_interval=3600,
        publish_interval=3600,
    )


def head_seq(node: NetNode, k: SigningKey) -> int | None:
    h = node.acceptor.head(k.public)
    return None if h is None else h[0]


async def test_one_invalid_op_in_a_batch_is_refused_and_the_valid_ones_are_stored(
    tmp_path, autojump_clock
):
    alice, carol = honest(ALICE, 4), honest(CAROL, 3)
    bob = honest(BOB, 1)
    # Bob signs a create that records the wrong cost: his own doing, refused and warranted
    bad = bob.signed(tweak(bob.charge_action(1, bob.head.ts + 10**6), cost=1))
    ops = wire_ops(alice) + wire_ops(bob) + [[bad.body, bad.sig, None]] + wire_ops(carol)
    async with open_b(tmp_path / "b") as b:
        statuses = await send(b, ops)
        assert statuses == ["valid"] * 5 + ["valid"] * 2 + ["invalid"] + ["valid"] * 4
        assert (head_seq(b, ALICE), head_seq(b, BOB), head_seq(b, CAROL)) == (4, 1, 3)
        assert not b.dht.has_action(bad.hash)
        assert BOB.public in b.warranted
    # what the batch stored was committed: a restart finds it
    async with open_b(tmp_path / "b") as b:
        assert (head_seq(b, ALICE), head_seq(b, BOB), head_seq(b, CAROL)) == (4, 1, 3)
        assert b.dht.records(ALICE.public, 0, 10)[-1][0] == alice.head.body
        assert BOB.public in b.warranted


async def test_a_crash_in_the_middle_of_a_batch_leaves_none_of_it_and_a_resend_stores_it(
    tmp_path, autojump_clock
):
    alice = honest(ALICE, 6)
    ops = wire_ops(alice)
    crashed = tmp_path / "crashed"
    async with open_b(tmp_path / "b") as b:
        accept = b.handlers.accept
        seen = []

        async def accept_then_crash(s, *args, **kw):
            status = await accept(s, *args, **kw)
            seen.append(status)
            if len(seen) == 4:  # four ops validated and kept: the process dies here
                shutil.copytree(
                    tmp_path / "b", crashed, ignore=shutil.ignore_patterns("*-shm", "*.lock")
                )
            return status

        b.handlers.accept = accept_then_crash
        assert await send(b, ops) == ["valid"] * 7
    # On disk at the crash: none of the batch (its COMMIT had not run), yet a store that opens
    # with a consistent view; the sender, never answered, sends the batch again.
    db = sqlite3.connect(crashed / "chain.db")
    assert db.execute(
        "SELECT count(*) FROM actions WHERE author=?", (ALICE.public,)
    ).fetchone() == (0,)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    async with open_b(crashed) as b:
        assert head_seq(b, ALICE) is None
        assert await send(b, ops) == ["valid"] * 7
        assert head_seq(b, ALICE) == 6


async def test_a_batch_whose_commit_fails_puts_the_held_heads_back(tmp_path, autojump_clock):
    alice = honest(ALICE, 3)
    async with open_b(tmp_path / "b") as b:
        for s in alice.actions[:2]:  # stored before the batch, one transaction each
            assert await b._accept(s, alice.entries.get(s.action.get("entry")), None) == "valid"
        _deferred_foreign_key(b.store)
        with pytest.raises(sqlite3.IntegrityError):
            with b.store.batch():
                for s in alice.actions[2:]:
                    e = alice.entries.get(s.action.get("entry"))
                    assert await b._accept(s, e, None) == "valid"
                assert head_seq(b, ALICE) == 3
                await b.store.write(_orphan)  # the COMMIT will fail on it
        assert head_seq(b, ALICE) == 1  # where the store has it
        assert b.store.head(ALICE.public) is None  # a held chain has no own head row
        assert b.dht.records(ALICE.public, 0, 10)[-1][0] == alice.actions[1].body
        # the node goes on: the same ops are taken again
        for s in alice.actions[2:]:
            assert await b._accept(s, alice.entries.get(s.action.get("entry")), None) == "valid"
        assert head_seq(b, ALICE) == 3


# -- the store's batches themselves


def _deferred_foreign_key(store: Store) -> None:
    """A table whose bad rows are refused only at COMMIT: a COMMIT that fails, on demand."""
    store.db.execute("PRAGMA foreign_keys=ON")
    store.db.executescript(
        "CREATE TABLE p(id INTEGER PRIMARY KEY);"
        "CREATE TABLE c(pid INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);"
    )


def _orphan(db) -> None:
    db.execute("INSERT INTO c VALUES (42)")


def _rows(path: str) -> list[str]:
    other = sqlite3.connect(path)  # another connection sees what is committed, only that
    try:
        return [r[0] for r in other.execute("SELECT k FROM meta WHERE k LIKE 't%' ORDER BY k")]
    finally:
        other.close()


def _put(k: str, fail: bool = False):
    def fn(db):
        db.execute("INSERT INTO meta VALUES (?, x'00')", (k,))
        if fail:
            raise ValueError("this write fails after its first statement")

    return fn


async def test_a_write_that_fails_inside_a_batch_is_undone_alone(tmp_path):
    path = str(tmp_path / "s.db")
    store = Store(path)
    with store.batch():
        await store.write(_put("t1"))
        with pytest.raises(ValueError):
            await store.write(_put("t2", fail=True))
        await store.write(_put("t3"))
        assert _rows(path) == []  # nothing committed before the batch ends
    assert _rows(path) == ["t1", "t3"]
    store.close()


async def test_another_tasks_write_commits_a_waiting_batch_first(tmp_path):
    path = str(tmp_path / "s.db")
    store = Store(path)
    go, done = trio.Event(), trio.Event()

    async def batch_that_waits():
        with store.batch():
            await store.write(_put("t1"))
            go.set()
            await done.wait()  # e.g. a fetch from a peer
            await store.write(_put("t3"))

    async with trio.open_nursery() as n:
        n.start_soon(batch_that_waits)
        await go.wait()
        await store.write(_put("t2"))
        assert _rows(path) == ["t1", "t2"]
        done.set()
    assert _rows(path) == ["t1", "t2", "t3"]
    store.close()


async def test_a_failed_batch_commit_writes_nothing_and_calls_the_undos(tmp_path):
    path = str(tmp_path / "s.db")
    store = Store(path)
    _deferred_foreign_key(store)
    undone = []
    with pytest.raises(sqlite3.IntegrityError):
        with store.batch():
            await store.write(_put("t1"))
            store.if_lost(lambda: undone.append("t1"))
            await store.write(_orphan)
            store.if_lost(lambda: undone.append("orphan"))
    assert undone == ["orphan", "t1"]
    assert _rows(path) == []
    await store.write(_put("t4"))  # the store goes on
    assert _rows(path) == ["t4"]
    store.close()
