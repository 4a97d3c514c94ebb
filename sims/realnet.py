"""The simulator's scenario on real libp2p hosts (127.0.0.1, real time), to cross-check the
simulated network: the same Simulation (workload, churn, rogue nodes, invariant checks, liveness
phase), with each node's transport a real libp2p host and trio's clock the wall clock.

Loss, duplication, reordering, latency and partitions are the simulated network's faults; here
the network is whatever loopback does, so a scenario asking for them is refused rather than run
without them. A run is not reproducible (the OS schedules the sockets): its report has no trace
hash, and is compared with the simulated run of the same scenario by outcome, not by trace."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import asynccontextmanager

import trio

from node.net.cluster import libp2p_factory

UNSUPPORTED = ("loss", "dup", "reorder", "partitions")


def check_config(cfg) -> None:
    bad = [k for k in UNSUPPORTED if getattr(cfg, k)]
    if bad:
        raise ValueError(
            f"--transport libp2p runs on the real loopback network, which has no "
            f"simulated faults: drop {', '.join(bad)} (churn, skew and rogue work)"
        )


class RealClock(trio.abc.Clock):
    """Wall time, from 0 when the run starts: the simulation's absolute times (warm-up end,
    churn moments, the workload's schedule) mean the same as on the MockClock."""

    def start_clock(self) -> None:
        self._t0 = time.perf_counter()

    def current_time(self) -> float:
        return time.perf_counter() - self._t0

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return deadline - self.current_time()


class _Counting:
    """A libp2p transport that tallies what the simulated network's stats tally."""

    def __init__(self, inner, stats: Counter):
        self._inner = inner
        self._stats = stats

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def request(self, peer: bytes, payload: bytes, timeout: float = 5.0) -> bytes:
        self._stats["requests"] += 1
        self._stats["request_bytes"] += len(payload)
        reply = await self._inner.request(peer, payload, timeout)
        self._stats["replies"] += 1
        self._stats["reply_bytes"] += len(reply)
        return reply


class Libp2pNetwork:
    """What the Simulation asks of its network, over libp2p."""

    def __init__(self):
        self.stats: Counter[str] = Counter()
        self._factory = libp2p_factory()

    @asynccontextmanager
    async def transport(self, seed: bytes, handler):
        async with self._factory(seed, handler) as t:
            yield _Counting(t, self.stats)

    def set_rules(self, rules: list) -> None:
        if rules:
            raise ValueError("partitions are simulated-network only")

    def quiet(self) -> None:
        pass

    def note(self, data: bytes) -> None:
        pass

    def trace_hash(self) -> None:
        return None
