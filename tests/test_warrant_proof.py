"""What a node needs before it believes a warrant, and what it will not take as proof: a warrant
reaches every node whoever holds the history, and nobody can frame an honest author with
history or entry bytes of their own making."""

import trio

from node.core import warrant as W
from node.core.action import Signed
from node.core.crypto import SigningKey, from_text
from node.core.encoding import encode
from node.net import protocol as P
from node.net.messages import Record
from node.sdk import LocalCluster, Warranted


def cluster(clock, **kw):
    return LocalCluster.open(clock=lambda: clock[0], transport="memory", **kw)


def without_history(c, pub, seq, exclude=()):
    return [
        n
        for n in c.nodes
        if n not in exclude and pub not in n.cells and len(n.dht.records(pub, 0, seq)) < seq
    ]


async def test_an_invalid_warrant_is_proven_with_history_its_sender_lacks(clock, autojump_clock):
    async with cluster(clock, n=6, r=1, rogue=(5,), rogue_modes=("skip_preflight",)) as c:
        rogue = await c.nodes[5].new_agent()
        for i in range(5):
            try:
                await rogue.add_knowledge(f"over budget {i}")
            except Warranted:
                break
        await c.await_consistency(timeout=60)
        pub = from_text("agent", rogue.agent_id)
        w0 = min(
            (w for n in c.nodes[:5] for w in n.warrants() if w.offender == pub),
            key=lambda w: w.body["seq"],
        )  # the first offence: the history before it is valid
        s = w0.evidence()[0]
        assert w0.reason == "over_spend" and s.seq > 0
        # The same offence with the action alone as evidence: only the chain before it proves it.
        w = W.make(
            "invalid",
            pub,
            w0.reason,
            s.seq,
            [s],
            c.nodes[0].node_key,
            c.nodes[0].now_us(),
            entry=w0.body["entry"],
        )
        lacking = without_history(c, pub, s.seq, exclude=(c.nodes[0],))
        assert len(lacking) >= 2, "r=1 on 6 nodes leaves most nodes without the history"
        receiver, sender = lacking[:2]
        fetched = receiver.metrics["sent_chain"]
        assert await receiver.warrant_book.invalid_proven(w, sender.id)
        assert receiver.metrics["sent_chain"] > fetched


async def test_history_with_a_record_left_out_frames_nobody(clock, autojump_clock):
    async with cluster(clock, n=6, r=1) as c:
        a = await c.nodes[0].new_agent()
        for i in range(3):
            await a.transmit_understanding("fact", "number", str(i))
        await c.await_consistency(timeout=60)
        pub = from_text("agent", a.agent_id)
        chain = c.nodes[0].store.chain(pub)
        s = chain[-1]
        honest = [
            Record(
                x,
                c.nodes[0].dht.entry(x.action["entry"])
                if x.action.get("type") == "create"
                else None,
            )
            for x in chain[: s.seq]
        ]
        framer = SigningKey(b"\x07" * 32)
        w = W.make(
            "invalid",
            pub,
            "over_spend",
            s.seq,
            [s],
            framer,
            c.nodes[0].now_us(),
            entry=c.nodes[0].dht.entry(s.action["entry"]),
        )
        receiver = without_history(c, pub, s.seq)[0]

        async def gapped(author, seq, source):  # the action before last left out
            return honest[: seq - 2] + honest[seq - 1 :] + honest[seq - 1 :]

        receiver.warrant_book.fetch_prefix = gapped
        assert not await receiver.warrant_book.invalid_proven(w, c.nodes[0].id)
        assert pub not in receiver.warranted


