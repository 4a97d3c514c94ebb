"""Membership on the in-memory transport and virtual time: who a node routes to, and how that
changes as peers join, vanish and come back."""

import random

import pytest
import trio

from node.core import dht
from node.core.crypto import SigningKey, from_text
from node.core.errors import BudgetError
from node.net.node import NetNode
from node.net.peer_table import DEAD_AFTER_FAILURES
from node.sdk import LocalCluster


async def until(nodes, cond, timeout=120):
    """Wait for `cond`, re-checking whenever any of `nodes` (one node, or several, or a
    cluster) changes."""
    nodes = nodes if isinstance(nodes, (list, tuple)) else [nodes]
    with trio.fail_after(timeout):
        while not cond():
            async with trio.open_nursery() as race:

                async def first(n):
                    await n.wait_changed()
                    race.cancel_scope.cancel()

                for n in nodes:
                    race.start_soon(first, n)


async def test_a_nearer_newcomer_gets_the_head_without_gossip(clock, autojump_clock):
    """When a new node becomes an agent's author authority, the agent's node pushes the head
    to it at once; gossip (here: never within the test) is only the backstop."""
    async with LocalCluster.open(
        n=2, clock=lambda: clock[0], transport="memory", r=1, gossip_interval=1e6
    ) as c:
        a = await c.nodes[0].new_agent()
        await a.add_knowledge("before the newcomer")
        await c.await_consistency(timeout=30)
        pub = from_text("agent", a.agent_id)
        ids = [n.id for n in c.nodes]
        # a node key that will be the agent's nearest authority once it joins (a random key
        # beats both nodes with odds 1/3; within 1000 tries all lose with odds ~2/1000, which a
        # full run met once: search further)
        k = next(
            k
            for k in range(100_000)
            if dht.nearest(pub, ids + [SigningKey.generate(random.Random(k).randbytes).public], 1)
            == [SigningKey.generate(random.Random(k).randbytes).public]
        )
        async with NetNode.open(
            c.network.transport,
            clock=lambda: clock[0],
            r=1,
            gossip_interval=1e6,
            publish_interval=0.5,
            bootstrap=c.nodes[0].transport.listen_addrs(),
            dna=c.nodes[0].dna,
            randbytes=random.Random(k).randbytes,
        ) as new:
            assert dht.nearest(pub, ids + [new.id], 1) == [new.id]
            await until(new, lambda: new._head(pub) == c.nodes[0]._head(pub))
            assert new.metrics["gossip_rounds"] == 0 and new.metrics["ops_validated"] >= 2
            # the newcomer holds the head; node 0 stores its receipt when that round ends (the
            # assertion raced the round's end: it failed about once in twenty full runs)
            with trio.fail_after(60):
                await c.nodes[0].publisher_idle.wait()
            assert new.id in c.nodes[0].dht.receipted_by(c.nodes[0]._head(pub)[1])


async def test_a_dead_peer_is_routed_around_and_readmitted_when_back(clock, autojump_clock):
    async with LocalCluster.open(n=3, clock=lambda: clock[0], transport="memory", r=2) as c:
        n0, n2 = c.nodes[0], c.nodes[2]
        a = await n0.new_agent()
        await c.await_consistency(timeout=30)
        c.network.partition([n.id for n in c.nodes[:2]], [n2.id])
        for i in range(3):
            await a.add_knowledge(f"while node 2 is away {i}")
        await until(n0, lambda: n2.id not in n0.peers)
        assert (
            n0.metrics["peers_dropped"] >= 1 and n0.peer_table.failures[n2.id] < DEAD_AFTER_FAILURES
        )
        # Routed around: the two reachable nodes are the agent's authorities now.
        pub = from_text("agent", a.agent_id)
        assert set(n0.peer_table.nearest(pub)) == {n0.id, c.nodes[1].id}
        await until(n0, lambda: not n0.dht.unpublished(1))
        c.network.heal()
        await until(n0, lambda: n2.id in n0.peers and n0.id in n2.peers)
        await c.await_consistency(timeout=120)
        assert (
            len(
                {
                    n._head(pub)
                    for n in c.nodes
                    if n.id in dht.nearest(pub, [x.id for x in c.nodes], 2)
                }
            )
            == 1
        )


