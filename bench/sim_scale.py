"""Simulator scale benchmark (run by hand; not a timed test).

    python -m bench.sim_scale                 # growth curve 25/50/100/200 nodes x 1 simulated h
    python -m bench.sim_scale --nodes 200     # one size
    python -m bench.sim_scale --sweep 600     # as many mixed-fault seeds as fit in 600 s wall
    python -m bench.sim_scale --profile 50    # cProfile one run, top functions by own time

Run with PYTHONHASHSEED=0 to make traces comparable across processes.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time

from sims import Partition, SimConfig, run


def scale(sizes, hours, loss, latency, jitter, agents_per_node):
    rows = []
    for n in sizes:
        cfg = SimConfig(seed=7, nodes=n, agents=agents_per_node * n, hours=hours, loss=loss,
                        latency=latency, jitter=jitter)
        r = run(cfg)
        row = {k: r[k] for k in ("nodes", "agents", "wall_seconds", "sim_seconds", "writes",
                                 "convergence_p50_s", "convergence_p99_s", "messages_per_write",
                                 "bytes_per_write", "converged")}
        row["violations"] = len(r["invariant_violations"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def sweep(budget_s: float, nodes: int):
    t0 = time.perf_counter()
    seed, runs, bad = 0, 0, []
    violations = 0
    while time.perf_counter() - t0 < budget_s:
        seed += 1
        cfg = SimConfig(seed=seed, nodes=nodes, agents=2 * nodes, hours=0.5, warmup=60,
                        loss=0.01, dup=0.01, reorder=True, skew=5, churn=0.2, rogue=2,
                        partitions=[Partition.parse("50/50@5m-12m"),
                                    Partition.parse("isolate@15m-20m"),
                                    Partition.parse("30>70@22m-26m")])
        try:
            r = run(cfg)
        except Exception as e:  # a crash is a failed seed, reported with its replay command
            runs += 1
            bad.append({"seed": seed, "first": f"crashed: {e!r}"[:300],
                        "replay": cfg.replay_command()})
            continue
        runs += 1
        violations += len(r["invariant_violations"])
        if not r["ok"]:
            bad.append({"seed": seed, "first": (r["invariant_violations"] or ["not converged"])[0],
                        "replay": r["replay"]})
    out = {"seeds": runs, "nodes": nodes, "violations": violations, "failed": len(bad),
           "wall_seconds": round(time.perf_counter() - t0, 1), "failures": bad[:20]}
    print(json.dumps(out, indent=2))
    return out


def profile(nodes: int):
    pr = cProfile.Profile()
    pr.enable()
    r = run(SimConfig(seed=7, nodes=nodes, agents=2 * nodes, hours=1))
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25)
    print(s.getvalue())
    print({k: r[k] for k in ("wall_seconds", "writes", "messages_per_write")})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, nargs="*", default=[25, 50, 100, 200])
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--loss", type=float, default=0.01)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--jitter", type=float, default=0.02)
    p.add_argument("--agents-per-node", type=int, default=2)
    p.add_argument("--sweep", type=float, help="wall-clock budget (s) for a mixed-fault sweep")
    p.add_argument("--sweep-nodes", type=int, default=8)
    p.add_argument("--profile", type=int, metavar="NODES")
    a = p.parse_args()
    if a.profile:
        return profile(a.profile)
    if a.sweep:
        return sweep(a.sweep, a.sweep_nodes)
    scale(a.nodes, a.hours, a.loss, a.latency, a.jitter, a.agents_per_node)


if __name__ == "__main__":
    main()
