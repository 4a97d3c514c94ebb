"""Authorities of an action's hash or entry (not of its author's key) validate the one step from
the action before it and keep the action alone; warrants they issue prove themselves."""

import random
from collections import Counter

import trio
import trio.testing

from node.core import dht
from node.core.crypto import SigningKey, from_text, to_text
from node.net import protocol as P
from node.net.node import NetNode
from node.sdk import InsufficientRU, LocalCluster, Warranted


async def test_op_authorities_keep_single_actions_without_the_history(clock, autojump_clock):
    async with LocalCluster.open(n=6, clock=lambda: clock[0], transport="memory", r=1) as c:
        ids = [n.id for n in c.nodes]
        with trio.fail_after(60):  # everyone agrees on the ring before anything is published
            while not all(len(n.peers) == len(ids) - 1 for n in c.nodes):
                await c.wait_changed()
        await trio.testing.wait_all_tasks_blocked()
        # ops published while the ring was forming (the steward's) may have been shown to an
        # author-key authority the publisher did not know of yet; only what follows counts
        registered = sum(n.metrics["ops_registered"] for n in c.nodes)
        for _ in range(64):  # an agent whose key authority is another node (one can vouch)
            a = await c.nodes[0].new_agent()
            pub = from_text("agent", a.agent_id)
            if dht.nearest(pub, ids, 1)[0] != c.nodes[0].id:
                break
        for i in range(6):
            await a.transmit_understanding("fact", "number", str(i))
        await c.await_consistency(timeout=60)
        by_id = {n.id: n for n in c.nodes}
        author_auth = dht.nearest(pub, ids, 1)[0]
        chain = c.nodes[0].store.chain(pub)
        single = 0
        for s in chain:
            for b in dht.bases(s):
                holder = by_id[dht.nearest(b, ids, 1)[0]]
                assert holder.dht.has_action(s.hash)
        for n in c.nodes:
            if n.id in (author_auth, c.nodes[0].id):
                continue
            assert pub not in n.chains  # no copy of the author's history was fetched
            single += n.metrics["ops_held_single"]
            assert n.metrics["op_prev_fetched"] == 0  # the publisher sent each prev along
        assert single > 0
        # Each op came with a receipt from an authority of its author's key, so no op authority
        # had to show it to one itself (that is what catches forks otherwise).
        assert sum(n.metrics["ops_vouched"] for n in c.nodes) > 0
        assert sum(n.metrics["ops_registered"] for n in c.nodes) == registered
        hash_auth = by_id[dht.nearest(chain[-1].hash, ids, 1)[0]]
        rec = hash_auth.get_record(to_text("action", chain[-1].hash))
        assert rec["content"]["object"] == "5"


async def test_a_step_warrant_proves_itself_without_the_chain(clock, autojump_clock):
    async with LocalCluster.open(
        n=5,
        clock=lambda: clock[0],
        transport="memory",
        r=1,
        rogue=(4,),
        rogue_modes=("forge_budget",),
    ) as c:
        rogue = await c.nodes[4].new_agent()
        for i in range(8):
            try:
                await rogue.add_knowledge(f"free ride {i}")
            except Warranted:
                break
        await c.await_consistency(timeout=60)
        step = [w for n in c.nodes[:4] for w in n.warrants() if len(w.evidence()) == 2]
        assert step, "no op authority issued a warrant"
        w = step[0]
        assert w.reason == "wrong_remaining"
        async with NetNode.open(
            c.network.transport, clock=lambda: clock[0], r=1, dna=c.nodes[0].dna
        ) as fresh:
            assert w.offender not in fresh.chains
            assert await fresh.warrant_book.receive(P.WarrantMsg.parse(w.to_wire()), c.nodes[0].id)
            assert fresh.metrics["sent_chain"] == 0 and w.offender in fresh.warranted


async def _one_create_everywhere(c):
    """An agent on node 0 that wrote one entry, held by all its authorities: (agent key, the
    action, its entry bytes)."""
    a = await c.nodes[0].new_agent()
    await a.add_knowledge("written once")
    await c.await_consistency(timeout=60)
    pub = from_text("agent", a.agent_id)
    s = c.nodes[0].store.chain(pub)[-1]
    return pub, s, c.nodes[0].dht.entry(s.action["entry"])


