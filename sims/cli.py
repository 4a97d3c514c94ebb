"""`budgetnode sim`: run the network simulation from the command line.

Register it in node/cli.py with::

    from sims.cli import add_parser as add_sim_parser
    add_sim_parser(sub)

It sets ``run`` to an async function (node/cli.py runs ``trio.run(args.run, args)``); the
simulation itself needs its own trio run on a MockClock, so it runs in a worker thread. The
standalone entry point is ``python -m sims ...`` (same options).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from node.core.dna import MEMBRANES
from node.net.rogue import KNOWN

from .config import Partition, SimConfig, load_scenario, parse_duration

PARTITION_HELP = (
    "a partition in simulated time, repeatable: 50/50@2h-4h (symmetric groups, any "
    "number: 20/30/50@1h-90m), 30>70@1h-2h (asymmetric: the first 30%% cannot reach "
    "the other 70%%), isolate@1h-2h or isolate:5@1h-2h (one node cut off)"
)


def _seed_range(text: str) -> list[int]:
    a, sep, b = text.partition("-")
    lo, hi = int(a), int(b) if sep else int(a)
    if hi < lo:
        raise argparse.ArgumentTypeError("--seeds A-B needs A <= B")
    return list(range(lo, hi + 1))


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = SimConfig()
    p.add_argument("--nodes", type=int, help=f"nodes (default {d.nodes})")
    p.add_argument("--agents", type=int, help=f"agents, spread over the nodes (default {d.agents})")
    p.add_argument(
        "--hours", type=float, help=f"simulated hours of workload and faults (default {d.hours:g})"
    )
    p.add_argument("--seed", type=int, help="the seed: same seed, same run (default 1)")
    p.add_argument(
        "--seeds", type=_seed_range, metavar="A-B", help="sweep these seeds and summarise"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--plot", metavar="OUT.png", help="draw convergence and RU over time (matplotlib)"
    )
    p.add_argument(
        "--latency", type=parse_duration, help="one-way latency, e.g. 50ms (default 50ms)"
    )
    p.add_argument(
        "--jitter", type=parse_duration, help="+- uniform jitter, e.g. 20ms (default 20ms)"
    )
    p.add_argument("--loss", type=float, help="probability a request or a reply is lost")
    p.add_argument("--dup", type=float, help="probability a request is delivered twice")
    p.add_argument(
        "--reorder",
        action="store_true",
        default=None,
        help="also hold back 10%% of messages by up to 5x the latency",
    )
    p.add_argument("--partition", action="append", type=Partition.parse, help=PARTITION_HELP)
    p.add_argument(
        "--churn",
        type=float,
        help="node leave/crash events per node per simulated hour (each node restarts "
        "from its store 30 s-10 min later)",
    )
    p.add_argument("--skew", type=parse_duration, help="each node's clock is off by up to +-this")
    p.add_argument("--rogue", type=int, help="adversarial nodes (never node 0)")
    p.add_argument(
        "--rogue-mode",
        "--rogue-modes",
        dest="rogue_modes",
        action="append",
        metavar="MODE[,MODE...]",
        help="the rogue nodes' modes, cycled over them; repeatable or a comma list (default "
        "skip_preflight,forge_budget,wrong_cost,fork; known: " + ", ".join(KNOWN) + ")",
    )
    p.add_argument(
        "--membrane",
        choices=MEMBRANES,
        help="the network's membrane (default open); invite: node 0's steward invites each "
        "honest agent, and a sybil node's uninvited agents are refused",
    )
    p.add_argument(
        "--window",
        type=parse_duration,
        help="the DNA's budget window (default 1 day), e.g. 10m: honest agents open each next "
        "window with node 0's time witness; cut off from it, a write that needs the next "
        "window is refused (E_NO_WITNESS)",
    )
    p.add_argument(
        "--defer",
        action="store_true",
        default=None,
        help="heavy agents write with defer=True: a write refused for lack of RU waits in its "
        "node's queue for the agent's window or a grant (the report counts deferred, "
        "deferred_run, deferred_refused)",
    )
    p.add_argument(
        "--byzantine",
        type=int,
        metavar="K",
        help="nodes that misbehave on the wire: malformed, truncated, oversized, "
        "replayed or other-network messages, slow or no answers, request floods "
        "(never node 0, never a --rogue node); an honest node that crashes "
        "fails the run (honest_node_crashes)",
    )
    p.add_argument(
        "--economy",
        action="store_true",
        default=None,
        help="budgets as authorizers beside the workload: node 0's steward mints, holders fund "
        "and delegate cards across nodes, agents refine paid by budgets, commit, settle, cancel "
        "or let holds expire, funders revoke; the ledger's invariants are checked "
        "(ledger_violations); with --rogue-mode overspend_budget, rogue agents spend past "
        "their cards",
    )
    p.add_argument(
        "--governance",
        action="store_true",
        default=None,
        help="governance beside the economy (which it turns on), on a DNA with a second resource "
        "(llm_tokens.large) and every agent a voter, quorum 3: pools minted to proposers, "
        "proposals for agents and records citing evidence, votes from other nodes, endorsements, "
        "grants, token holds settled from granted envelopes; checked per resource "
        "(ledger_violations); with --rogue-modes double_vote, grant_without_quorum or overgrant, "
        "rogue agents cheat on governance",
    )
    p.add_argument(
        "--transport",
        choices=("sim", "libp2p"),
        help="sim (default): the seeded simulated network on virtual time; libp2p: the "
        "same scenario on real libp2p hosts on 127.0.0.1 in real time, to "
        "cross-check the simulator (no loss, dup, reorder or partitions there)",
    )
    p.add_argument(
        "--scenario",
        metavar="FILE",
        help="a TOML scenario (sims/scenarios/*.toml); command-line options override it",
    )
    p.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar even when stderr is not a terminal",
    )
    for k in (
        "r",
        "gossip-interval",
        "publish-interval",
        "request-timeout",
        "actions-per-agent-hour",
        "grants-per-hour",
        "economy-per-hour",
        "governance-per-hour",
        "warmup",
        "deadline",
    ):
        p.add_argument(
            "--" + k,
            type=int
            if k == "r"
            else parse_duration
            if k
            not in (
                "actions-per-agent-hour",
                "grants-per-hour",
                "economy-per-hour",
                "governance-per-hour",
            )
            else float,
            help=argparse.SUPPRESS,
        )
    return p


def config_from_args(args) -> SimConfig:
    over = {}
    if args.scenario:
        path = args.scenario
        if not os.path.exists(path):
            here = os.path.join(os.path.dirname(__file__), "scenarios", path)
            path = here if os.path.exists(here) else here + ".toml"
        try:
            over.update(load_scenario(path))
        except ValueError as e:
            raise SystemExit(f"budgetnode sim: {e}") from None
    for k in (
        "nodes",
        "agents",
        "hours",
        "seed",
        "latency",
        "jitter",
        "loss",
        "dup",
        "reorder",
        "churn",
        "skew",
        "rogue",
        "byzantine",
        "membrane",
        "window",
        "defer",
        "r",
        "gossip_interval",
        "publish_interval",
        "request_timeout",
        "actions_per_agent_hour",
        "grants_per_hour",
        "economy_per_hour",
        "governance_per_hour",
        "warmup",
        "deadline",
        "transport",
        "economy",
        "governance",
    ):
        v = getattr(args, k, None)
        if v is not None:
            over[k] = v
    if args.partition:
        over["partitions"] = list(args.partition)
    if args.rogue_modes:
        over["rogue_modes"] = tuple(m for arg in args.rogue_modes for m in arg.split(",") if m)
    try:
        cfg = SimConfig(**over)
    except ValueError as e:
        raise SystemExit(f"budgetnode sim: {e}") from None
    if cfg.nodes < 1 or cfg.agents < 0:
        raise SystemExit("--nodes must be at least 1 and --agents at least 0")
    if cfg.byzantine < 0 or cfg.rogue + cfg.byzantine > cfg.nodes - 1:
        raise SystemExit("--rogue plus --byzantine must leave node 0 honest (at most --nodes - 1)")
    if cfg.transport == "libp2p":
        from .realnet import check_config

        try:
            check_config(cfg)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    return cfg


class Progress:
    def __init__(self, label: str = ""):
        self.label = label
        self.t0 = time.perf_counter()

    def __call__(self, sim, now: float, total: float) -> None:
        frac = min(1.0, now / total) if total else 1.0
        bar = "#" * int(frac * 30)
        phase = sim.phase if sim.phase != "faults" else ""
        sys.stderr.write(
            f"\r{self.label}[{bar:<30}] {frac * 100:5.1f}% sim {now / 3600:5.2f} h  "
            f"writes {sim.writes + sim.rogue_writes}  refusals {sim.workload.refusals}"
            f"  violations {len(sim.violations)}  wall {time.perf_counter() - self.t0:5.1f} s"
            f" {phase:<9}"
        )
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def _human(r: dict) -> str:
    lines = [
        f"seed {r['seed']}: {r['nodes']} nodes, {r['agents']} agents, "
        f"{r['sim_seconds'] / 3600:.2f} simulated h in {r['wall_seconds']:.1f} s wall",
        f"  writes {r['writes']} (honest {r['honest_writes']}), refusals {r['refusals']}, "
        f"grants {r['grants']}, errors {r['errors'] or 'none'}",
        f"  convergence p50 {r['convergence_p50_s']} s, p99 {r['convergence_p99_s']} s; "
        f"{r['messages_per_write']} messages and {r['bytes_per_write']:.0f} bytes per write",
        f"  rogue agents {r['rogue_agents']}, warranted everywhere {r['warranted_rogue_agents']}",
        f"  byzantine nodes {r['byzantine_nodes']}, honest node crashes {r['honest_node_crashes']}",
        f"  membrane {r['membrane']}, window {r['window_s']} s, windows opened "
        f"{r['windows_opened']}, refusals by code {r['refusals_by_code'] or 'none'}; rogue modes "
        f"{','.join(r['rogue_modes']) or 'none'}; sybil agents {r['sybil_agents']} (held by an "
        f"honest node: {r['sybil_accepted']}), backdated actions held {r['backdated_accepted']}",
        f"  deferred {r['deferred']}: ran {r['deferred_run']}, refused when run "
        f"{r['deferred_refused']}",
        f"  converged: {r['converged']}; invariant violations: {len(r['invariant_violations'])}"
        f"; ledger violations: {r['ledger_violations']}",
        f"  trace {r['trace_hash'] or 'none: a real network run is not reproducible'}",
    ]
    e = r.get("economy")
    if e:
        b = e["books"]
        lines.append(f"  economy: {_counts(e['done']) or 'nothing done'}")
        lines.append(f"    refused: {_counts(e['refused']) or 'none'}")
        if b:
            lines.append(
                f"    books (RU): minted {b['minted']}, held {b['held']}, in transit "
                f"{b['in_transit']}, sent outside {b['sent_outside']}, taken from outside "
                f"{b['taken_from_outside']}; holds {_counts(b['holds']) or 'none'}; "
                f"{b.get('paid_writes', 0)} paid writes traced to a mint"
            )
        if e.get("governance") is not None:
            g = dict(e["governance"])
            rogues = g.pop("rogue_warrants", {})
            lines.append(f"  governance: {_counts(g) or 'nothing done'}")
            for mode, reasons in rogues.items():
                lines.append(f"    {mode} agents, by warrant: {_counts(reasons)}")
            if b:
                lines.append(
                    f"    proposals {b.get('proposals', 0)} (granted "
                    f"{b.get('proposals_granted', 0)}, approved {b.get('proposals_approved', 0)}, "
                    f"rejected {b.get('proposals_rejected', 0)}, deferred "
                    f"{b.get('proposals_deferred', 0)}, open {b.get('proposals_open', 0)}), "
                    f"votes {b.get('votes', 0)}, grants {b.get('grants', 0)}, endorsements "
                    f"taken {b.get('endorsements_taken', 0)}"
                )
    for v in r["invariant_violations"][:20]:
        lines.append(f"  ! {v}")
    if r.get("replay"):
        lines.append(f"  replay: {r['replay']}")
    return "\n".join(lines)


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def plot(report: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib (pip install matplotlib)") from None
    tl = report["_timeline"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    hours = [t / 3600 for t, *_ in tl]
    a1.plot(hours, [x[1] for x in tl], label="writes not yet held by all authorities")
    a1.plot(hours, [x[2] for x in tl], label="oldest of them (s)")
    a1.set_ylabel("convergence")
    a1.legend(loc="upper left", fontsize=8)
    a2.plot(hours, [x[3] for x in tl], color="tab:green")
    a2.set_ylabel("mean remaining RU (honest agents)")
    a2.set_xlabel("simulated hours")
    fig.suptitle(
        f"budgetnode sim seed {report['seed']}: {report['nodes']} nodes, "
        f"{report['agents']} agents, p99 {report['convergence_p99_s']} s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def run_cli(args) -> int:
    from .sim import run

    cfg = config_from_args(args)
    show = args.progress or sys.stderr.isatty()
    if args.seeds:
        return sweep(cfg, args.seeds, args, show)
    prog = Progress() if show else None
    try:
        r = run(cfg, progress=prog)
    finally:
        if prog:
            prog.done()
    if args.plot:
        plot(r, args.plot)
    print(json.dumps(_public(r), indent=2) if args.json else _human(r))
    if not r["ok"]:
        print(f"FAILED; replay with: {r['replay']}", file=sys.stderr)
        return 1
    return 0


def sweep(cfg: SimConfig, seeds: list[int], args, show: bool) -> int:
    from .sim import run

    t0 = time.perf_counter()
    failed, rows = [], []
    for i, seed in enumerate(seeds):
        c = cfg.replace(seed=seed)
        r = run(c)
        rows.append(r)
        if not r["ok"]:
            failed.append(r)
        if show:
            sys.stderr.write(
                f"\rseed {seed} ({i + 1}/{len(seeds)}): {len(failed)} failed, "
                f"{sum(len(x['invariant_violations']) for x in rows)} violations, "
                f"{time.perf_counter() - t0:.0f} s   "
            )
            sys.stderr.flush()
    if show:
        sys.stderr.write("\n")
    p99 = [r["convergence_p99_s"] for r in rows if r["convergence_p99_s"] is not None]
    summary = {
        "seeds": len(rows),
        "first": seeds[0],
        "last": seeds[-1],
        "nodes": cfg.nodes,
        "failed": [r["seed"] for r in failed],
        "violations": sum(len(r["invariant_violations"]) for r in rows),
        "ledger_violations": sum(r["ledger_violations"] for r in rows),
        "not_converged": sum(1 for r in rows if not r["converged"]),
        "writes": sum(r["writes"] for r in rows),
        "refusals": sum(r["refusals"] for r in rows),
        "rogue_agents": sum(r["rogue_agents"] for r in rows),
        "warranted_rogue_agents": sum(r["warranted_rogue_agents"] for r in rows),
        "honest_node_crashes": sum(r["honest_node_crashes"] for r in rows),
        "worst_convergence_p99_s": max(p99) if p99 else None,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "replay": [r["replay"] for r in failed][:20],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['seeds']} seeds ({summary['first']}-{summary['last']}), {cfg.nodes} nodes: "
            f"{len(failed)} failed, {summary['violations']} violations, "
            f"{summary['not_converged']} not converged, worst p99 "
            f"{summary['worst_convergence_p99_s']} s, {summary['wall_seconds']} s wall"
        )
        for r in failed[:20]:
            print(f"  seed {r['seed']}: {(r['invariant_violations'] or ['not converged'])[0]}")
            print(f"    replay: {r['replay']}")
    return 1 if failed else 0


async def _run_async(args) -> None:
    import trio

    code = await trio.to_thread.run_sync(run_cli, args)
    if code:
        raise SystemExit(code)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sim",
        help="seeded network simulation of many real nodes",
        description=__doc__.split("\n\n")[0] + "\n\n" + PARTITION_HELP.replace("%%", "%"),
    )
    _configure(p)
    p.set_defaults(run=_run_async)
    return p


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sims", description="budgetnode network simulation")
    _configure(p)
    args = p.parse_args(argv)
    return run_cli(args)
