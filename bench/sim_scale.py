"""Simulator scale benchmark (run by hand; not a timed test).

    python -m bench.sim_scale                 # growth curve 25/50/100/200 nodes x 1 simulated h
    python -m bench.sim_scale --nodes 200     # one size
    python -m bench.sim_scale --sweep 600     # as many mixed-fault seeds as fit in 600 s wall
    python -m bench.sim_scale --sweep-seeds 1-5000 --out a.jsonl   # a shard of a long sweep
    python -m bench.sim_scale --sweep-seeds 1-50 --byzantine       # ... with Byzantine nodes too
    python -m bench.sim_scale --sweep-seeds 1-50 --trust           # ... with backdate and sybil
    python -m bench.sim_scale --sweep-seeds 1-50 --economy         # ... with budgets (issue 16)
    python -m bench.sim_scale --sweep-seeds 1-50 --governance      # ... and governance (issue 18)
    python -m bench.sim_scale --profile 50    # cProfile one run, top functions by own time

A run is a function of its seed alone (not of PYTHONHASHSEED): traces compare across processes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time

from sims import SimConfig, run
from sims.mixed import mixed


def scale(sizes, hours, loss, latency, jitter, agents_per_node):
    rows = []
    for n in sizes:
        cfg = SimConfig(
            seed=7,
            nodes=n,
            agents=agents_per_node * n,
            hours=hours,
            loss=loss,
            latency=latency,
            jitter=jitter,
        )
        r = run(cfg)
        row = {
            k: r[k]
            for k in (
                "nodes",
                "agents",
                "wall_seconds",
                "sim_seconds",
                "writes",
                "convergence_p50_s",
                "convergence_p99_s",
                "messages_per_write",
                "bytes_per_write",
                "converged",
            )
        }
        row["violations"] = len(r["invariant_violations"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def sweep(
    budget_s: float | None,
    nodes: int,
    seeds: range,
    out: str | None,
    byzantine: bool = False,
    trust: bool = False,
    economy: bool = False,
    governance: bool = False,
):
    """Mixed-fault seeds (sims/mixed.py) in order until the range or the wall budget runs out;
    each result is appended to `out` (JSON lines) as it finishes, so shards can run in
    parallel processes and a long sweep can be stopped at any point."""
    t0 = time.perf_counter()
    runs, bad, violations = 0, [], 0
    sink = open(out, "a") if out else None
    for seed in seeds:
        if budget_s is not None and time.perf_counter() - t0 >= budget_s:
            break
        cfg = mixed(
            seed, nodes, byzantine=byzantine, trust=trust, economy=economy, governance=governance
        )
        try:
            r = run(cfg)
            row = {
                "seed": seed,
                "ok": r["ok"],
                "violations": len(r["invariant_violations"]),
                "first": (r["invariant_violations"] or [""])[0][:300],
                "honest_node_crashes": r["honest_node_crashes"],
                "rogue_modes": r["rogue_modes"],
                "window_s": r["window_s"],
                "windows_opened": r["windows_opened"],
                "refusals_by_code": r["refusals_by_code"],
                **{
                    k: r[k]
                    for k in (
                        "sybil_agents",
                        "sybil_accepted",
                        "sybil_warranted",
                        "backdated_accepted",
                    )
                },
                "rogue_agents": r["rogue_agents"],
                "warranted_rogue_agents": r["warranted_rogue_agents"],
                "ledger_violations": r["ledger_violations"],
                "economy": r["economy"] and r["economy"]["done"],
                "governance": r["economy"] and r["economy"]["governance"],
                "books": r["economy"]
                and {
                    k: v
                    for k, v in r["economy"]["books"].items()
                    if k.startswith(("proposals", "grants", "votes", "minted", "held"))
                },
                "wall_seconds": r["wall_seconds"],
                "replay": cfg.replay_command(),
            }
        except Exception as e:  # a crash is a failed seed, reported with its replay command
            row = {
                "seed": seed,
                "ok": False,
                "violations": 0,
                "first": f"crashed: {e!r}"[:300],
                "wall_seconds": None,
                "replay": cfg.replay_command(),
            }
        runs += 1
        violations += row["violations"]
        if not row["ok"]:
            bad.append(row)
        if sink:
            sink.write(json.dumps(row) + "\n")
            sink.flush()
    out_ = {
        "seeds": runs,
        "nodes": nodes,
        "violations": violations,
        "failed": len(bad),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "failures": bad[:20],
    }
    print(json.dumps(out_, indent=2))
    return out_


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
    p.add_argument("--sweep-seeds", metavar="A-B", help="sweep exactly these seeds")
    p.add_argument("--out", help="append one JSON line per seed to this file")
    p.add_argument(
        "--byzantine",
        action="store_true",
        help="the sweep's seeds also get one or two Byzantine nodes (sims/byzantine.py)",
    )
    p.add_argument(
        "--trust",
        action="store_true",
        help="the sweep's seeds run an invite network with backdate and sybil nodes (issue 15)",
    )
    p.add_argument(
        "--economy",
        action="store_true",
        help="the sweep's seeds run the budget economy (sims/economy.py), some with an "
        "overspend_budget rogue",
    )
    p.add_argument(
        "--governance",
        action="store_true",
        help="the sweep's seeds run the economy with governance (sims/governance.py), some "
        "with a double_vote, grant_without_quorum or overgrant rogue",
    )
    p.add_argument("--profile", type=int, metavar="NODES")
    a = p.parse_args()
    if a.profile:
        return profile(a.profile)
    if a.sweep or a.sweep_seeds:
        lo, _, hi = (a.sweep_seeds or "1-1000000000").partition("-")
        return sweep(
            a.sweep,
            a.sweep_nodes,
            range(int(lo), int(hi or lo) + 1),
            a.out,
            a.byzantine,
            a.trust,
            a.economy,
            a.governance,
        )
    scale(a.nodes, a.hours, a.loss, a.latency, a.jitter, a.agents_per_node)


if __name__ == "__main__":
    main()