async def test_an_op_is_shown_to_an_author_authority_that_answers_even_after_a_partition(
    clock, autojump_clock
):
    """A fork is caught only if an op held alone reaches someone holding the chain: the op goes
    to the next author-key authority when the nearest does not answer, and stays queued in the
    store until one does."""
    async with LocalCluster.open(n=6, clock=lambda: clock[0], transport="memory", r=3) as c:
        pub, s, entry = await _one_create_everywhere(c)
        sender = c.nodes[0].id
        holder = next(n for n in c.nodes[1:] if n.id not in n.peer_table.nearest(pub))
        near = [p for p in holder.peer_table.nearest(pub) if p != sender]
        others = [n.id for n in c.nodes if n.id != holder.id]

        await holder.dht.put_op(s, entry, unshown_from=sender)
        c.network.partition([holder.id], [near[0]])  # the nearest is away: the next one will do
        await holder.acceptor._register_activity(s.hash, sender)
        assert holder.dht.unshown(10) == []

        await holder.dht.put_op(s, entry, unshown_from=sender)  # shown again, with nobody reachable
        c.network.heal()
        c.network.partition([holder.id], others)
        await holder.acceptor._register_activity(s.hash, sender)
        assert holder.dht.unshown(10) == [(s.hash, sender)]
        c.network.heal()
        with trio.fail_after(120):  # the limbo worker tries again
            while holder.dht.unshown(10):
                await c.wait_changed()


async def test_an_op_authority_sent_two_actions_at_one_seq_warrants_the_fork(clock, autojump_clock):
    """A create's twins share their entry, so the entry's authorities are sent both: whichever
    author-key authorities saw which twin, they hold the proof of the fork themselves (seed
    200465 of the mixed sweep: the twin had been shown only to the forker's own node)."""
    from node.core.action import Signed

    async with LocalCluster.open(n=6, clock=lambda: clock[0], transport="memory", r=1) as c:
        pub, s, entry = await _one_create_everywhere(c)
        key = c.nodes[0].cells[pub].key
        twin = Signed.sign({**s.action, "ts": s.action["ts"] + 1}, key)
        prev = c.nodes[0].store.chain(pub)[-2]
        holder = next(n for n in c.nodes[1:] if n.id not in n.peer_table.nearest(pub))
        sender = c.nodes[0].id
        assert await holder._accept(s, entry, sender, op=True, prev=prev) == "valid"
        assert pub not in holder.warranted
        assert await holder._accept(twin, entry, sender, op=True, prev=prev) == "invalid"
        w = holder.warranted[pub]
        assert (w.kind, w.body["seq"]) == ("fork", s.seq)
        assert {e.hash for e in w.evidence()} == {s.hash, twin.hash}
        await c.await_consistency(timeout=60)  # and every node learns it
        assert all(pub in n.warranted for n in c.nodes)


async def test_a_chain_that_brings_the_twin_of_an_op_held_alone_is_a_fork(clock, autojump_clock):
    """The other order (seed 440333 of the mixed sweep): a node held a twin alone, as an
    authority of its entry, then took the author's chain (it became an author-key authority, or
    fetched the history for a query) holding the other twin at that seq. It kept both and
    warranted nobody, so no honest node ever did."""
    from node.core.action import Signed

    async with LocalCluster.open(n=6, clock=lambda: clock[0], transport="memory", r=1) as c:
        pub, s, entry = await _one_create_everywhere(c)
        key = c.nodes[0].cells[pub].key
        twin = Signed.sign({**s.action, "ts": s.action["ts"] + 1}, key)
        prev = c.nodes[0].store.chain(pub)[-2]
        holder = next(
            n
            for n in c.nodes[1:]
            if n.id not in n.peer_table.nearest(pub) and not n.dht.has_action(s.hash)
        )
        sender = c.nodes[0].id
        assert await holder._accept(twin, entry, sender, op=True, prev=prev) == "valid"
        assert pub not in holder.chains and pub not in holder.warranted
        assert await holder._accept(s, entry, sender) == "invalid"  # fetches the history first
        w = holder.warranted[pub]
        assert (w.kind, w.body["seq"]) == ("fork", s.seq)
        assert {e.hash for e in w.evidence()} == {s.hash, twin.hash}
        assert not holder.dht.in_chain(s.hash)


async def _ring_and_a_bystander(c):
    """The ring agreed on, an agent on node 0, and a bystander: neither the publisher nor the
    agent's key authority (which would get the history through the head's republish and its
    gossip); of those, the one nearest the most keys (with five nodes, one may own a sliver)."""
    ids = [n.id for n in c.nodes]
    with trio.fail_after(60):
        while not all(len(n.peers) == len(ids) - 1 for n in c.nodes):
            await c.wait_changed()
    a = await c.nodes[0].new_agent()
    pub = from_text("agent", a.agent_id)
    rng = random.Random(4)
    share = Counter(dht.nearest(rng.randbytes(32), ids, 1)[0] for _ in range(2000))
    other = max(
        (n for n in c.nodes[1:] if n.id != dht.nearest(pub, ids, 1)[0]), key=lambda n: share[n.id]
    )
    return a, pub, other


