"""Run every benchmark, each in a fresh interpreter, and print a summary table.

    python bench/run_all.py            # or: python -m bench   (from the repo root)
    python bench/run_all.py --quick    # shorter measurements, for a smoke run

Each benchmark prints its human log on stderr and one JSON line per result on stdout;
this collects the JSON lines, prints the table, and with --json also the raw lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

BENCHES = [
    ("commits.py", [], ["--seconds", "1", "--rounds", "2"]),
    ("validate.py", [], ["--actions", "2000", "--rounds", "2"]),
    ("budget_checks.py", [], ["--checks", "200000", "--rounds", "3"]),
]


def run(script: str, args: list[str]) -> tuple[list[dict], float]:
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, os.path.join(HERE, script), *args],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
    )
    if p.returncode:
        raise SystemExit(f"{script} failed with exit code {p.returncode}")
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return rows, time.perf_counter() - t


def _yes(b) -> str:
    return "yes" if b else "NO"


def table(rows: list[dict]) -> str:
    head = ("benchmark", "rate/s", "floor/s", "ratio", "goal", "met")
    lines = []
    for r in rows:
        if r["bench"] == "commits":
            name = f"commits [{r['mode']}, sync={r['synchronous']}, x{r.get('writers', 1)}]"
            goal = f"ratio>={r['goal_ratio']}, rate>={r['goal_rate']:,}"
            met = f"ratio {_yes(r['meets_ratio'])}, rate {_yes(r['meets_rate'])}"
        elif r["bench"] == "validate":
            name = f"validate [{r['actions']} actions, load+validate]"
            goal = f"ratio>={r['goal_ratio']}"
            met = _yes(r["meets_ratio"])
            lines.append(
                (name, f"{r['rate']:,.0f}", f"{r['floor']:,.0f}", f"{r['ratio']:.3f}", goal, met)
            )
            name = "validate [in-memory chain]"
            lines.append(
                (
                    name,
                    f"{r['pure_rate']:,.0f}",
                    f"{r['floor']:,.0f}",
                    f"{r['pure_ratio']:.3f}",
                    goal,
                    _yes(r["pure_ratio"] >= r["goal_ratio"]),
                )
            )
            continue
        elif r["bench"] == "budget_checks":
            name = "budget checks [charge]"
            goal = f"rate>={r['goal_rate']:,}"
            met = _yes(r["meets_rate"])
        else:
            continue
        lines.append(
            (name, f"{r['rate']:,.0f}", f"{r['floor']:,.0f}", f"{r['ratio']:.3f}", goal, met)
        )
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    fmt = lambda row: "  ".join(
        str(c).rjust(w) if 0 < i < 4 else str(c).ljust(w)  # noqa: E731
        for i, (c, w) in enumerate(zip(row, widths))
    )
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="run all benchmarks")
    p.add_argument("--quick", action="store_true", help="shorter measurements")
    p.add_argument("--json", action="store_true", help="also print the raw JSON lines")
    a = p.parse_args(argv)
    rows = []
    for script, full, quick in BENCHES:
        print(f"== {script}", file=sys.stderr, flush=True)
        got, secs = run(script, quick if a.quick else full)
        print(f"   ({secs:.1f}s wall)", file=sys.stderr, flush=True)
        rows += got
    print(table(rows))
    print("ratio = median(measured) / median(floor), same process, interleaved rounds")
    if a.json:
        for r in rows:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
