"""Several nodes on the in-memory transport, on virtual time (trio's autojump clock)."""

from contextlib import asynccontextmanager

import pytest

from node.core.errors import ConsistencyTimeout, PeerUnreachable
import trio

from node.core.action import Signed
from node.core.crypto import from_text
from node.core import warrant as W
from node.core.encoding import encode
from node.core.errors import StoreBusy
from node.net import protocol as P
from node.sdk import LocalCluster, UnknownAgent, Warranted

from conftest import START


def cluster(clock, **kw):
    return LocalCluster.open(clock=lambda: clock[0], transport="memory", **kw)


async def test_budget_state_is_visible_and_rederived_on_every_node(clock, autojump_clock):
    async with cluster(clock, n=4) as c:
        a = await c.nodes[0].new_agent()
        b = await c.nodes[3].new_agent()
        await a.add_knowledge("x")
        await a.transmit_understanding("s", "p", "o")
        await (
            b.recall_understandings()
        )  # nothing on node 3 yet may be found; charges what it returns
        await c.await_consistency(timeout=30)
        for node in c.nodes:
            st = await node.get_budget_state(a.agent_id)
            assert (st.remaining_ru, st.used_ru, st.resets_at) == (64.0, 36.0, START + 86_400)
        m = c.nodes[1].metrics_snapshot()
        assert m["ops_validated"] > 0 and m["unpublished"] == 0 and m["limbo"] == 0
        assert c.nodes[0].metrics["receipts"] >= 3


async def test_grants_and_compose_cross_nodes(clock, autojump_clock):
    async with cluster(clock, n=3) as c:
        alice = await c.nodes[2].new_agent()
        bob = await c.nodes[1].new_agent()
        await bob.transmit_understanding("river", "carries", "silt")
        await c.await_consistency(timeout=30)
        g = await c.nodes[0].steward.allocate_budget(alice.agent_id, 150)
        assert g.claimed and g.granted_ru == 100.0
        assert (await alice.budget_status()).remaining_ru == 200.0
        await c.await_consistency(timeout=30)
        assert (await c.nodes[1].get_budget_state(alice.agent_id)).remaining_ru == 200.0
        h = await alice.compose_memories(other_agent_id=bob.agent_id)
        rec = c.nodes[2].get_record(h)
        assert rec["content"]["agent"] == bob.agent_id and len(rec["content"]["refs"]) == 1
        await c.await_consistency(timeout=30)
        assert (await c.nodes[0].fetch_record(h))["content"] == rec["content"]
        with pytest.raises(UnknownAgent):
            await alice.compose_memories(other_agent_id="ag" + "A" * 43)


@pytest.mark.parametrize(
    "mode,reason",
    [
        ("skip_preflight", "over_spend"),
        ("forge_budget", "wrong_remaining"),
        ("wrong_cost", "wrong_cost"),
    ],
)
async def test_rogue_node_is_caught_by_validators(clock, autojump_clock, mode, reason):
    async with cluster(clock, n=4, rogue=(3,), rogue_modes=(mode,)) as c:
        honest = await c.nodes[0].new_agent()
        rogue = await c.nodes[3].new_agent()
        await honest.add_knowledge("fine")
        for i in range(4):  # the 4th add_knowledge over-spends; the cheaters cheat from the 1st
            try:
                await rogue.add_knowledge(f"rogue {i}")
            except Warranted:
                break
        await c.await_consistency(timeout=60)
        for node in c.nodes[:3]:
            ws = [w for w in node.warrants() if w.agent_id == rogue.agent_id]
            assert ws and all(w.reason == reason for w in ws)
            assert all(w.agent_id != honest.agent_id for w in node.warrants())
            st = await node.get_budget_state(rogue.agent_id)
            assert st.remaining_mru >= 0
        # The rogue's node is told why, and its agent's writes are refused.
        with pytest.raises(Warranted) as e:
            await rogue.transmit_understanding("s", "p", "o")
        assert reason in str(e.value)
        await honest.transmit_understanding("still", "works", "fine")
        await c.await_consistency(timeout=60)


async def test_forged_signature_warrants_the_sending_peer(clock, autojump_clock):
    async with cluster(clock, n=3, rogue=(2,), rogue_modes=("bad_signature",)) as c:
        rogue = await c.nodes[2].new_agent()
        await rogue.add_knowledge("forged")
        with trio.fail_after(60):
            while not all(c.nodes[2].id in n.warranted for n in c.nodes[:2]):
                await c.wait_changed()
        w = c.nodes[1].warranted[c.nodes[2].id]
        assert w.kind == "peer" and w.reason == "bad_signature"
        # nothing with the forged signature was stored anywhere honest, and the peer is cut off
        pub = from_text("agent", rogue.agent_id)
        for node in c.nodes[:2]:
            assert node._head(pub) is None or node._head(pub)[0] == 0
            assert c.nodes[2].id not in node.peers


