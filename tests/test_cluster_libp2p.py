"""Real libp2p hosts (Noise, Yamux) on 127.0.0.1 in one process. Real time: every wait is on a
condition, bounded by a timeout."""

import gc
import os

import pytest
from node.sdk import InsufficientRU, LocalCluster, Warranted

START = 1_730_678_400


def fds() -> int:
    # earlier tests' garbage (a socket, a store) may still hold a descriptor until collected:
    # collect first, or its release mid-test reads as the count going down
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


async def test_three_real_nodes_rederive_grant_and_warrant():
    t = [float(START)]
    async with LocalCluster.open(n=3, clock=lambda: t[0], rogue=(2,)) as c:
        alice = await c.nodes[0].new_agent()
        bob = await c.nodes[1].new_agent()
        mallory = await c.nodes[2].new_agent()
        await alice.add_knowledge("x")
        await alice.add_knowledge("y")
        u1 = await alice.transmit_understanding("a", "b", "c")
        u2 = await alice.transmit_understanding("d", "e", "f")
        await alice.link_edge(from_hash=u1, to_hash=u2, relation="follows")
        await c.await_consistency(timeout=20)
        for node in c.nodes:
            st = await node.get_budget_state(alice.agent_id)
            assert st.remaining_ru == 100 - 33 - 33 - 3 - 3 - 3
        with pytest.raises(InsufficientRU):
            await alice.add_knowledge("over")
        g = await c.nodes[0].steward.allocate_budget(bob.agent_id, 150)
        assert g.claimed and g.granted_ru == 100.0
        await c.await_consistency(timeout=20)
        assert (await c.nodes[2].get_budget_state(bob.agent_id)).remaining_ru == 200.0
        with pytest.raises(Warranted):
            for i in range(5):  # the rogue node lets the 4th through; validators catch it
                await mallory.add_knowledge(f"m{i}")
                await c.await_consistency(timeout=20)
        for node in c.nodes[:2]:
            assert {w.agent_id for w in node.warrants()} == {mallory.agent_id}
            assert all(w.reason == "over_spend" for w in node.warrants())
        assert c.nodes[1].metrics["receipts"] > 0 or c.nodes[0].metrics["receipts"] > 0


async def test_no_descriptors_leak_across_cluster_cycles():
    async with LocalCluster.open(n=2):  # warm-up: lazily opened library files
        pass
    before = fds()
    for _ in range(20):
        async with LocalCluster.open(n=3) as c:
            a = await c.nodes[1].new_agent()
            await a.transmit_understanding("s", "p", "o")
            await c.await_consistency(timeout=20)
    assert fds() == before