async def _write_until_two_land_on(c, clock, a, pub, node) -> list:
    """Writes until two actions have `node` as their hash or entry authority, then one more
    (the head: not one of those, so the head's republish cannot be what brings them)."""
    ids = [n.id for n in c.nodes]
    missed = []
    for i in range(200):
        try:
            await a.transmit_understanding("fact", "away", str(i))
        except InsufficientRU:
            clock[0] += 86_400  # the next window
            continue
        s = c.nodes[0].store.chain(pub)[-1]
        if any(dht.nearest(b, ids, 1) == [node.id] for b in dht.bases(s)[::2]):
            missed.append(s)
        if len(missed) >= 2:
            break
    await a.transmit_understanding("fact", "head", "not one of those")
    assert missed, "no action of 200 had the node as its hash or entry authority"
    return missed


async def test_an_op_authority_away_at_publish_gets_the_op_when_back(clock, autojump_clock):
    """A publish counts as done once the authorities of an action's hash and entry were asked;
    one cut off then (routed around after it failed) is an authority again when it is back, and
    a lookup by that hash goes to it. The publisher offers its published actions again once the
    ring settles, so it gets what it missed; before, it never did."""
    async with LocalCluster.open(n=5, clock=lambda: clock[0], transport="memory", r=1) as c:
        n0 = c.nodes[0]
        a, pub, away = await _ring_and_a_bystander(c)
        c.network.partition([n.id for n in c.nodes if n is not away], [away.id])
        missed = await _write_until_two_land_on(c, clock, a, pub, away)
        with trio.fail_after(300):  # published (routed around it) and the node dropped
            while n0.dht.unpublished(1) or away.id in n0.peers:
                await c.wait_changed()
        assert not any(away.dht.has_action(s.hash) for s in missed)
        c.network.heal()
        with trio.fail_after(600):
            while not all(away.dht.has_action(s.hash) for s in missed):
                await c.wait_changed()
        # what a lookup by hash asks the node now: it answers with the record
        rec = away.get_record(to_text("action", missed[0].hash))
        assert rec["seq"] == missed[0].seq and rec["author"] == a.agent_id


async def test_an_op_authority_back_gets_what_it_missed_while_the_writes_go_on(
    clock, autojump_clock
):
    """As above, but the agent keeps writing after the authority is back (a node under a steady
    load, as the nemesis drives it): the offer again is not put off until the writes pause.
    Found by `budgetnode nemesis` (5 nodes, kill -9 only): ops a killed node missed reached it
    only when the writers stopped, 5 minutes later (visibility p99 750 s)."""
    async with LocalCluster.open(n=5, clock=lambda: clock[0], transport="memory", r=1) as c:
        n0 = c.nodes[0]
        a, pub, away = await _ring_and_a_bystander(c)
        c.network.partition([n.id for n in c.nodes if n is not away], [away.id])
        missed = await _write_until_two_land_on(c, clock, a, pub, away)
        with trio.fail_after(300):  # published (routed around it) and the node dropped
            while n0.dht.unpublished(1) or away.id in n0.peers:
                await c.wait_changed()
        c.network.heal()
        real_request = n0.publisher.request

        async def slow_request(peer, t, **fields):
            await trio.sleep(0.4)  # a loaded machine's round trip: a round outlasts a write
            return await real_request(peer, t, **fields)

        n0.publisher.request = slow_request

        async def steady_writes():
            for i in range(100_000):
                await trio.sleep(0.25)  # the workload's pace
                try:
                    await a.transmit_understanding("fact", "steady", str(i))
                except InsufficientRU:
                    clock[0] += 86_400  # the next window

        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady_writes)
            with trio.fail_after(120):  # while the writes go on
                while not all(away.dht.has_action(s.hash) for s in missed):
                    await c.wait_changed()
            nursery.cancel_scope.cancel()


