"""Concurrent writers never over-spend; a grant is claimed once; the cap holds through the SDK."""

from __future__ import annotations

import random

import pytest
import trio

from node.core.action import grant_body
from node.core.crypto import SigningKey, from_text
from node.core.encoding import encode
from node.core.validate import validate_chain
from node.sdk import (
    BudgetExceeded,
    GrantAlreadyClaimed,
    HeadMoved,
    InsufficientRU,
    LocalNode,
    NotAuthorized,
)
from zomes import APP

US = 1_000_000
T0_S = 1_730_678_400
W_S = 86_400


def clock(start=T0_S):
    now = [float(start)]
    return now, (lambda: now[0])


def pub_of(agent) -> bytes:
    return from_text("agent", agent.agent_id)


def validated(node, agent):
    key = pub_of(agent)
    return validate_chain(node.store.chain(key), node.dna, APP, node.store.entries_of(key))


async def race(calls):
    """Start every call at once; return (successes, refusals) as lists of (label, result)."""
    ok, refused = [], []

    async def one(label, fn):
        try:
            ok.append((label, await fn()))
        except Exception as e:  # collected and checked by the caller
            refused.append((label, e))

    async with trio.open_nursery() as n:
        for label, fn in calls:
            n.start_soon(one, label, fn)
    return ok, refused


# ---------------------------------------------------------------- no over-spend


async def test_fifty_concurrent_add_knowledge_never_over_spend():
    now, clk = clock()
    async with LocalNode.open(clock=clk) as node:
        alice = await node.new_agent()
        length = len(node.store.chain(pub_of(alice)))
        ok, refused = await race(
            [("k", lambda i=i: alice.add_knowledge(content=f"fact {i}")) for i in range(50)]
        )
        assert len(ok) + len(refused) == 50
        assert all(isinstance(e, InsufficientRU) for _, e in refused), refused
        assert len(ok) * 33 <= 100
        assert len(ok) == 3  # and nothing affordable was refused
        assert len(set(h for _, h in ok)) == 3
        assert len(node.store.chain(pub_of(alice))) == length + len(ok)
        cs = validated(node, alice)
        assert cs.budget.remaining_mru == 100_000 - len(ok) * 33_000
        s = await alice.budget_status()
        assert s.remaining_ru == 100 - len(ok) * 33 == 1.0
        assert {e.have_mru for _, e in refused} == {1_000}


async def test_mixed_concurrent_writes_never_over_spend():
    now, clk = clock()
    rng = random.Random(7)
    async with LocalNode.open(clock=clk) as node:
        alice = await node.new_agent()
        calls = []
        for i in range(60):
            if rng.random() < 0.5:
                calls.append((33_000, lambda i=i: alice.add_knowledge(content=f"k{i}")))
            else:
                calls.append(
                    (
                        3_000,
                        lambda i=i: alice.transmit_understanding(f"s{i}", "p", "o", context=None),
                    )
                )
        ok, refused = await race(calls)
        assert all(isinstance(e, InsufficientRU) for _, e in refused), refused
        spent = sum(cost for cost, _ in ok)
        assert spent <= 100_000
        cs = validated(node, alice)
        assert cs.budget.remaining_mru == 100_000 - spent
        assert (await alice.budget_status()).remaining_mru == 100_000 - spent
        assert cs.seq == len(ok)
        # a refusal only ever happened for want of budget
        for cost, e in refused:
            assert e.need_mru == cost and e.have_mru < cost
        # and at the end nothing that was refused would now fit
        assert all(cost > cs.budget.remaining_mru for cost, _ in refused)


async def test_many_agents_at_once_each_keep_their_own_budget():
    now, clk = clock()
    async with LocalNode.open(clock=clk) as node:
        agents = [await node.new_agent() for _ in range(5)]
        calls = [
            (a.agent_id, lambda a=a, i=i: a.add_knowledge(content=f"{i}"))
            for i in range(10)
            for a in agents
        ]
        random.Random(3).shuffle(calls)
        ok, refused = await race(calls)
        assert all(isinstance(e, InsufficientRU) for _, e in refused)
        for a in agents:
            assert sum(1 for who, _ in ok if who == a.agent_id) == 3
            assert validated(node, a).budget.remaining_mru == 1_000


