"""Another connection holding the store's write lock (a one-shot `budgetnode call --path`
sharing a running node's store) never freezes the node: its handlers, gossip and timers run
while its writes wait, in trio, for the lock; a write completes once the lock is free, exactly
once, or, past the bound, is refused with StoreBusy having changed nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from node.core.crypto import from_text
from node.core.errors import StoreBusy
from node.local_node import refusals
from node.sdk import LocalCluster
from node.store import LOCK_WAIT_S, MAX_BACKOFF_S, store_path

ROOT = Path(__file__).parent.parent
HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


def cluster(clock, paths, **kw):
    return LocalCluster.open(
        n=len(paths), clock=lambda: clock[0], transport="memory", paths=paths, **kw
    )


@contextmanager
def write_lock(path: str):
    """A second connection on the node's store holding the write lock (BEGIN IMMEDIATE)."""
    db = sqlite3.connect(store_path(path), isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()


def rows(node, author: bytes) -> list:
    return node.store.db.execute(
        "SELECT seq, hash FROM actions WHERE author=? ORDER BY seq", (author,)
    ).fetchall()


async def until(cond, c, timeout=60):
    with trio.fail_after(timeout):
        while not cond():
            await c.wait_changed()


async def gossip_rounds(node, peer, n: int) -> None:
    """Until `peer` has been sent `n` gossip summaries by `node` (its timers ran, and it still
    talks to its peers)."""
    got = [0]
    seen = trio.Event()
    serve = peer._handlers["summary"]

    async def counting(sender, msg):
        if sender == node.id:
            got[0] += 1
            if got[0] >= n:
                seen.set()
        return await serve(sender, msg)

    peer._handlers["summary"] = counting
    try:
        with trio.fail_after(60):
            await seen.wait()
    finally:
        peer._handlers["summary"] = serve


async def test_a_node_serves_while_another_connection_holds_the_write_lock(
    clock, autojump_clock, tmp_path
):
    paths = [str(tmp_path / f"n{i}") for i in range(2)]
    async with cluster(clock, paths) as c:
        n0, n1 = c.nodes
        a, a2 = await n0.new_agent(), await n0.new_agent()
        b = await n1.new_agent()
        await c.await_consistency(timeout=30)
        pa, pa2, pb = (from_text("agent", x.agent_id) for x in (a, a2, b))
        before = {p: rows(n0, p) for p in (pa, pa2, pb)}
        written: dict = {}

        async def write(agent, key):
            written[key] = await agent.add_knowledge(f"written by {key}")
            c._changed()

        with write_lock(paths[0]) as lock:
            async with trio.open_nursery() as nursery:
                # two of the node's agents at once (the first alone, the second leading a
                # group commit), and a peer's write, which node 1 publishes to node 0
                nursery.start_soon(write, a, "a")
                nursery.start_soon(write, a2, "a2")
                nursery.start_soon(write, b, "b")
                await trio.testing.wait_all_tasks_blocked()
                assert n0.store.lock_waits == 2
                # the node answers requests and runs its tasks while its writes wait
                rep = await n1._request(n0.id, "hello", info=n1.peer_table.my_info())
                assert rep.info.peer == n0.id
                rep = await n1._request(n0.id, "record", hash=before[pa][-1][1])
                assert rep.record is not None
                await gossip_rounds(n0, n1, 2)
                assert "a" not in written and "a2" not in written
                assert n0.store.lock_waits == 3  # the publish reached node 0 and waits too
                assert rows(n0, pb) == before[pb]
                lock.execute("ROLLBACK")  # the other connection lets go (it wrote nothing)
        assert set(written) == {"a", "a2", "b"}
        await c.await_consistency(timeout=30)
        for p, key in ((pa, "a"), (pa2, "a2"), (pb, "b")):
            got = rows(n0, p)
            assert got[:-1] == before[p] and len(got) == len(before[p]) + 1  # once, nothing lost
            assert got[-1][1] == from_text("action", written[key])
        assert n0.cells[pa].state.seq == len(before[pa])
        assert n0.metrics["store_busy"] == 0


async def test_a_lock_held_past_the_bound_refuses_writes_and_changes_nothing(
    clock, autojump_clock, tmp_path
):
    paths = [str(tmp_path / f"n{i}") for i in range(2)]
    async with cluster(clock, paths) as c:
        n0, n1 = c.nodes
        a = await n0.new_agent()
        b = await n1.new_agent()
        await c.await_consistency(timeout=30)
        pa, pb = from_text("agent", a.agent_id), from_text("agent", b.agent_id)
        # b's next action reaches node 1 only; node 0 will be handed it while locked
        c.network.partition([n0.id], [n1.id])
        hb = await b.add_knowledge("published into a locked store")
        s, entry = n1.store.record(from_text("action", hb))
        state, head, count = n0.cells[pa].state, n0.store.head(pa), rows(n0, pa)
        remaining = (await a.budget_status()).remaining_ru

        with write_lock(paths[0]):
            sent = n0.metrics["messages_sent"]
            t0 = trio.current_time()
            with pytest.raises(StoreBusy) as e:
                await a.add_knowledge("never written")
            waited = trio.current_time() - t0
            assert e.value.code == "E_STORE_BUSY" and "nothing was written" in str(e.value)
            assert LOCK_WAIT_S <= waited <= LOCK_WAIT_S + MAX_BACKOFF_S + 0.01
            assert n0.metrics["messages_sent"] > sent  # its timers ran meanwhile
            assert refusals(n0)["E_STORE_BUSY"] == 1
            # the same for a write the network brings
            with pytest.raises(StoreBusy):
                await n0._accept(s, entry, None)
            # a write cancelled while it waits writes nothing either
            with trio.move_on_after(1):
                await a.add_knowledge("cancelled")
            assert n0.cells[pa].state == state and n0.store.head(pa) == head
            assert rows(n0, pa) == count and pb in n0.chains
            assert n0._head(pb)[0] == s.seq - 1 and not n0.dht.in_chain(s.hash)

        assert (await a.budget_status()).remaining_ru == remaining  # nothing was charged
        assert await n0._accept(s, entry, None) == "valid"
        h = await a.add_knowledge("after the lock went")
        assert rows(n0, pa) == count + [(state.seq + 1, from_text("action", h))]
        assert n0._head(pb) == (s.seq, s.hash)
        c.network.heal()
        await c.await_consistency(timeout=30)


async def test_a_second_process_writing_to_the_store_does_not_stop_the_node(tmp_path):
    """Real processes on the real clock: one holds the write lock until told to let go, and a
    `budgetnode call --path` writes to the running node's agent meanwhile. The node answers its
    peer and gossips while both wait; every write lands exactly once and is published."""
    paths = [str(tmp_path / f"n{i}") for i in range(2)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    async with LocalCluster.open(n=2, transport="memory", paths=paths) as c:
        n0, n1 = c.nodes
        a = await n0.new_agent()
        pa = from_text("agent", a.agent_id)
        await c.await_consistency(timeout=30)
        before = rows(n0, pa)
        holder = await trio.lowlevel.open_process(
            [sys.executable, "-c", HOLD_LOCK, store_path(paths[0])],
            cwd=str(ROOT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        call = None
        try:
            with trio.fail_after(30):
                assert (await holder.stdout.receive_some(64)).startswith(b"locked")
            call = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "node.cli",
                    "call",
                    "--path",
                    paths[0],
                    "--agent",
                    a.agent_id,
                    "--json",
                    "rose_forest",
                    "add_knowledge",
                    json.dumps({"content": "from another process"}),
                ],
                cwd=str(ROOT),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            mine = {}

            async def write():
                mine["h"] = await a.add_knowledge("from the node")
                c._changed()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                await trio.testing.wait_all_tasks_blocked()
                assert n0.store.lock_waits == 1
                rep = await n1._request(n0.id, "hello", info=n1.peer_table.my_info())
                assert rep.info.peer == n0.id
                await gossip_rounds(n0, n1, 1)
                assert "h" not in mine
                await holder.stdin.send_all(b"go\n")
            with trio.fail_after(30):
                assert await holder.wait() == 0
                out = b""
                while chunk := await call.stdout.receive_some(1 << 16):
                    out += chunk
                assert await call.wait() == 0, (await call.stderr.receive_some(1 << 16)).decode()
        finally:
            for p in (holder, call):
                if p is not None and p.returncode is None:
                    p.kill()
        theirs = from_text("action", json.loads(out))
        got = rows(n0, pa)
        assert got[: len(before)] == before and len(got) == len(before) + 2
        assert {h for _, h in got[len(before) :]} == {theirs, from_text("action", mine["h"])}
        # the node publishes the other process's write as its own
        await until(lambda: n1._head(pa) == got[-1], c)


async def test_the_peer_cache_is_not_waited_for_and_is_saved_later(clock, autojump_clock, tmp_path):
    """A cache flush (each gossip round) does not wait for the lock: it keeps what it could
    not save, and the next flush saves it."""
    paths = [str(tmp_path / f"n{i}") for i in range(2)]
    async with cluster(clock, paths) as c:
        n0, n1 = c.nodes
        n0.store.db.execute("DELETE FROM peer_infos")
        n0.peer_table.unsaved[n1.id] = n0.peers[n1.id]
        with write_lock(paths[0]):
            n0.peer_table.save_cache()
            assert n1.id in n0.peer_table.unsaved and n0.store.lock_waits == 0
        assert n0.dht.load_peers(10) == []
        n0.peer_table.save_cache()
        assert not n0.peer_table.unsaved and len(n0.dht.load_peers(10)) == 1


async def test_status_of_a_store_needs_no_write_lock(tmp_path):
    """`budgetnode status --path` reads a store whose write lock another process holds."""
    from node.sdk import LocalNode

    path = str(tmp_path / "n")
    async with LocalNode.open(path=path) as node:
        a = await node.new_agent()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with write_lock(path):
        with trio.fail_after(60):
            p = await trio.run_process(
                [sys.executable, "-m", "node.cli", "status", "--path", path, "--json"],
                cwd=str(ROOT),
                capture_stdout=True,
                capture_stderr=True,
                env=env,
                check=False,
            )
    assert p.returncode == 0, p.stderr.decode()
    assert a.agent_id in {x["agent_id"] for x in json.loads(p.stdout)["agents"]}