async def test_peer_info_is_resigned_only_when_it_changes(clock, autojump_clock):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory") as c:
        n = c.nodes[0]
        first = n.peer_table.my_info()
        clock[0] += 60
        assert n.peer_table.my_info() is first  # peers verify each info once, not on every exchange
        await n.new_agent()
        newer = n.peer_table.my_info()
        assert (
            newer["body"]["ts"] > first["body"]["ts"]
            and len(newer["body"]["agents"]) == len(first["body"]["agents"]) + 1
        )
        await until(c.nodes[1], lambda: c.nodes[1].peers[n.id].ts >= newer["body"]["ts"])


async def test_gossip_summaries_carry_only_the_peers_share(clock, autojump_clock):
    async with LocalCluster.open(n=5, clock=lambda: clock[0], transport="memory", r=1) as c:
        for node in c.nodes:
            await node.new_agent()
            await node.new_agent()
        await c.await_consistency(timeout=30)
        ids = [n.id for n in c.nodes]
        for node in c.nodes:
            mine = node._heads()
            for peer in node.peers:
                sent = {a for a, _, _ in node.gossiper.heads_for(peer, mine)}
                assert sent == {a for a in mine if dht.nearest(a, ids, 1) == [peer]}


async def test_an_authority_forwards_to_one_the_publisher_does_not_know(clock, autojump_clock):
    """The publisher's peer table is behind (it has not heard of a newcomer that is now one of
    its agent's authorities): a fellow authority that knows the newcomer passes the action on."""
    async with LocalCluster.open(
        n=3, clock=lambda: clock[0], transport="memory", r=2, gossip_interval=1e6
    ) as c:
        n0 = c.nodes[0]
        ids = [n.id for n in c.nodes]
        for _ in range(40):  # an agent of n0 that a newcomer and another node can both be nearer to
            a = await n0.new_agent()
            pub = from_text("agent", a.agent_id)
            if dht.nearest(pub, ids, 1) != [n0.id]:
                break
        await c.await_consistency(timeout=30)

        def key(k):
            return SigningKey.generate(random.Random(k).randbytes).public

        k = next(
            k
            for k in range(1000)
            if key(k) in dht.nearest(pub, ids + [key(k)], 2)
            and n0.id not in dht.nearest(pub, ids + [key(k)], 2)
        )
        async with NetNode.open(
            c.network.transport,
            clock=lambda: clock[0],
            r=2,
            gossip_interval=1e6,
            publish_interval=0.5,
            bootstrap=c.nodes[1].transport.listen_addrs(),
            dna=n0.dna,
            randbytes=random.Random(k).randbytes,
        ) as new:
            other = next(n for n in c.nodes if n.id in dht.nearest(pub, ids + [new.id], 2))
            await until(other, lambda: new.id in other.peers)
            n0.peer_table.forget(new.id)  # the publisher has not heard of it
            await a.transmit_understanding("seen", "by", "the newcomer")
            await until(new, lambda: new._head(pub) == n0._head(pub))
            assert new.id not in n0.peers and other.metrics["ops_forwarded"] >= 1


async def test_a_node_that_loses_its_only_peer_keeps_running_and_rejoins(clock, autojump_clock):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory") as c:
        n0, n1 = c.nodes
        a = await n0.new_agent()
        await c.await_consistency(timeout=30)
        c.network.partition([n0.id], [n1.id])
        await until(n0, lambda: not n0.peers)  # its gossiper goes on without peers
        await a.transmit_understanding("alone", "but", "alive")
        c.network.heal()
        await until(n0, lambda: n1.id in n0.peers and n0.id in n1.peers)
        await c.await_consistency(timeout=120)