async def test_two_node_handles_on_one_store_never_over_spend(tmp_path):
    """Two writers for one agent (as two processes would be): the store's compare-and-swap
    and the re-derivation after HeadMoved keep the budget whole."""
    now, clk = clock()
    path = str(tmp_path / "node")
    async with LocalNode.open(path=path, clock=clk) as a:
        alice_a = await a.new_agent()
        async with LocalNode.open(path=path, clock=clk) as b:
            alice_b = await b.agent(alice_a.agent_id)
            calls = []
            for i in range(40):
                who = alice_a if i % 2 else alice_b
                calls.append(
                    (who, lambda who=who, i=i: who.transmit_understanding(f"s{i}", "p", "o"))
                )
            ok, refused = await race(calls)
            assert all(isinstance(e, (InsufficientRU, HeadMoved)) for _, e in refused), refused
            assert len(ok) * 3 <= 100
            assert len(ok) == 33
            for node in (a, b):
                cs = validated(node, alice_a)
                assert cs.seq == len(ok)
                assert cs.budget.remaining_mru == 100_000 - 3_000 * len(ok)
            # a stale handle catches up rather than spending twice
            with pytest.raises(InsufficientRU):
                await alice_a.transmit_understanding("x", "p", "o")
            with pytest.raises(InsufficientRU):
                await alice_b.transmit_understanding("x", "p", "o")


async def test_concurrent_writes_across_a_window_reset():
    now, clk = clock()
    async with LocalNode.open(clock=clk) as node:
        alice = await node.new_agent()
        ok1, _ = await race(
            [(0, lambda i=i: alice.add_knowledge(content=f"a{i}")) for i in range(10)]
        )
        now[0] = T0_S + W_S  # exactly one window after genesis
        ok2, refused2 = await race(
            [(1, lambda i=i: alice.add_knowledge(content=f"b{i}")) for i in range(10)]
        )
        assert (len(ok1), len(ok2)) == (3, 3)
        assert all(isinstance(e, InsufficientRU) for _, e in refused2)
        cs = validated(node, alice)
        assert cs.budget.window_start_us == (T0_S + W_S) * US
        assert cs.budget.remaining_mru == 1_000


# ---------------------------------------------------------------- grants


def _cells(node, alice):
    steward = node.cells[node.dna.stewards[0]]
    return steward, node.cells[pub_of(alice)]


def _grant(node, steward_key, grantee, amount_mru, nonce=b"\x09" * 16):
    g = grant_body(node.dna.hash, steward_key.public, grantee, amount_mru, node.now_us(), nonce)
    return g, steward_key.sign(encode(g))


async def test_a_grant_is_claimed_once_through_the_cell():
    now, clk = clock()
    async with LocalNode.open(clock=clk) as node:
        alice = await node.new_agent()
        steward, cell = _cells(node, alice)
        g, sig = _grant(node, steward.key, cell.key.public, 40_000)
        assert await cell.claim(g, sig) == 40_000
        length = len(node.store.chain(cell.key.public))
        now[0] += 5
        with pytest.raises(GrantAlreadyClaimed) as ei:
            await cell.claim(g, sig)
        assert ei.value.code == "E_GRANT_CLAIMED"
        assert len(node.store.chain(cell.key.public)) == length
        assert (await alice.budget_status()).remaining_ru == 140.0
        # even after the window resets the grant stays spent
        now[0] += W_S
        with pytest.raises(GrantAlreadyClaimed):
            await cell.claim(g, sig)
        assert len(node.store.chain(cell.key.public)) == length
        assert validated(node, alice).claimed == cell.state.claimed


