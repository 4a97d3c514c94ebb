"""Refine calls on one chain: each names its own `call`."""

from __future__ import annotations

from node.local_node import LocalNode

from test_budgets import TRIPLE, Clock


# found by the economy simulation: a refine right after another, paid by a different budget,
# was refused as malformed, and one paid by the same budget had its max_per_call summed with the
# last's (the chain's `call` still named the last refine's)
async def test_back_to_back_refines_are_separate_calls():
    async with LocalNode.open(clock=Clock()) as node:
        alice = await node.new_agent()
        root = await node.steward.mint_budget(
            {"ru": 100}, holder=alice.agent_id, schema={"can_fund": True}
        )
        capped = await alice.fund_budget(
            root, {"ru": 50}, holder=alice.agent_id, schema={"max_per_call": {"ru": 5}}
        )
        # the same budget twice: 3 + 3 RU in two calls is within a 5 RU max_per_call
        for _ in range(2):
            r = await alice.refine(instructions=[TRIPLE], budgets=capped)
            assert r.authorized_by == capped
        # another budget right after: a call of its own
        r = await alice.refine(instructions=[TRIPLE, TRIPLE], budgets=root)
        assert r.authorized_by == root and r.spent == {"ru": 6.0}
        last = node.store.chain(alice._cell.key.public)[-4:]
        # each call is named by the seq of its first write
        assert [s.action["budget"]["call"] for s in last] == [
            last[0].seq,
            last[1].seq,
            last[2].seq,
            last[2].seq,
        ]
