"""Shared helpers for the hand-run benchmarks: timing, the fake clock, result lines.

Every benchmark reports a RATIO against a floor measured in the same process, in the
same run, interleaved round by round, so machine speed and background load cancel out
as far as they can.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

# Benchmarks import the package under test exactly as agent code does.
START_S = 1_730_678_400  # 2024-11-04T00:00:00Z, as in the tests
DAY_S = 86_400

perf = time.perf_counter

CLOCK_HELP = (
    "wall: time.perf_counter; cpu: this process's CPU time (time.process_time), which leaves "
    "out the time other processes had the core: steadier on a shared machine"
)


def use_clock(kind: str) -> None:
    """Time every later `_common.perf()` by the wall clock or by this process's CPU time."""
    global perf
    perf = time.process_time if kind == "cpu" else time.perf_counter


# One window plus a second: a window rolls at the first event at (or, in some revisions of
# budget.roll, strictly after) its end, so a jump of exactly 86,400 s is not always enough.
WINDOW_JUMP_S = DAY_S + 1


class FakeClock:
    """Injected node clock. The benchmark advances it past a whole budget window every
    30 writes, so the 100 RU base budget never refuses (30 x 3 RU = 90 RU)."""

    def __init__(self, start: float = START_S):
        self.t = float(start)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float = WINDOW_JUMP_S) -> None:
        self.t += seconds


def timed_rate(step, seconds: float, min_ops: int = 1) -> tuple[int, float]:
    """Call step() until `seconds` have passed (at least min_ops times); (ops, elapsed)."""
    n = 0
    t0 = perf()
    deadline = t0 + seconds
    while True:
        step()
        n += 1
        if n >= min_ops and perf() >= deadline:
            break
    return n, perf() - t0


def summary(rates: list[float]) -> dict:
    return {
        "median": statistics.median(rates),
        "best": max(rates),
        "worst": min(rates),
        "rounds": [round(r, 1) for r in rates],
    }


def env() -> dict:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
    }


def bench_dir(default: str | None = None) -> str | None:
    """Where temporary databases go: $BENCH_DIR, else the system temp dir."""
    return os.environ.get("BENCH_DIR", default)


def emit(result: dict) -> None:
    """The machine-readable line run_all.py collects: the last line starting with '{'."""
    sys.stdout.write(json.dumps(result, sort_keys=False) + "\n")
    sys.stdout.flush()


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)