async def test_an_op_left_pending_at_an_op_authority_is_offered_again(clock, autojump_clock):
    """An op authority that answers `pending` (it waits in its limbo, which gives up after a few
    tries) was asked, so the publish is done, and nothing else would bring it the op: the ring
    never changes here. The publisher offers it again, pass after pass (later each time), until
    the authority takes it; a pass that ended short once left the publisher idle for good."""
    async with LocalCluster.open(n=5, clock=lambda: clock[0], transport="memory", r=1) as c:
        a, pub, slow = await _ring_and_a_bystander(c)
        # the walk a ring change starts is over (it would offer the ops again by itself)
        await c.nodes[0].publisher_idle.wait()
        real, offers = slow.acceptor._accept_op, Counter()

        async def accept_op(s, entry, peer, prev_wire, vouch=None):
            offers[s.hash] += 1
            if s.author == pub and offers[s.hash] <= 2:
                return "pending"  # ...and its limbo entry expired: the publish and a recheck
            return await real(s, entry, peer, prev_wire, vouch)

        slow.acceptor._accept_op = accept_op
        missed = await _write_until_two_land_on(c, clock, a, pub, slow)
        with trio.fail_after(600):
            while not all(slow.dht.has_action(s.hash) for s in missed):
                await c.wait_changed()
        assert all(offers[s.hash] >= 3 for s in missed)


async def test_a_receipt_that_does_not_verify_is_never_passed_on_as_a_vouch(clock, autojump_clock):
    async with LocalCluster.open(n=6, clock=lambda: clock[0], transport="memory", r=1) as c:
        ids = [n.id for n in c.nodes]
        with trio.fail_after(60):
            while not all(len(n.peers) == len(ids) - 1 for n in c.nodes):
                await c.wait_changed()
        by_id = {n.id: n for n in c.nodes}
        for _ in range(64):
            a = await c.nodes[0].new_agent()
            pub = from_text("agent", a.agent_id)
            if dht.nearest(pub, ids, 1)[0] != c.nodes[0].id:
                break
        await c.await_consistency(timeout=60)
        liar = by_id[dht.nearest(pub, ids, 1)[0]]
        liar.handlers.node_key = SigningKey(
            b"\x09" * 32
        )  # its receipts no longer verify as its own
        sent = []
        publisher = c.nodes[0]
        real_request = publisher.publisher.request

        async def spy(peer, t, **fields):
            if t == "publish":
                sent.extend(fields["ops"])
            return await real_request(peer, t, **fields)

        publisher.publisher.request = spy
        for i in range(4):
            await a.transmit_understanding("after", "the authority went bad", str(i))
        await c.await_consistency(timeout=60)
        for s in publisher.store.chain(pub)[-4:]:  # its word was taken (the transport says who)
            assert liar.id in publisher.dht.receipted_by(s.hash)
        # ...but its receipts are not evidence, and no hash or entry authority was handed one.
        to_op_authorities = [op for op in sent if op[5] is not None]
        assert to_op_authorities
        assert not [v for op in to_op_authorities for v in op[5] if v[0] == liar.id]


async def test_only_an_author_key_authority_signs_a_receipt_and_it_still_vouches(
    clock, autojump_clock
):
    """A receipt is evidence only as a vouch, and only an author-key authority's receipt vouches
    (it holds the chain, so it catches a twin). Hash and entry authorities answer `valid`
    without signing, which the publisher counts as held, so nothing is sent twice."""
    async with LocalCluster.open(n=6, clock=lambda: clock[0], transport="memory", r=1) as c:
        ids = [n.id for n in c.nodes]
        with trio.fail_after(60):
            while not all(len(n.peers) == len(ids) - 1 for n in c.nodes):
                await c.wait_changed()
        publisher = c.nodes[0]
        for _ in range(64):  # an agent whose author-key authority is another node
            a = await publisher.new_agent()
            pub = from_text("agent", a.agent_id)
            if dht.nearest(pub, ids, 1)[0] != publisher.id:
                break
        await c.await_consistency(timeout=60)
        sent = []
        real_request = publisher.publisher.request

        async def spy(peer, t, **fields):
            if t == "publish":
                sent.extend((peer, op) for op in fields["ops"])
            return await real_request(peer, t, **fields)

        publisher.publisher.request = spy
        for i in range(6):
            await a.transmit_understanding("receipts", "who signs", str(i))
        await c.await_consistency(timeout=60)
        keyholder = dht.nearest(pub, ids, 1)[0]
        signed = unsigned = 0
        for s in publisher.store.chain(pub)[1:]:
            rows = dict(publisher.dht.receipts(s.hash))
            others = dht.authorities(s, ids, 1) - {publisher.id, keyholder}
            assert set(rows) >= others
            for v, sig in rows.items():
                if v == keyholder:
                    assert dht.check_receipt(s.hash, v, sig)
                    signed += 1
                else:
                    assert sig == b""
                    unsigned += 1
        assert signed and unsigned
        once = Counter((peer, op[1]) for peer, op in sent)
        assert max(once.values()) == 1
        vouches = [v for _, op in sent if op[5] for v in op[5]]
        assert vouches and all(v[0] == keyholder for v in vouches)
