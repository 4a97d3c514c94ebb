"""The simulator's own derivation of the budget ledger (sims/ledger_audit.py): honest chains
pass, and each cheat or broken book it exists to catch is reported."""

from __future__ import annotations

import copy
from dataclasses import replace
from types import MappingProxyType

import pytest

from node.core import ledger as L
from node.core.crypto import from_text
from node.local_node import LocalNode
from sims.invariants import audit_chain, spending_bound
from sims.ledger_audit import check_books, replay_ledger

from test_budgets import T0, TRIPLE, _next


def chains(node) -> dict:
    return {pub: (node.store.chain(pub), cell.ledger) for pub, cell in node.cells.items()}


async def economy(node, t):
    """A root, a child, a card, paid refines, a settled, a cancelled and an expired hold, a
    revoked card and a voided child."""
    st = node.steward
    alice, bob, carol = [await node.new_agent() for _ in range(3)]
    root = await st.mint_budget(
        {"ru": 500}, holder=alice.agent_id, schema={"can_fund": True, "can_delegate": True}
    )
    child = await alice.fund_budget(root, {"ru": 100}, holder=bob.agent_id)
    card = await alice.delegate_budget(root, holder=bob.agent_id, max_spend={"ru": 30})
    await bob.refine(instructions=[TRIPLE, TRIPLE], budgets=[card])
    await bob.commit_spend(child, {"ru": 20}, task_id="settled")
    await bob.settle_spend("settled", {"ru": 7}, payee=carol.agent_id)
    await bob.commit_spend(child, {"ru": 5}, task_id="cancelled")
    await bob.cancel_spend("cancelled")
    await bob.commit_spend(child, {"ru": 5}, task_id="expired", timeout_s=30)
    t[0] += 60
    await carol.refine(instructions=[TRIPLE], budgets=await carol.wallet())
    await alice.revoke_budget(card)
    await bob.revoke_budget(child)
    return alice, bob, carol, root, child, card


async def test_an_honest_economy_balances_to_what_was_minted():
    t = [T0]
    async with LocalNode.open(clock=lambda: t[0]) as node:
        await economy(node, t)
        found = check_books(chains(node), node.dna.stewards, int(t[0] * 1e6))
        assert found.problems == []
        assert found.totals["minted"] == found.totals["held"] == {"ru": 500_000}
        assert found.holds == {"settled": 1, "cancelled": 1, "expired": 1}
        assert found.counts["paid_writes"] == 3 and found.counts["lineages"] == 3
        for chain, _ in chains(node).values():  # the allowance audit: ledger actions are free
            assert audit_chain(chain, node.dna)[0] == []
            assert spending_bound(chain, lambda s: 0.0, node.dna, 0) == []


async def test_an_offer_not_yet_accepted_is_in_transit_and_one_sent_outside_is_gone():
    t = [T0]
    async with LocalNode.open(clock=lambda: t[0]) as node:
        alice, bob, carol, *_ = await economy(node, t)
        every = chains(node)
        bob_pub = from_text("agent", bob.agent_id)
        # carol's chain as it was before it accepted her settlement: 7 RU in transit
        carol_pub = from_text("agent", carol.agent_id)
        chain, led = every[carol_pub]
        first = next(i for i, s in enumerate(chain) if s.action.get("type") == "ledger")
        every[carol_pub] = (chain[:first], L.LEDGER0)
        found = check_books(every, node.dna.stewards, int(t[0] * 1e6))
        assert found.totals["in_transit"] == {"ru": 7_000}
        assert not [p for p in found.problems if "conservation" in p]
        # bob outside the honest set: what was sent him is gone, what he gave back came in
        del every[bob_pub]
        found = check_books(every, node.dna.stewards, int(t[0] * 1e6))
        assert not [p for p in found.problems if "conservation" in p]
        assert found.totals["sent_outside"]["ru"] > found.totals["taken_from_outside"]["ru"] > 0


async def test_over_spends_double_settles_and_double_accepts_are_caught():
    t = [T0]
    async with LocalNode.open(clock=lambda: t[0]) as node:
        alice, bob, *_ = await economy(node, t)
        pub = from_text("agent", bob.agent_id)
        chain, key = node.store.chain(pub), bob._cell.key
        paid = next(s for s in chain if "pay" in s.action.get("budget", {}))

        def over(a):  # a paid write of 33 RU on the 30 RU card, six times over
            a.clear()
            a.update(copy.deepcopy(paid.action))
            a["budget"].update(cost=33_000, call=chain[-1].seq + 1)

        forged = chain + [_next(chain, over, key)]
        assert any("over-spends card" in p for p in replay_ledger(forged, ()).problems)

        settle = next(s for s in chain if s.action.get("ledger", {}).get("kind") == "settle")
        twice = chain + [
            _next(chain, lambda a: (a.clear(), a.update(copy.deepcopy(settle.action))), key)
        ]
        assert any("settled after it was settled" in p for p in replay_ledger(twice, ()).problems)

        accept = next(s for s in chain if s.action.get("ledger", {}).get("kind") == "accept")
        again = chain + [
            _next(chain, lambda a: (a.clear(), a.update(copy.deepcopy(accept.action))), key)
        ]
        assert any("accepted twice" in p for p in replay_ledger(again, ()).problems)


async def test_books_that_do_not_balance_or_disagree_with_the_replay_are_caught():
    t = [T0]
    async with LocalNode.open(clock=lambda: t[0]) as node:
        alice, bob, *_ = await economy(node, t)
        every = chains(node)
        pub = from_text("agent", alice.agent_id)
        chain, led = every[pub]
        b = next(iter(led.budgets.values()))
        richer = replace(b, available=L.add(b.available, MappingProxyType({"ru": 1000})))
        every[pub] = (chain, led.with_budget(richer))
        found = check_books(every, node.dna.stewards, int(t[0] * 1e6))
        assert any("funded" in p and "!=" in p for p in found.problems)
        assert any("the ledger holds" in p for p in found.problems)
        # without the steward's chain, value comes from outside: more than was given it
        del every[node.steward._cell.key.public]
        every[pub] = (chain, led)
        found = check_books(every, node.dna.stewards, int(t[0] * 1e6))
        assert any("more than it was given" in p for p in found.problems)
        # a write paid by a budget no chain made has no lineage
        pub = from_text("agent", bob.agent_id)
        chain, led = every[pub]
        paid = next(s for s in chain if "pay" in s.action.get("budget", {}))

        def bogus(a):
            a.clear()
            a.update(copy.deepcopy(paid.action))
            a["budget"].update(pay=bytes(32), call=chain[-1].seq + 1)

        every[pub] = (chain + [_next(chain, bogus, bob._cell.key)], led)
        found = check_books(every, node.dna.stewards, int(t[0] * 1e6))
        assert any("does not reach a mint" in p for p in found.problems)


@pytest.mark.parametrize("field", ["cost", "rem"])
async def test_the_allowance_audit_still_catches_a_forged_paid_write(field):
    t = [T0]
    async with LocalNode.open(clock=lambda: t[0]) as node:
        alice, bob, *_ = await economy(node, t)
        pub = from_text("agent", bob.agent_id)
        chain = node.store.chain(pub)
        paid = next(s for s in chain if "pay" in s.action.get("budget", {}))

        def forge(a):
            a.clear()
            a.update(copy.deepcopy(paid.action))
            a["budget"][field] -= 1000  # a paid write still records the DNA's cost, and the
            # allowance as it was

        problems, _ = audit_chain(chain + [_next(chain, forge, bob._cell.key)], node.dna)
        assert problems
