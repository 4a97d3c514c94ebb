"""Pure budget checks per second: node.core.budget.charge(state, cost, ts, dna) in a loop.

Measured (chained, as the writer and the validator use it):

    state = charge(state, cost, ts, dna)     # 1 mRU per check; a fresh state every batch

Floor: the same loop shape doing only the integer compare-and-subtract that is the
heart of a charge:

    if cost > rem: raise ...
    rem -= cost

Also reported: `roll` alone, charge on a fixed state (no chaining), and "plain_fn": the
same roll+charge logic as one plain function over a tuple (what a rewrite could reach).
Goal >= 200,000/s;
the ratio charge/floor says how much the dataclass-and-call overhead costs.

    python bench/budget_checks.py [--checks 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from node.core import budget
from node.core.dna import Dna
from zomes import ROSE_FOREST

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import START_S, emit, env, log, perf  # noqa: E402

GOAL_RATE = 200_000
BATCH = 90_000  # < 100,000 mRU base budget at 1 mRU a check, so no charge ever refuses


def charge_chained(n: int, dna: Dna) -> float:
    charge = budget.charge
    ts0 = START_S * 1_000_000
    t = perf()
    done = 0
    while done < n:
        state = budget.initial(ts0, dna)
        ts = ts0 + 1
        for _ in range(min(BATCH, n - done)):
            state = charge(state, 1, ts, dna)
        done += BATCH
    return perf() - t


def charge_fixed(n: int, dna: Dna) -> float:
    charge = budget.charge
    ts0 = START_S * 1_000_000
    state = budget.initial(ts0, dna)
    cost, ts = dna.cost("transmit_understanding"), ts0 + 1
    t = perf()
    for _ in range(n):
        charge(state, cost, ts, dna)
    return perf() - t


def roll_only(n: int, dna: Dna) -> float:
    roll = budget.roll
    ts0 = START_S * 1_000_000
    state = budget.initial(ts0, dna)
    ts = ts0 + 1
    t = perf()
    for _ in range(n):
        roll(state, ts, dna)
    return perf() - t


def floor(n: int, dna: Dna) -> float:
    t = perf()
    done = 0
    while done < n:
        rem = dna.base_mru
        cost = 1
        for _ in range(min(BATCH, n - done)):
            if cost > rem:
                raise budget.InsufficientRU(cost, rem, 0, 0)
            rem -= cost
        done += BATCH
    return perf() - t


def _plain_charge(state: tuple, cost: int, ts: int, window_us: int) -> tuple:
    ws, rem, used = state
    if ts >= ws + window_us:
        ws, rem, used = ts, 100_000, 0
    if cost > rem:
        raise budget.InsufficientRU(cost, rem, 0, 0)
    return ws, rem - cost, used + cost


def floor_call(n: int, dna: Dna) -> float:
    """Not the floor, a reference point: the same logic as one plain function over a tuple."""
    window_us = dna.window_us
    ts0 = START_S * 1_000_000
    t = perf()
    done = 0
    while done < n:
        state = (ts0, dna.base_mru, 0)
        ts = ts0 + 1
        for _ in range(min(BATCH, n - done)):
            state = _plain_charge(state, 1, ts, window_us)
        done += BATCH
    return perf() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checks", type=int, default=450_000, help="per measurement")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    dna = Dna.for_app(ROSE_FOREST)
    cases = {
        "floor": floor,
        "charge": charge_chained,
        "charge_fixed": charge_fixed,
        "roll": roll_only,
        "plain_fn": floor_call,
    }
    for f in cases.values():
        f(20_000, dna)  # warm-up
    rates = {k: [] for k in cases}
    for r in range(a.rounds):
        names = list(cases) if r % 2 == 0 else list(reversed(cases))
        for k in names:
            rates[k].append(a.checks / cases[k](a.checks, dna))
        log(
            f"  round {r + 1}/{a.rounds}: "
            + "  ".join(f"{k} {rates[k][-1]:12,.0f}/s" for k in cases)
        )
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["charge"] / med["floor"]
    emit(
        {
            "bench": "budget_checks",
            "rate": round(med["charge"]),
            "floor": round(med["floor"]),
            "ratio": round(ratio, 4),
            "charge_fixed_rate": round(med["charge_fixed"]),
            "roll_rate": round(med["roll"]),
            "plain_fn_rate": round(med["plain_fn"]),
            "ns_per_charge": round(1e9 / med["charge"], 1),
            "ns_per_floor_op": round(1e9 / med["floor"], 1),
            "goal_rate": GOAL_RATE,
            "meets_rate": med["charge"] >= GOAL_RATE,
            "rounds": {k: [round(x) for x in v] for k, v in rates.items()},
            "env": env(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