async def test_fork_is_warranted_everywhere(clock, autojump_clock):
    async with cluster(clock, n=4) as c:
        a = await c.nodes[0].new_agent()
        await a.add_knowledge("first")
        await c.await_consistency(timeout=30)
        # A second action at the same seq, signed by the same key: a double spend.
        cell = c.nodes[0].cells[from_text("agent", a.agent_id)]
        orig = c.nodes[0].dht.action_at(cell.key.public, cell.state.seq)
        twin = dict(orig.action, ts=orig.action["ts"] + 1)
        s = Signed.sign(twin, cell.key)
        ops = [[s.body, s.sig, c.nodes[0].dht.entry(twin["entry"])]]
        # Send the twin to a node that already holds the original (one of the agent's authorities;
        # node keys are random, so which one varies): it must see the fork at once.
        target = next(n for n in c.nodes[1:] if n._head(cell.key.public) == (orig.seq, orig.hash))
        batch = W.sign_batch(ops, target.id, c.nodes[0].now_us(), c.nodes[0].node_key)
        rep = await c.nodes[0]._request(target.id, "publish", ops=ops, batch=batch)
        assert rep.results[0].status == "invalid"
        with trio.fail_after(60):
            while not all(cell.key.public in n.warranted for n in c.nodes):
                await c.wait_changed()
        assert all(n.warranted[cell.key.public].kind == "fork" for n in c.nodes)


@asynccontextmanager
async def _alice_on_two_nodes(clock):
    """Two nodes, and an agent on node 0 whose one entry both hold."""
    async with cluster(clock, n=2) as c:
        alice = await c.nodes[0].new_agent()
        await alice.add_knowledge("x")
        await c.await_consistency(timeout=30)
        yield c, alice


async def test_a_publish_batch_signature_is_checked_when_it_is_evidence(clock, autojump_clock):
    async with _alice_on_two_nodes(clock) as (c, alice):
        a, target = c.nodes[0], c.nodes[1]
        pub = from_text("agent", alice.agent_id)
        # Only valid actions: the batch signature could never be evidence, so it is not checked
        # (the transport says who sent them, and each action is signed by its author).
        c.network.partition([a.id], [target.id])
        await alice.add_knowledge("written while cut off")
        s = a.dht.action_at(pub, a.cells[pub].state.seq)
        assert not target.dht.has_action(s.hash)
        ops = [[s.body, s.sig, a.dht.entry(s.action["entry"])]]
        unchecked = dict(W.sign_batch(ops, target.id, a.now_us(), a.node_key), sig=b"\x02" * 64)
        out = P.parse_reply(
            "publish",
            await target.handlers.handle(
                a.id, P.request("publish", a.dna.hash, ops=ops, batch=unchecked)
            ),
        )
        assert out.results[0].status == "valid" and target.dht.has_action(s.hash)
        c.network.heal()
        await c.await_consistency(timeout=30)
        cell = a.cells[pub]
        s = a.dht.action_at(pub, cell.state.seq)
        good = [s.body, s.sig, a.dht.entry(s.action["entry"])]
        later = Signed.sign(
            dict(s.action, seq=s.seq + 1, prev=s.hash, ts=s.action["ts"] + 1), cell.key
        )
        forged = [later.body, bytes([later.sig[0] ^ 1]) + later.sig[1:], good[2]]
        before = target.state_hash()
        # A forged action under a batch signature that does not verify: nothing proves who sent
        # it, so the whole publish is refused, the valid action beside it included.
        ops = [good, forged]
        bad = dict(W.sign_batch(ops, target.id, a.now_us(), a.node_key), sig=b"\x01" * 64)
        out = await target.handlers.handle(
            a.id, P.request("publish", a.dna.hash, ops=ops, batch=bad)
        )
        assert b"not signed by the sending peer" in out
        assert target.state_hash() == before and target.warrants() == []
        # Under a good signature the same publish is the sender's doing: warranted for it.
        ok = W.sign_batch(ops, target.id, a.now_us(), a.node_key)
        rep = await a._request(target.id, "publish", ops=ops, batch=ok)
        assert [r.status for r in rep.results] == ["valid", "invalid"]
        w = target.warranted[a.id]
        assert w.kind == "peer" and w.reason == "bad_signature" and W.peer_proven(w)


async def test_partition_then_heal_converges(clock, autojump_clock):
    async with cluster(clock, n=4, r=4) as c:  # every node holds everything: hashes must match
        agents = [await n.new_agent() for n in c.nodes]
        await c.await_consistency(timeout=30)
        left, right = [n.id for n in c.nodes[:2]], [n.id for n in c.nodes[2:]]
        c.network.partition(left, right)
        for ag in agents:
            await ag.transmit_understanding("during", "the", "partition")
        with pytest.raises(ConsistencyTimeout):
            await c.await_consistency(timeout=5)
        sent_before = c.network.messages
        c.network.heal()
        await c.await_consistency(timeout=60)
        assert len(set(c.state_hashes())) == 1
        for node in c.nodes:
            for ag in agents:
                assert (await node.get_budget_state(ag.agent_id)).remaining_ru == 97.0
        assert c.network.messages - sent_before < 400  # repair, not a flood


