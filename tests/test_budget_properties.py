"""Properties of the budget ledger under random sequences of operations on a real node:
value is conserved (nothing minted is ever lost or made twice), every budget's books balance,
and refine pays with the first budget that may."""

from __future__ import annotations

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.core.errors import BudgetError
from node.local_node import LocalNode

from test_budgets import T0, TRIPLE  # a 3 RU write

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OPS = st.lists(
    st.tuples(
        st.sampled_from(["fund", "card", "refine", "hold", "settle", "cancel", "revoke", "wait"]),
        st.integers(0, 3),  # which agent acts
        st.integers(0, 7),  # which budget (of those it holds or funded)
        st.integers(1, 60),  # an amount in RU
    ),
    max_size=25,
)


def books(node) -> tuple[int, list[str]]:
    """(Σ available + pending + spent over every budget, budgets whose books do not balance)."""
    total, bad = 0, []
    for _, led in node.ledgers():
        for b in led.budgets.values():
            a, p, s, o, f = (
                x.get("ru", 0) for x in (b.available, b.pending, b.spent, b.out, b.funded)
            )
            total += a + p + s
            if f != a + p + s + o or min(a, p, s, o) < 0:
                bad.append(b.name)
    return total, bad


@SETTINGS
@given(ops=OPS)
def test_value_is_conserved_under_any_sequence_of_ledger_operations(ops):
    async def main():
        t = [T0]
        async with LocalNode.open(clock=lambda: t[0]) as node:
            agents = [await node.new_agent() for _ in range(4)]
            minted = 0
            for a in agents[:2]:
                await node.steward.mint_budget(
                    {"ru": 300},
                    holder=a.agent_id,
                    name="root",
                    schema={"can_fund": True, "can_delegate": True},
                )
                minted += 300_000
            tasks: list[tuple] = []
            for i, (kind, who, which, amount) in enumerate(ops):
                me = agents[who]
                other = agents[(who + 1 + which) % 4]
                mine = [b for b in me._cell.ledger.budgets.values()]
                funded = list(me._cell.ledger.children)
                bid = mine[which % len(mine)].id if mine else None
                from node.core.crypto import to_text

                try:
                    if kind == "fund" and bid:
                        await me.fund_budget(
                            to_text("budget", bid),
                            {"ru": amount},
                            holder=other.agent_id,
                            name=f"f{i}",
                            schema={"can_fund": True, "can_delegate": True},
                        )
                    elif kind == "card" and bid:
                        await me.delegate_budget(
                            to_text("budget", bid),
                            holder=other.agent_id,
                            max_spend={"ru": amount},
                            name=f"c{i}",
                        )
                    elif kind == "refine" and bid:
                        await me.refine(instructions=[TRIPLE], budgets=to_text("budget", bid))
                    elif kind == "hold" and bid:
                        await me.commit_spend(
                            to_text("budget", bid), {"ru": amount}, task_id=f"t{i}", timeout_s=30
                        )
                        tasks.append((me, f"t{i}"))
                    elif kind == "settle" and tasks:
                        owner, task = tasks[which % len(tasks)]
                        # an odd pick pays another agent, an even one is metered use (spent)
                        payee = other.agent_id if which % 2 else None
                        await owner.settle_spend(task, {"ru": amount // 2}, payee=payee)
                    elif kind == "cancel" and tasks:
                        owner, task = tasks[which % len(tasks)]
                        await owner.cancel_spend(task)
                    elif kind == "revoke" and (mine or funded):
                        target = (mine + [None])[which % (len(mine) + 1)]
                        tid = target.id if target is not None else (funded or [bid])[0]
                        if tid is not None:
                            await me.revoke_budget(to_text("budget", tid))
                    elif kind == "wait":
                        t[0] += amount
                except BudgetError:
                    pass  # a refusal writes nothing; the books below say so
                total, bad = books(node)
                assert not bad, f"unbalanced books after {kind}: {bad}"
                assert total == minted, f"after {kind}: {total} != minted {minted}"

    trio.run(main)


@SETTINGS
@given(
    limits=st.lists(
        st.tuples(st.integers(0, 10), st.sampled_from(["memory.*", "rose_forest.*"])),
        min_size=1,
        max_size=5,
    )
)
def test_refine_pays_with_the_first_budget_that_allows_and_covers_it(limits):
    async def main():
        async with LocalNode.open(clock=lambda: T0) as node:
            alice, bob = await node.new_agent(), await node.new_agent()
            root = await node.steward.mint_budget(
                {"ru": 500}, holder=alice.agent_id, schema={"can_delegate": True}
            )
            cards = [
                await alice.delegate_budget(
                    root, holder=bob.agent_id, max_spend={"ru": ru}, schema={"ops": [ops]}
                )
                if ru
                else None
                for ru, ops in limits
            ]
            offered = [c for c in cards if c is not None]
            if not offered:
                return
            expected = next(
                (c for c, (ru, ops) in zip(cards, limits) if c and ru >= 3 and ops == "memory.*"),
                None,
            )
            seq = bob._cell.state.seq
            try:
                r = await bob.refine(instructions=[TRIPLE], budgets=offered)
            except BudgetError as e:
                assert expected is None
                assert [a["budget"] for a in e.attempts] == offered
                assert bob._cell.state.seq == seq  # nothing written
            else:
                assert r.authorized_by == expected

    trio.run(main)
