"""Cross-check the simulator against real libp2p: one scenario (sims/scenarios/crosscheck.toml
by default) run on the simulated network and on real hosts on 127.0.0.1, reports side by side.

    python -m bench.sim_crosscheck [--seed 1] [--scenario crosscheck]   # ~4 min of wall time

What should agree: both converge with no invariant violation and every cheater warranted; the
workload's writes and refusals are nearly equal (an agent's own budget decides a refusal, but a
warrant or a grant may land a moment earlier or later in real time); messages per write are of
one order. Exits 1 if the real run breaks an invariant the simulated one held."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

KEYS = (
    "ok",
    "converged",
    "invariant_violations",
    "writes",
    "honest_writes",
    "refusals",
    "grants",
    "rogue_agents",
    "warranted_rogue_agents",
    "convergence_p50_s",
    "convergence_p99_s",
    "messages_per_write",
    "bytes_per_write",
    "wall_seconds",
    "errors",
)


def run(scenario: str, seed: int, transport: str) -> dict:
    # a process each: libp2p's import is its own
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sims",
            "--scenario",
            scenario,
            "--seed",
            str(seed),
            "--json",
            "--transport",
            transport,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if not out.stdout.strip():
        raise SystemExit(f"{transport} run produced no report:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scenario", default="crosscheck")
    a = p.parse_args()
    sim = run(a.scenario, a.seed, "sim")
    real = run(a.scenario, a.seed, "libp2p")
    print(f"{'':24} {'simulated':>22} {'libp2p':>22}")
    for k in KEYS:
        s, r = sim.get(k), real.get(k)
        if k == "invariant_violations":
            s, r = len(s), len(r)
        print(f"{k:24} {str(s):>22} {str(r):>22}")
    for v in real["invariant_violations"][:10]:
        print("libp2p ! " + v)
    return 0 if real["ok"] or not sim["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
