"""Restarting a node: a backlog of unpublished actions drains; opening a store costs the same
whatever its history (checkpoints), while corruption is still caught (docs/ARCHITECTURE.md,
"What is checked when")."""

from __future__ import annotations

import trio

from node.core.crypto import from_text
from node.sdk import LocalCluster, LocalNode


async def test_a_restart_with_thousands_unpublished_drains_them(clock, autojump_clock, tmp_path):
    """A node restarted with more unpublished actions than one publish may carry sends them in
    batches its peers accept, until none is left, and its authorities hold the whole chain."""
    paths = [str(tmp_path / f"n{i}") for i in range(4)]
    async with LocalNode.open(path=paths[0], clock=lambda: clock[0]) as offline:
        alice = await offline.new_agent()
        for _ in range(1500):  # a grant recorded and claimed: two actions, free
            await offline.steward.allocate_budget(alice.agent_id, 1)
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
