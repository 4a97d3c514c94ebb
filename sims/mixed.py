"""Mixed-fault scenarios drawn from a seed, for sweeps: each seed gets its own latency, loss,
duplication, reordering, partitions (symmetric, asymmetric, isolate-one, overlapping), churn,
clock skew and rogue nodes (and, when asked, Byzantine ones), so a sweep explores schedules nobody
wrote down."""

from __future__ import annotations

import random

from .config import Partition, SimConfig

ROGUE_MODES = ("skip_preflight", "forge_budget", "wrong_cost", "fork", "bad_signature")


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
    seed: int, nodes: int = 8, hours: float = 0.5, warmup: float = 60.0, byzantine: bool = False
) -> SimConfig:
    """`byzantine`: also one or two nodes that misbehave on the wire, drawn from a stream of their
    own after everything else, so a seed's other faults are the same with it on or off."""
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
    if byzantine:
        room = nodes - 1 - rogue
        cfg.byzantine = random.Random(f"{seed}:mixed:byzantine").randint(min(1, room), min(2, room))
    return cfg
