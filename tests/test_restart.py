"""Restarting a node: a backlog of unpublished actions drains; opening a store costs the same
whatever its history (checkpoints), while corruption is still caught (docs/ARCHITECTURE.md,
"What is checked when")."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
import trio

from node import verifier
from node.core.crypto import from_text, to_text
from node.core.validate import validate_chain
from node.sdk import LocalCluster, LocalNode, StoreCorrupted
from node.verifier import verify_path


EDGE_END = to_text("action", bytes(32))


async def test_a_restart_with_thousands_unpublished_drains_them(clock, autojump_clock, tmp_path):
    """A node restarted with more unpublished actions than one publish may carry sends them in
    batches its peers accept, until none is left, and its authorities hold the whole chain."""
    paths = [str(tmp_path / f"n{i}") for i in range(4)]
    many = {"max_grants_per_window": 1000}
    async with LocalNode.open(path=paths[0], clock=lambda: clock[0], dna=many) as offline:
        alice = await offline.new_agent()
        for _ in range(500):  # a grant recorded and claimed, and spent: three actions
            await offline.steward.allocate_budget(alice.agent_id, 3)
            await alice.link_edge(EDGE_END, EDGE_END, "r")
        steward = offline.steward.agent_id
    pubs = [from_text("agent", a) for a in (alice.agent_id, steward)]
    async with LocalCluster.open(clock=lambda: clock[0], transport="memory", n=4, paths=paths) as c:
        n0 = c.nodes[0]
        with trio.fail_after(600):
            while n0.dht.unpublished(1):
                await n0.wait_changed()
        await c.await_consistency(timeout=120)
        for pub in pubs:
            holders = [n for n in c.nodes if n.id in n.peer_table.nearest(pub) and n is not n0]
            assert holders
            for n in holders:
                assert n._head(pub) == n0._head(pub)
        for n in c.nodes:
            assert n.metrics["malformed_requests"] == 0, n.metrics
            assert n.metrics["malformed_replies"] == 0, n.metrics
        assert n0.metrics["ops_published"] > 3000


# -- opening from checkpoints

DAY = 86_400


def sql(path, q, params=()):
    db = sqlite3.connect(os.path.join(path, "chain.db"))
    try:
        rows = db.execute(q, params).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


async def history(path, clock, writes=12):
    """A store with a steward and alice: alice writes across several windows (each opened by
    the steward's witness) and claims a grant. Returns alice's id and her action hashes."""
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        hashes = []
        for i in range(writes):
            if i % 4 == 3:
                clock[0] += DAY  # the next write opens a new window
            hashes.append(await alice.transmit_understanding(f"s{i}", "p", f"o{i}"))
        await node.steward.allocate_budget(alice.agent_id, 5)
        hashes.append(await alice.add_knowledge("after the grant"))
    return alice.agent_id, hashes


@pytest.fixture
def validated(monkeypatch):
    """How many stored actions opening a store validates (node/verifier.py's validators)."""
    seen = []

    def count(name):
        real = getattr(verifier, name)

        def wrapper(*args, **kw):
            out = real(*args, **kw)
            actions = args[0] if name == "validate_chain" else args[1]
            seen.append(len(actions))
            return out

        monkeypatch.setattr(verifier, name, wrapper)

    count("validate_chain")
    count("validate_tail")
    return seen


def full_state(node, pub):
    return validate_chain(node.store.chain(pub), node.dna, node.app, node.store.entries_of(pub))


async def test_reopening_validates_no_stored_action_and_starts_where_full_validation_ends(
    clock, tmp_path, validated
):
    """Each chain opens at its checkpoint: nothing already verified is validated again, and the
    state it gives (budget, window, used, claimed grants) is the one re-derived from genesis."""
    path = str(tmp_path)
    agent_id, _ = await history(path, clock)
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        assert sum(validated) == 0
        assert len(node.cells) == 2
        for pub, cell in node.cells.items():
            assert cell.state == full_state(node, pub)
        alice = node.cells[from_text("agent", agent_id)]
        assert len(alice.state.claimed) == 1 and alice.state.budget.used_mru > 0


async def test_a_store_without_checkpoints_is_verified_in_full_once(clock, tmp_path, validated):
    """A store from before checkpoints (or one whose checkpoints were lost) opens as before, by
    validating each chain from genesis, and is checkpointed for the next open."""
    path = str(tmp_path)
    agent_id, hashes = await history(path, clock)
    sql(path, "DELETE FROM checkpoints")
    sql(path, "DELETE FROM claims")
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        assert sum(validated) == sql(path, "SELECT count(*) FROM actions")[0][0]
        states = {pub: c.state for pub, c in node.cells.items()}
    validated.clear()
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        assert sum(validated) == 0
        assert {pub: c.state for pub, c in node.cells.items()} == states
        assert len(states[from_text("agent", agent_id)].claimed) == 1


async def test_actions_past_a_checkpoint_are_validated_at_open(clock, tmp_path, validated):
    """A checkpoint behind its chain's head (written by something that appended without one)
    is a valid start: the actions past it are validated, and a bad one among them refuses the
    store."""
    path = str(tmp_path)
    agent_id, hashes = await history(path, clock, writes=4)
    pub = from_text("agent", agent_id)
    old = sql(path, "SELECT * FROM checkpoints WHERE author=?", (pub,))
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        alice = await node.agent(agent_id)
        for i in range(3):
            hashes.append(await alice.transmit_understanding(f"t{i}", "p", "o"))
    sql(path, "INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?,?,?)", old[0])
    validated.clear()
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        assert sum(validated) == 3
        assert node.cells[pub].state == full_state(node, pub)
    sql(path, "INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?,?,?)", old[0])
    sql(
        path, "UPDATE actions SET sig=zeroblob(64) WHERE hash=?", (from_text("action", hashes[-2]),)
    )
    with pytest.raises(StoreCorrupted, match=f"{agent_id}.*bad_signature"):
        async with LocalNode.open(path=path, clock=lambda: clock[0]):
            pass


@pytest.mark.parametrize(
    "tamper",
    ["rem", "ts", "ws", "hash_of_an_older_action", "seq_ahead", "seq_behind", "deleted_action"],
)
async def test_a_checkpoint_that_disagrees_with_its_chain_is_refused_at_open(
    clock, tmp_path, tamper
):
    path = str(tmp_path)
    agent_id, hashes = await history(path, clock)
    pub = from_text("agent", agent_id)
    [(seq,)] = sql(path, "SELECT seq FROM checkpoints WHERE author=?", (pub,))
    q = {
        "rem": ("UPDATE checkpoints SET rem=rem+1000 WHERE author=?", (pub,)),
        "ts": ("UPDATE checkpoints SET ts=ts-1 WHERE author=?", (pub,)),
        "ws": ("UPDATE checkpoints SET ws=ws-1 WHERE author=?", (pub,)),
        "hash_of_an_older_action": (
            "UPDATE checkpoints SET hash=? WHERE author=?",
            (from_text("action", hashes[3]), pub),
        ),
        "seq_ahead": ("UPDATE checkpoints SET seq=seq+1 WHERE author=?", (pub,)),
        "seq_behind": ("UPDATE checkpoints SET seq=seq-1 WHERE author=?", (pub,)),
        "deleted_action": ("DELETE FROM actions WHERE author=? AND seq=?", (pub, seq)),
    }[tamper]
    sql(path, *q)
    with pytest.raises(StoreCorrupted) as e:
        async with LocalNode.open(path=path, clock=lambda: clock[0]):
            pass
    assert agent_id in str(e.value), str(e.value)


async def test_a_checkpoint_with_a_wrong_used_amount_is_caught_by_full_verification(
    clock, tmp_path
):
    """What the head action does not record (RU used in the window) is checked by the full
    verification, which re-derives the state at the checkpoint's seq."""
    path = str(tmp_path)
    agent_id, _ = await history(path, clock)
    sql(path, "UPDATE checkpoints SET used=used+1 WHERE author=?", (from_text("agent", agent_id),))
    with pytest.raises(StoreCorrupted, match=f"{agent_id}.*checkpoint_differs"):
        verify_path(path)


async def test_a_flipped_byte_in_a_checkpointed_action_stops_a_running_node(
    clock, autojump_clock, tmp_path
):
    """Opening does not read the middle of a chain; the background pass does, at a bounded
    rate, and corruption it finds stops the node as it would have refused to open. Before the
    damage the same pass completes."""
    paths = [str(tmp_path / f"n{i}") for i in range(2)]
    async with LocalCluster.open(clock=lambda: clock[0], transport="memory", n=2, paths=paths) as c:
        alice = await c.nodes[0].new_agent()
        hashes = [await alice.transmit_understanding(f"s{i}", "p", "o") for i in range(8)]
        await c.await_consistency(timeout=60)
        v, m = c.nodes[1].verifier, c.nodes[1].metrics
        before, start = m["actions_verified"], trio.current_time()
        await v.verify_all()  # the background pass, run now
        checked = m["actions_verified"] - before
        assert checked >= 9  # alice's chain is held there (and her ops, maybe)
        assert trio.current_time() - start >= checked / v.rate - 1e-9  # its rate bound
    h = from_text("action", hashes[3])
    # damaged in the copy node 1 holds as an authority of alice (node 0's own is intact)
    [(body,)] = sql(paths[1], "SELECT body FROM actions WHERE hash=?", (h,))
    bad = bytearray(body)
    bad[len(bad) // 2] ^= 0x01
    sql(paths[1], "UPDATE actions SET body=? WHERE hash=?", (bytes(bad), h))
    with pytest.raises(StoreCorrupted, match=alice.agent_id):
        async with LocalCluster.open(
            clock=lambda: clock[0], transport="memory", n=2, paths=paths
        ) as c:
            with trio.fail_after(3600):
                await trio.sleep_forever()


def test_verify_command_exits_nonzero_naming_the_first_bad_chain(clock, tmp_path):
    path = str(tmp_path)
    agent_id, hashes = trio.run(history, path, clock)
    ok = subprocess.run(
        [sys.executable, "-m", "node.cli", "verify", "--path", path, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    sql(path, "UPDATE actions SET sig=zeroblob(64) WHERE hash=?", (from_text("action", hashes[2]),))
    bad = subprocess.run(
        [sys.executable, "-m", "node.cli", "verify", "--path", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "E_STORE_CORRUPTED" in bad.stderr and agent_id in bad.stderr, bad.stderr
