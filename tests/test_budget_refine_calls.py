"""Consecutive refine calls are separate calls: each starts its own `call` (found by the
economy simulation: a refine right after another refine paid by a different budget was refused
as malformed, and one paid by the same budget had its max_per_call summed with the last's)."""

from __future__ import annotations

from node.local_node import LocalNode

T0 = 1_730_678_400.0
TRIPLE = {
    "zome": "memory",
    "fn": "transmit_understanding",
    "payload": {"subject": "s", "predicate": "p", "object": "o"},
}  # 3 RU


async def test_back_to_back_refines_are_separate_calls():
    async with LocalNode.open(clock=lambda: T0) as node:
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
        seqs = [s.action["budget"] for s in node.store.chain(alice._cell.key.public)[-4:]]
        assert [rec["call"] for rec in seqs] == [
            seqs[0]["call"],
            seqs[1]["call"],
            seqs[2]["call"],
            seqs[2]["call"],
        ]
        assert len({rec["call"] for rec in seqs}) == 3