async def test_wrong_entry_bytes_blame_the_messenger_not_the_author(clock, autojump_clock):
    async with cluster(clock, n=6, r=1) as c:
        a = await c.nodes[0].new_agent()
        await a.add_knowledge("water is wet")
        await c.await_consistency(timeout=60)
        pub = from_text("agent", a.agent_id)
        s = c.nodes[0].store.chain(pub)[-1]
        prev = c.nodes[0].store.chain(pub)[-2]
        wrong = encode({"type": "knowledge", "content": {"content": "water is dry", "tags": []}})
        # A warrant made from wrong bytes is not believed...
        w = W.make(
            "invalid",
            pub,
            "entry_hash_mismatch",
            s.seq,
            [s, prev],
            SigningKey(b"\x07" * 32),
            c.nodes[0].now_us(),
            entry=wrong,
        )
        for node in c.nodes:
            assert not await node.warrant_book.receive(
                P.WarrantMsg.parse(w.to_wire()), c.nodes[1].id
            )
        # ...and a node that is handed the action with wrong bytes refuses it without a warrant.
        target = next(n for n in c.nodes if not n.dht.has_action(s.hash))
        ops = [[s.body, s.sig, wrong, [prev.body, prev.sig]]]
        batch = W.sign_batch(ops, target.id, c.nodes[1].now_us(), c.nodes[1].node_key)
        rep = await c.nodes[1]._request(target.id, "publish", ops=ops, batch=batch)
        assert rep.results[0].status == "invalid"
        assert not target.dht.has_action(s.hash)
        await trio.testing.wait_all_tasks_blocked()
        assert all(pub not in n.warranted for n in c.nodes)


async def test_gossip_pushes_a_warrant_the_partner_lacks(clock, autojump_clock):
    async with cluster(clock, n=3) as c:
        key = SigningKey(b"\x05" * 32)
        twins = [Signed.sign({"author": key.public, "seq": 0, "ts": t}, key) for t in (1, 2)]
        w = W.make("fork", key.public, "fork", 0, twins, c.nodes[0].node_key, c.nodes[0].now_us())
        assert await c.nodes[0].warrant_book.remember(w)  # held, not broadcast
        assert key.public not in c.nodes[1].warranted
        # Node 0 asks node 1; node 1 has nothing node 0 lacks, so only a push carries it over.
        await c.nodes[0].gossiper.gossip_with(c.nodes[1].id)
        assert key.public in c.nodes[1].warranted


async def test_a_bad_prev_warrant_proves_itself_to_a_node_holding_the_other_twin(
    clock, autojump_clock
):
    """An action that does not build on the action its author signed at the seq before proves
    a fork by itself, even to a node whose own copy of the chain holds the other twin, which
    the action does build on (seed 301172 of the mixed sweep: two honest nodes refused such a
    warrant for good). Evidence where the action does build on its predecessor proves nothing."""
    async with cluster(clock, n=4, r=4) as c:  # every node holds the chain, the judge too
        a = await c.nodes[0].new_agent()
        await a.add_knowledge("first")
        await a.add_knowledge("second")
        await c.await_consistency(timeout=60)
        pub = from_text("agent", a.agent_id)
        chain = c.nodes[0].store.chain(pub)
        s1, s2 = chain[-2], chain[-1]
        twin = Signed.sign({**s1.action, "ts": s1.action["ts"] + 1}, c.nodes[0].cells[pub].key)
        issuer = c.nodes[1]
        judge = c.nodes[2]
        assert judge.dht.in_chain(s1.hash) and judge.dht.in_chain(s2.hash)
        framing = W.make(
            "invalid", pub, "bad_prev", s2.seq, [s2, s1], issuer.node_key, issuer.now_us()
        )
        assert not await judge.warrant_book.receive(
            P.WarrantMsg.parse(framing.to_wire()), issuer.id
        )
        assert pub not in judge.warranted
        w = W.make("invalid", pub, "bad_prev", s2.seq, [s2, twin], issuer.node_key, issuer.now_us())
        assert W.prev_mismatch_proven(w) and not W.prev_mismatch_proven(framing)
        assert await judge.warrant_book.receive(P.WarrantMsg.parse(w.to_wire()), issuer.id)
        assert pub in judge.warranted