async def test_the_same_grant_claimed_by_many_tasks_at_once_lands_once():
    now, clk = clock()
    async with LocalNode.open(clock=clk) as node:
        alice = await node.new_agent()
        steward, cell = _cells(node, alice)
        g, sig = _grant(node, steward.key, cell.key.public, 50_000)
        ok, refused = await race([(i, lambda: cell.claim(g, sig)) for i in range(20)])
        assert [r for _, r in ok] == [50_000]
        assert len(refused) == 19
        assert all(isinstance(e, GrantAlreadyClaimed) for _, e in refused)
        cs = validated(node, alice)
        assert cs.seq == 1 and cs.budget.remaining_mru == 150_000


async def test_a_grant_that_does_not_verify_writes_nothing():
    now, clk = clock()
    async with LocalNode.open(clock=clk) as node:
        alice = await node.new_agent()
        bob = await node.new_agent()
        steward, cell = _cells(node, alice)
        length = len(node.store.chain(cell.key.public))
        forger = SigningKey(b"\x05" * 32)
        g, sig = _grant(node, forger, cell.key.public, 100_000)  # not a steward
        with pytest.raises(NotAuthorized):
            await cell.claim(g, sig)
        g, _ = _grant(node, steward.key, cell.key.public, 100_000)
        with pytest.raises(NotAuthorized):  # forged signature
            await cell.claim(g, forger.sign(encode(g)))
        g, sig = _grant(node, steward.key, pub_of(bob), 100_000)  # bob's grant
        with pytest.raises(NotAuthorized):
            await cell.claim(g, sig)
        assert len(node.store.chain(cell.key.public)) == length
        assert (await alice.budget_status()).remaining_ru == 100.0


# ---------------------------------------------------------------- the cap through the SDK


async def test_allocation_is_capped_at_200_ru():
    now, clk = clock()
    async with LocalNode.open(clock=clk) as node:
        alice = await node.new_agent()
        steward = node.steward
        g = await steward.allocate_budget(alice.agent_id, 150)
        assert g.requested_ru == 150.0 and g.granted_ru == 100.0
        s = await alice.budget_status()
        assert s.remaining_ru == 200.0 and s.used_ru == 0.0
        with pytest.raises(BudgetExceeded):  # it would add nothing: refused, not written
            await steward.allocate_budget(alice.agent_id, 50)
        assert (await alice.budget_status()).remaining_ru == 200.0
        await alice.add_knowledge(content="x")
        g = await steward.allocate_budget(alice.agent_id, 50)
        assert g.granted_ru == 33.0
        assert (await alice.budget_status()).remaining_ru == 200.0
        # six more knowledge entries fit in the raised budget, a seventh does not
        for i in range(6):
            await alice.add_knowledge(content=f"x{i}")
        with pytest.raises(InsufficientRU) as ei:
            await alice.add_knowledge(content="y")
        assert ei.value.have == 2.0
        assert validated(node, alice).budget.remaining_mru == 2_000
        # grants do not outlive their window
        now[0] += W_S
        assert (await alice.budget_status()).remaining_ru == 100.0


async def test_concurrent_allocations_never_push_past_the_cap():
    now, clk = clock()
    async with LocalNode.open(clock=clk) as node:
        alice = await node.new_agent()
        steward = node.steward
        steward_pub = node.dna.stewards[0]
        length = len(node.store.chain(steward_pub))
        ok, refused = await race(
            [(i, lambda: steward.allocate_budget(alice.agent_id, 50)) for i in range(10)]
        )
        # two fill the cap; the other eight would add nothing: refused, and nothing written
        assert all(isinstance(e, BudgetExceeded) for _, e in refused) and len(refused) == 8
        assert sum(g.granted_ru for _, g in ok) == 100.0
        assert len({g.grant for _, g in ok}) == 2
        cs = validated(node, alice)
        assert cs.budget.remaining_mru == 200_000 and len(cs.claimed) == 2
        assert len(node.store.chain(steward_pub)) == length + 2  # no grant left unclaimed
        validate_chain(
            node.store.chain(steward_pub), node.dna, APP, node.store.entries_of(steward_pub)
        )
