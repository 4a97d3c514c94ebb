"""Mixed-fault scenarios drawn from a seed, for sweeps: each seed gets its own latency, loss,
duplication, reordering, partitions (symmetric, asymmetric, isolate-one, overlapping), churn,
clock skew, rogue nodes and, for one seed in three, a short budget window that honest agents
roll through node 0's time witness (and, when asked, Byzantine nodes, or the time and identity
attackers: an invite network with backdating and sybil nodes), so a sweep explores schedules
nobody wrote down."""

from __future__ import annotations

import random

from .config import Partition, SimConfig

ROGUE_MODES = ("skip_preflight", "forge_budget", "wrong_cost", "fork", "bad_signature")
TRUST_MODES = ("backdate", "sybil")  # issue 15's attackers, on an invite network
GOV_MODES = ("double_vote", "grant_without_quorum", "overgrant")  # issue 18's cheats
WINDOWS = (300, 600, 900)  # seconds: several rolls in a half-hour seed


def _partition(rng: random.Random, start: float, end: float, nodes: int) -> Partition:
    a = rng.uniform(start, end - 120)
    b = min(end, a + rng.uniform(60, 900))
    kind = rng.choice(("split", "split3", "oneway", "isolate"))
    if kind == "split":
        x = rng.randint(20, 80)
        body = f"{x}/{100 - x}"
    elif kind == "split3" and nodes >= 6:
        body = "30/30/40"
    elif kind == "oneway":
        x = rng.randint(20, 80)
        body = f"{x}>{100 - x}"
    else:
        body = "isolate"
    return Partition.parse(f"{body}@{a:.0f}s-{b:.0f}s")


def mixed(
    seed: int,
    nodes: int = 8,
    hours: float = 0.5,
    warmup: float = 60.0,
    byzantine: bool = False,
    trust: bool = False,
    economy: bool = False,
    governance: bool = False,
) -> SimConfig:
    """`byzantine`: also one or two nodes that misbehave on the wire; `trust`: one or two more
    rogue nodes, in the modes backdate and sybil (the first rogue nodes get them, the rest keep
    the budget modes), on an invite network (or, for some lone backdaters, an open one);
    `economy`: budgets as authorizers beside the workload (sims/economy.py), and, on one seed in
    two with rogue nodes, the first of them spends past its cards (overspend_budget);
    `governance`: the economy with governance (sims/governance.py), and on three seeds in four
    with rogue nodes, the first of them cheats on governance (one of GOV_MODES). Each
    is drawn from a stream of its own after everything else, as is the window, so a seed's
    other faults are the same with them on or off."""
    rng = random.Random(f"{seed}:mixed")
    end = hours * 3600
    latency = rng.choice((0.005, 0.05, 0.15))
    rogue = rng.randint(0, max(0, min(3, nodes // 3)))
    cfg = SimConfig(
        seed=seed,
        nodes=nodes,
        agents=2 * nodes,
        hours=hours,
        warmup=warmup,
        latency=latency,
        jitter=round(latency * rng.choice((0, 0.2, 0.5)), 4),
        loss=rng.choice((0.0, 0.005, 0.01, 0.03)),
        dup=rng.choice((0.0, 0.01, 0.03)),
        reorder=rng.random() < 0.5,
        churn=rng.choice((0.0, 0.1, 0.3, 0.6)),
        skew=rng.choice((0.0, 1.0, 5.0)),
        rogue=rogue,
        rogue_modes=tuple(rng.sample(ROGUE_MODES, len(ROGUE_MODES))),
        partitions=[_partition(rng, warmup, end, nodes) for _ in range(rng.randint(0, 3))],
    )
    if random.Random(f"{seed}:mixed:window").random() < 1 / 3:
        cfg.window = random.Random(f"{seed}:mixed:window:s").choice(WINDOWS)
    if trust and nodes >= 4:
        rt = random.Random(f"{seed}:mixed:trust")
        extra = rt.randint(1, min(2, nodes - 2 - rogue)) if nodes - 2 - rogue >= 1 else 0
        new = tuple(rt.sample(TRUST_MODES, 2))[:extra]
        # a lone backdater attacks an open network, as in the issue (a genesis days old, its
        # windows backfilled); on an invite network its genesis is witnessed, so it can only
        # open windows early
        cfg.membrane = "open" if new == ("backdate",) and rt.random() < 0.5 else "invite"
        cfg.rogue = rogue = rogue + extra
        cfg.rogue_modes = new + cfg.rogue_modes
    if economy:
        cfg.economy = True
        if rogue and random.Random(f"{seed}:mixed:economy").random() < 0.5:
            cfg.rogue_modes = ("overspend_budget",) + cfg.rogue_modes
    if governance:
        cfg.economy = cfg.governance = True
        rg = random.Random(f"{seed}:mixed:governance")
        if rogue and rg.random() < 0.75:
            cfg.rogue_modes = (rg.choice(GOV_MODES),) + cfg.rogue_modes
    if byzantine:
        room = nodes - 1 - rogue
        cfg.byzantine = random.Random(f"{seed}:mixed:byzantine").randint(min(1, room), min(2, room))
    return cfg