async def test_peer_exchanges_carry_only_what_each_side_lacks(clock, autojump_clock):
    async with LocalCluster.open(n=4, clock=lambda: clock[0], transport="memory") as c:
        n0, n1 = c.nodes[0], c.nodes[1]
        await until(n0, lambda: all(len(n.peers) == 3 for n in c.nodes))
        await until(n0, lambda: n0.peer_table.digest() == n1.peer_table.digest())
        digest, have = n0.peer_table.digest()
        rep = await n0._request(
            n1.id, "peers", info=n0.peer_table.my_info(), digest=digest, have=have
        )
        assert [i.peer for i in rep.infos] == [n1.id]
        # A table that differs (here: one peer forgotten) gets exactly the infos it lacks.
        n0.peer_table.forget(c.nodes[3].id)
        digest, have = n0.peer_table.digest()
        rep = await n0._request(
            n1.id, "peers", info=n0.peer_table.my_info(), digest=digest, have=have
        )
        assert [i.peer for i in rep.infos] == [n1.id, c.nodes[3].id]
        assert await n0.peer_table.refresh(n1.id) == 1 and c.nodes[3].id in n0.peers
        # And the other way: the answerer names what it holds, and is sent what it lacks.
        n1.peer_table.forget(c.nodes[3].id)
        assert await n0.peer_table.refresh(n1.id) == 0 and c.nodes[3].id in n1.peers
        with pytest.raises(BudgetError, match="16 bytes per peer"):
            await n0._request(n1.id, "peers", info=n0.peer_table.my_info(), have=b"not 16 bytes")


async def test_a_restarted_node_finds_the_network_without_its_bootstrap_peer(
    clock, autojump_clock, tmp_path
):
    """Peers are cached in the store: a node that restarts while its bootstrap node is away
    starts from the peers it knew, not from nothing."""
    async with LocalCluster.open(
        n=3, clock=lambda: clock[0], transport="memory", gossip_interval=1e6
    ) as c:  # nobody goes looking for it
        path = str(tmp_path / "roamer")
        boot = c.nodes[0].transport.listen_addrs()
        async with NetNode.open(
            c.network.transport,
            path=path,
            clock=lambda: clock[0],
            bootstrap=boot,
            dna=c.nodes[0].dna,
        ) as n:
            await until(n, lambda: len(n.peers) == 3)
            n.peer_table.save_cache()  # what a gossip round does
            me, before = n.id, n.peer_table.my_info()["body"]["ts"]
        c.network.partition([c.nodes[0].id], [c.nodes[1].id, c.nodes[2].id, me])
        clock[0] += 60  # a minute later
        async with NetNode.open(
            c.network.transport,
            path=path,
            clock=lambda: clock[0],
            bootstrap=boot,
            dna=c.nodes[0].dna,
            gossip_interval=1e6,
        ) as n:
            assert n.id == me
            # the others hold its new info (it told them), and it routes to them
            await until(
                [n, c],
                lambda: (
                    all(me in o.peers and o.peers[me].ts > before for o in c.nodes[1:])
                    and {c.nodes[1].id, c.nodes[2].id} <= set(n.peers)
                ),
            )


async def test_a_dropped_peer_that_answers_anything_is_a_peer_again(clock, autojump_clock):
    async with LocalCluster.open(
        n=3, clock=lambda: clock[0], transport="memory", gossip_interval=1e6
    ) as c:
        n0, n2 = c.nodes[0], c.nodes[2]
        await until(n0, lambda: n2.id in n0.peers)
        c.network.partition([n0.id], [n2.id])
        for _ in range(DEAD_AFTER_FAILURES):
            with pytest.raises(BudgetError):
                await n0._request(n2.id, "chain", author=n2.id, **{"from": 0}, limit=1)
        assert n2.id not in n0.peers and n2.id in n0.peer_table.dropped
        c.network.heal()
        await n0._request(n2.id, "chain", author=n2.id, **{"from": 0}, limit=1)
        assert n2.id in n0.peers and n2.id not in n0.peer_table.dropped


async def test_a_node_learns_a_peer_that_talks_to_it(clock, autojump_clock):
    async with LocalCluster.open(
        n=2, clock=lambda: clock[0], transport="memory", gossip_interval=1e6
    ) as c:
        n0, n1 = c.nodes
        await until(n0, lambda: n1.id in n0.peers)
        n0.peer_table.forget(n1.id)  # as after a restart that lost the table
        await n1._request(n0.id, "chain", author=n1.id, **{"from": 0}, limit=1)
        await until(n0, lambda: n1.id in n0.peers)


