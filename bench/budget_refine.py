"""A write paid by an explicit budget (`refine(..., budgets=b)`) against the same write paid by
the ambient allowance, commits per second in the same run; and the time of a lineage of depth 10.

Both paths: one agent on a LocalNode on a fresh directory writing `transmit_understanding` in a
loop (one zome dispatch, entry validation, CBOR, an Ed25519 signature, BLAKE2b, self-validation,
one SQLite transaction). The budget path adds refine's parsing, the budget's authority, balance
and reserve checks in the pre-flight and in self-validation, the batch, and a ledger row kept
with the checkpoint. The injected clock jumps a window every 30 ambient writes; the budget is
minted once, large enough for every round (the network's `mint_limit` is raised for that).
Rounds alternate the order (ABBA); the ratio is median(budget) / median(ambient). Goal 0.7.

Lineage: a funding chain root -> 9 children (each funds the next), then a refine paid by the
last; `lineage(output)` walks 11 steps back to the mint (refine, 9 funds, mint... ) — the
median time of 200 walks is reported.

    python bench/budget_refine.py [--seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

import trio

from node.sdk import LocalNode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import FakeClock, bench_dir, emit, env, log, perf, summary  # noqa: E402

GOAL_RATIO = 0.7
WRITES_PER_WINDOW = 30
DNA = {"resources": {"ru": {"mint_limit": 10**15}}}
TRIPLE = {"zome": "memory", "fn": "transmit_understanding"}


def _payload(i: int) -> dict:
    return {"subject": f"s{i % 100}", "predicate": "relates-to", "object": f"o{i}"}


async def _round(paid: bool, seconds: float, warmup: int = 50) -> tuple[int, float]:
    d = tempfile.mkdtemp(prefix="bench-refine-", dir=bench_dir())
    clock = FakeClock()
    try:
        async with LocalNode.open(path=d, clock=clock, dna=DNA) as node:
            agent = await node.new_agent()
            budget = None
            if paid:
                budget = await node.steward.mint_budget(
                    {"ru": 10**9}, holder=agent.agent_id, name="bench"
                )
            i = 0

            async def one() -> None:
                nonlocal i
                if paid:
                    await agent.refine(
                        instructions=[{**TRIPLE, "payload": _payload(i)}], budgets=budget
                    )
                else:
                    if i % WRITES_PER_WINDOW == 0:
                        clock.advance()
                    await agent.transmit_understanding(**_payload(i))
                i += 1

            for _ in range(warmup):
                await one()
            n, t0 = 0, perf()
            while perf() - t0 < seconds:
                await one()
                n += 1
            return n, perf() - t0
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def _lineage(depth: int = 10, walks: int = 200) -> dict:
    d = tempfile.mkdtemp(prefix="bench-lineage-", dir=bench_dir())
    try:
        async with LocalNode.open(path=d, clock=FakeClock(), dna=DNA) as node:
            agents = [await node.new_agent() for _ in range(depth)]
            b = await node.steward.mint_budget(
                {"ru": 1000}, holder=agents[0].agent_id, schema={"can_fund": True}
            )
            for k in range(1, depth):
                b = await agents[k - 1].fund_budget(
                    b, {"ru": 1000 - 10 * k}, holder=agents[k].agent_id, schema={"can_fund": True}
                )
            r = await agents[-1].refine(
                instructions=[{**TRIPLE, "payload": _payload(0)}], budgets=b
            )
            out = r.outputs[0]
            times = []
            steps = []
            for _ in range(walks):
                t0 = perf()
                steps = await agents[-1].lineage(out)
                times.append(perf() - t0)
            return {
                "depth": depth,
                "steps": len(steps),
                "median_ms": round(statistics.median(times) * 1000, 3),
                "worst_ms": round(max(times) * 1000, 3),
            }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    paid, ambient = [], []
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)  # ABBA
        for is_paid in order:
            n, el = trio.run(_round, is_paid, args.seconds)
            (paid if is_paid else ambient).append(n / el)
            log(f"round {r}: {'budget ' if is_paid else 'ambient'} {n / el:8.1f} commits/s")
    ratio = statistics.median(paid) / statistics.median(ambient)
    lineage = trio.run(_lineage)
    res = {
        "bench": "budget_refine",
        "env": env(),
        "budget_paid": summary(paid),
        "ambient": summary(ambient),
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL_RATIO,
        "lineage": lineage,
    }
    log(
        f"budget-paid refine / ambient write: {ratio:.2f} (goal {GOAL_RATIO}); "
        f"lineage of depth {lineage['depth']} ({lineage['steps']} steps): "
        f"{lineage['median_ms']} ms median"
    )
    emit(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