async def test_malformed_oversized_and_replayed_messages(clock, autojump_clock):
    async with _alice_on_two_nodes(clock) as (c, alice):
        a, target = c.nodes[0], c.nodes[1]
        before = target.state_hash()
        for raw in (
            b"",
            b"\xff\xfe",
            encode({"t": "nope", "dna": a.dna.hash}),
            encode({"t": "publish", "dna": b"x" * 32, "ops": []}),
            encode({"t": "publish", "dna": a.dna.hash, "ops": "zzz"}),
            encode({"t": "chain", "dna": a.dna.hash}),
            b"\xa1" + b"\x61t" + b"\x7a" + b"\xff" * 4,
        ):
            out = await target.handlers.handle(a.id, raw)
            assert b"err" in out
        # oversize: refused by the transport before the handler runs
        with pytest.raises(PeerUnreachable):
            await a.transport.request(target.id, b"\x00" * (P.MAX_FRAME + 1))
        # a replayed publish batch changes nothing
        pub = from_text("agent", alice.agent_id)
        s = a.dht.action_at(pub, 1)
        ops = [[s.body, s.sig, a.dht.entry(s.action["entry"])]]
        batch = W.sign_batch(ops, target.id, a.now_us(), a.node_key)
        for _ in range(3):
            rep = await a._request(target.id, "publish", ops=ops, batch=batch)
            assert rep.results[0].status == "valid"
        # a batch signed for another node is refused
        other = W.sign_batch(ops, a.id, a.now_us(), a.node_key)
        out = await target.handlers.handle(
            a.id, P.request("publish", a.dna.hash, ops=ops, batch=other)
        )
        assert b"err" in out
        assert target.state_hash() == before and target.warrants() == []
        await alice.transmit_understanding("still", "served", "fine")
        await c.await_consistency(timeout=30)


async def test_restarted_node_rejoins_and_catches_up(clock, autojump_clock, tmp_path):
    paths = [str(tmp_path / f"n{i}") for i in range(3)]
    async with cluster(clock, n=3, paths=paths) as c:
        a = await c.nodes[0].new_agent()
        await a.add_knowledge("before")
        await c.await_consistency(timeout=30)
        dna = c.nodes[0].dna
        # node 2 stops; the others go on
    async with cluster(clock, n=2, paths=paths[:2]) as c2:
        a0 = await c2.nodes[0].agent(a.agent_id)
        await a0.transmit_understanding("while", "node2", "was down")
        await c2.await_consistency(timeout=30)
        from node.net.node import NetNode

        async with NetNode.open(
            c2.network.transport,
            path=paths[2],
            clock=lambda: clock[0],
            bootstrap=c2.nodes[0].transport.listen_addrs(),
            gossip_interval=0.5,
            publish_interval=0.5,
        ) as n2:
            assert n2.dna.hash == dna.hash
            with trio.fail_after(60):
                while n2._head(from_text("agent", a.agent_id)) != c2.nodes[0]._head(
                    from_text("agent", a.agent_id)
                ):
                    await n2.wait_changed()
            st = await n2.get_budget_state(a.agent_id)
            assert st.remaining_ru == 64.0
            # A second node on the same store is refused, and the store is left as it was;
            # once the first has stopped, the store opens again.
            head = n2._head(from_text("agent", a.agent_id))
            with pytest.raises(StoreBusy, match="already running"):
                async with NetNode.open(
                    c2.network.transport, path=paths[2], clock=lambda: clock[0]
                ):
                    pass
            assert n2._head(from_text("agent", a.agent_id)) == head
        async with NetNode.open(c2.network.transport, path=paths[2], clock=lambda: clock[0]) as n2:
            assert n2._head(from_text("agent", a.agent_id)) == head


async def test_a_write_by_another_process_sharing_the_store_is_published(
    clock, autojump_clock, tmp_path
):
    """`budgetnode call --path` may write to the store of a running node: the node notices the
    other connection's commit (its gossiper asks SQLite) and publishes the action."""
    from node.sdk import LocalNode

    paths = [str(tmp_path / f"n{i}") for i in range(2)]
    async with cluster(clock, n=2, paths=paths) as c:
        a = await c.nodes[0].new_agent()
        await c.await_consistency(timeout=30)
        with trio.fail_after(60):  # the scenario: a node gone quiet, with no retry pending
            await c.nodes[0].publisher_idle.wait()
        pub = from_text("agent", a.agent_id)
        async with LocalNode.open(path=paths[0], clock=lambda: clock[0]) as other:
            a2 = await other.agent(a.agent_id)
            await a2.add_knowledge("written by another process")
            want = (a2._cell.state.seq, a2._cell.state.hash)
        n0, n1 = c.nodes
        assert n1._head(pub) != want and n0.dht.unpublished(1)
        with trio.fail_after(60):
            while n0.dht.unpublished(1):  # marked published once its authorities receipted it
                await n0.wait_changed()
        assert n1._head(pub) == want