async def test_a_node_back_from_a_cut_is_taken_back_by_the_nodes_that_dropped_it(
    clock, autojump_clock
):
    """Nodes take a dropped peer back only on a fresher info (an old one replayed must not bring
    a dead node back). A node that a dropped peer answers again re-signs its info, so a node
    beyond a healed cut takes it back from any peer swap, without greeting it itself."""
    async with LocalCluster.open(
        n=3, clock=lambda: clock[0], transport="memory", gossip_interval=1e6
    ) as c:
        n0, n1, n2 = c.nodes
        await until(c.nodes, lambda: all(len(n.peers) == 2 for n in c.nodes))

        async def ask(a, b):
            await a._request(b.id, "chain", author=b.id, **{"from": 0}, limit=1)

        c.network.partition([n0.id], [n1.id, n2.id])
        for _ in range(DEAD_AFTER_FAILURES):
            for a, b in ((n0, n1), (n2, n0)):
                with pytest.raises(BudgetError):
                    await ask(a, b)
        assert n1.id in n0.peer_table.dropped and n0.id in n2.peer_table.dropped
        old = n0.peer_table.my_info()["body"]["ts"]
        c.network.heal()
        c.network.partition([n0.id], [n2.id])  # n2 can hear of n0 only through n1
        await ask(n0, n1)
        assert n1.id in n0.peers and n0.peer_table.my_info()["body"]["ts"] > old
        await n0.peer_table.refresh(n1.id)  # n1 now holds the fresh info
        await n2.peer_table.refresh(n1.id)
        assert n0.id in n2.peers and n0.id not in n2.peer_table.dropped


async def test_a_node_that_dropped_a_peer_tells_it_so_and_the_peer_re_signs(clock, autojump_clock):
    """A node that dropped nobody never learns from its own requests that a cut healed; the
    nodes beyond the cut that dropped it would greet it back a few at a time. A probe from a
    node that had dropped it says so, and it re-signs its info (once a gossip interval), which
    peer swaps carry to all of them. An ordinary greeting leaves its info as it was."""
    async with LocalCluster.open(
        n=2, clock=lambda: clock[0], transport="memory", gossip_interval=1e6
    ) as c:
        n0, n1 = c.nodes
        await until(c.nodes, lambda: all(len(n.peers) == 1 for n in c.nodes))
        ts = n1.peer_table.my_info()["body"]["ts"]
        await n0.peer_table.hello(n1.id)
        assert n1.peer_table.my_info()["body"]["ts"] == ts
        clock[0] += 10
        n0.peer_table.dropped[n1.id] = n0.peers[n1.id]
        n0.peer_table.forget(n1.id)
        await n0.peer_table.probe_dropped(n1.id)
        assert n1.id in n0.peers and n1.id not in n0.peer_table.dropped
        fresh = n1.peer_table.my_info()["body"]["ts"]
        assert fresh > ts and n0.peers[n1.id].ts == fresh  # the reply brought it
        clock[0] += 10
        await n0.peer_table.probe_dropped(n1.id)  # not dropped now: nothing is sent
        n0.peer_table.dropped[n1.id] = n0.peers[n1.id]
        await n0.peer_table.probe_dropped(n1.id)
        assert n1.peer_table.my_info()["body"]["ts"] == fresh  # at most once a gossip interval


async def test_a_steward_is_named_in_its_nodes_info_however_many_agents_it_hosts(
    clock, autojump_clock
):
    # an info names at most 1,024 agents; the steward (the time witness) must be among them
    async with LocalCluster.open(n=1, clock=lambda: clock[0], transport="memory") as c:
        n = c.nodes[0]
        steward = n.dna.stewards[0]
        cell = n.cells.pop(steward)
        for i in range(1100):  # agents hosted before it, in the table's order
            n.cells[i.to_bytes(32, "big")] = cell
        n.cells[steward] = cell
        try:
            agents = n.peer_table.my_info()["body"]["agents"]
            assert len(agents) == 1024 and agents[0] == steward
        finally:
            for i in range(1100):
                del n.cells[i.to_bytes(32, "big")]
