"""Many agents writing at once on a 10-node libp2p cluster, through each node's app socket:
writes per second that reached every authority, and the time from the call to "visible at
all authorities", against one node's commit rate measured in the same run.

  cluster  LocalCluster.open(n=10, transport="libp2p"; r=3): ten real py-libp2p hosts on
           127.0.0.1 (TCP + Noise + Yamux), each with its AppServer (hypercorn websocket).
           100 agents, 10 per node, each a RemoteAgentClient on its node's app socket
           (`node.app.client.connect`, a new agent). A write is visible when each of its
           author's R authorities (`dht.nearest` over the ten ids) holds the author's chain at
           its seq or beyond (`node._head`); a watcher wakes on every change of any node
           (`cluster.wait_changed`) and on every write returned, and checks the writes pending.
    burst    every agent calls `transmit_understanding` --burst times (default 3) as fast as
             its node answers: 300 writes at once; then until all are visible.
    closed   every agent writes, waits until that write is visible at all its authorities,
             and writes again, for --seconds (default 60; at most --writes in all per agent,
             30 by default: 90 RU of the 100 RU window, so no write waits for a window).
  single   the same 100 agents through the app socket of ONE node (libp2p transport, no
           peers: nothing to publish), --writes each as fast as the node answers: the node's
           commit rate, group commit included.

Order: single, cluster (burst, closed), single. Headline: the closed loop's writes/s visible
at all authorities and its call->visible p50/p99, over the single-node commit rate.
Everything runs in ONE process on one trio thread (nodes, app servers, clients, watcher),
so every cost shares one core: the figures are a floor for real hosts, not a forecast.

    python bench/net_cluster.py [--nodes 10] [--agents 100] [--burst 3] [--seconds 60]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from collections import deque
from contextlib import AsyncExitStack

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, env, log, perf  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ms(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    return {
        "p50_ms": round(pct(xs, 50) * 1e3, 1),
        "p99_ms": round(pct(xs, 99) * 1e3, 1),
        "max_ms": round(max(xs) * 1e3, 1),
        "mean_ms": round(statistics.fmean(xs) * 1e3, 1),
        "n": len(xs),
    }


async def _agents(stack: AsyncExitStack, nursery, nodes, per_node: int) -> list:
    """`per_node` remote agents on each node's app socket: (node index, client)."""
    from node.app.client import connect
    from node.app.server import AppServer

    out = []
    for i, node in enumerate(nodes):
        server = await nursery.start(AppServer(node).serve, "127.0.0.1", 0)
        for _ in range(per_node):
            agent = await stack.enter_async_context(
                connect(server.app_url, token=server.token, connect_timeout=30)
            )
            out.append((i, agent))
    return out


async def _write_all(agents, writes: int, on_done=None) -> tuple[list, float, float]:
    """Every agent writes `writes` times in its own loop, all at once: ([(agent index, seq,
    t_call, t_returned)], t_start, t_end)."""
    done: list[tuple[int, int, float, float]] = []
    t_start = perf()

    async def loop(k: int, agent) -> None:
        for i in range(writes):
            t0 = perf()
            await agent.transmit_understanding(f"s{k}-{i % 10}", "relates-to", f"o{i}", "bench")
            t1 = perf()
            done.append((k, i + 1, t0, t1))  # seq: the genesis is 0, no other writes
            if on_done is not None:
                on_done(k, i + 1, t0)

    async with trio.open_nursery() as n:
        for k, (_, agent) in enumerate(agents):
            n.start_soon(loop, k, agent)
    return done, t_start, perf()


async def single(a) -> dict:
    from node.net.cluster import libp2p_factory
    from node.net.node import NetNode

    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        node = await stack.enter_async_context(NetNode.open(libp2p_factory()))
        agents = await _agents(stack, nursery, [node], a.agents)
        done, t0, t1 = await _write_all(agents, a.writes)
        rate = len(done) / (t1 - t0)
        log(f"  single node: {len(done)} writes by {len(agents)} agents at {rate:.0f}/s")
        return {"rate": rate, "calls": [d[3] - d[2] for d in done]}


class Watcher:
    """Which writes are visible at all of their author's authorities: woken by every change
    of any node (`cluster.wait_changed`) and by every write returned, never by a timer."""

    def __init__(self, c, pubs, auth):
        self.c = c
        self.pubs = pubs
        self.auth = auth
        self.pending: dict[int, deque] = {}  # agent -> (seq, t_call) not yet visible, in order
        self.drained = {k: trio.Event() for k in range(len(pubs))}
        self.visible: list[float] = []
        self.last_visible = 0.0
        self._kick = trio.Event()

    def wrote(self, k: int, seq: int, t_call: float) -> None:
        self.pending.setdefault(k, deque()).append((seq, t_call))
        self.drained[k] = trio.Event()
        self._kick.set()

    def sweep(self) -> None:
        now = perf()
        for k in list(self.pending):
            q, pub = self.pending[k], self.pubs[k]
            low = min((h[0] if (h := n._head(pub)) is not None else -1) for n in self.auth[k])
            while q and q[0][0] <= low:
                self.visible.append(now - q.popleft()[1])
                self.last_visible = now
            if not q:
                del self.pending[k]
                self.drained[k].set()

    async def run(self) -> None:
        while True:
            self.sweep()
            async with trio.open_nursery() as w:

                async def wake(wait) -> None:
                    await wait()
                    w.cancel_scope.cancel()

                w.start_soon(wake, self.c.wait_changed)
                w.start_soon(wake, self._kick.wait)
            self._kick = trio.Event()

    async def until_all_visible(self, timeout: float) -> int:
        """Wait until nothing is pending (at most `timeout` s); the writes still unseen."""
        with trio.move_on_after(timeout):
            for k in range(len(self.pubs)):
                await self.drained[k].wait()
        return sum(len(q) for q in self.pending.values())

    def take(self) -> list[float]:
        out, self.visible = self.visible, []
        return out


async def cluster(a) -> dict:
    from node.core import dht
    from node.core.crypto import from_text
    from node.net.cluster import LocalCluster

    t_setup = perf()
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        c = await stack.enter_async_context(LocalCluster.open(n=a.nodes, transport="libp2p"))
        agents = await _agents(stack, nursery, c.nodes, a.agents // a.nodes)
        ids = [n.id for n in c.nodes]
        pubs = [from_text("agent", agent.agent_id) for _, agent in agents]
        r = c.nodes[0].r
        auth = [[c.nodes[ids.index(p)] for p in dht.nearest(pub, ids, r)] for pub in pubs]
        await c.await_consistency(a.timeout)  # every genesis is where it belongs
        log(f"  cluster up: {a.nodes} nodes, {len(agents)} agents ({perf() - t_setup:.1f}s)")
        watcher = Watcher(c, pubs, auth)
        nursery.start_soon(watcher.run)
        out: dict = {"r": r}

        # burst: every agent writes `burst` times as fast as its node answers
        before = [n.metrics_snapshot() for n in c.nodes]
        done, t0, t1 = await _write_all(agents, a.burst, watcher.wrote)
        unseen = await watcher.until_all_visible(a.timeout)
        vis = watcher.take()
        span = (watcher.last_visible or t1) - t0
        out["burst"] = {
            "writes": len(done),
            "commit_rate": len(done) / (t1 - t0),
            "visible_rate": len(vis) / span,
            "span_s": span,
            "unseen": unseen,
            "call_to_visible": ms(vis),
            "call": ms([d[3] - d[2] for d in done]),
            "metrics": _delta(before, c.nodes),
        }
        log(
            f"  burst: {len(done)} writes committed in {t1 - t0:.1f}s "
            f"({out['burst']['commit_rate']:.0f}/s), visible at all authorities by {span:.1f}s "
            f"({out['burst']['visible_rate']:.1f}/s), {unseen} never seen"
        )

        # closed loop: each agent writes, waits until that write is visible, writes again
        before = [n.metrics_snapshot() for n in c.nodes]
        calls: list[float] = []
        cap = a.writes - a.burst
        t0 = perf()
        deadline = t0 + a.seconds

        async def closed(k: int, agent, seq: int) -> None:
            for i in range(cap):
                if perf() >= deadline:
                    return
                t = perf()
                await agent.transmit_understanding(f"c{k}-{i % 10}", "relates-to", f"o{i}")
                calls.append(perf() - t)
                seq += 1
                watcher.wrote(k, seq, t)
                await watcher.drained[k].wait()

        async with trio.open_nursery() as n:
            for k, (_, agent) in enumerate(agents):
                n.start_soon(closed, k, agent, a.burst)
        t1 = perf()
        vis = watcher.take()
        out["closed"] = {
            "writes": len(vis),
            "visible_rate": len(vis) / (t1 - t0),
            "span_s": t1 - t0,
            "call_to_visible": ms(vis),
            "call": ms(calls),
            "metrics": _delta(before, c.nodes),
        }
        log(
            f"  closed loop: {len(vis)} writes visible at all authorities in {t1 - t0:.1f}s "
            f"({out['closed']['visible_rate']:.1f}/s), p50 {out['closed']['call_to_visible']}"
        )
        return out


def _delta(before: list[dict], nodes) -> dict:
    after = [n.metrics_snapshot() for n in nodes]
    keys = ("messages_sent", "ops_published", "ops_validated", "history_fetched")
    keys += tuple(sorted({k for m in after for k in m if k.startswith("sent_")}))
    out = {}
    for k in keys:
        v = sum(x.get(k, 0) - y.get(k, 0) for x, y in zip(after, before))
        if v:
            out[k] = v
    return out


async def run(a) -> dict:
    logging.getLogger("libp2p").setLevel(logging.ERROR)
    first = await single(a)
    cl = await cluster(a)
    second = await single(a)
    return {"single": [first, second], "cluster": cl}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--agents", type=int, default=100)
    p.add_argument("--burst", type=int, default=3, help="writes per agent in the burst")
    p.add_argument("--seconds", type=float, default=60.0, help="of the closed loop")
    p.add_argument("--writes", type=int, default=30, help="per agent in all (<= 33: one window)")
    p.add_argument("--timeout", type=float, default=300.0, help="s: give up waiting")
    a = p.parse_args(argv)
    t0 = perf()
    r = trio.run(run, a)
    cl, singles = r["cluster"], r["single"]
    single_rate = statistics.fmean(s["rate"] for s in singles)
    emit(
        {
            "bench": "net_cluster",
            "nodes": a.nodes,
            "agents": a.agents,
            "r": cl["r"],
            "transport": "libp2p; each agent on its node's app socket (websocket); one process",
            "single_node_rate": round(single_rate, 1),
            "single_node_rates": [round(s["rate"], 1) for s in singles],
            "single_call": ms(singles[0]["calls"] + singles[1]["calls"]),
            "closed_visible_rate": round(cl["closed"]["visible_rate"], 1),
            "ratio_closed_to_single": round(cl["closed"]["visible_rate"] / single_rate, 4),
            "burst_visible_rate": round(cl["burst"]["visible_rate"], 1),
            "ratio_burst_to_single": round(cl["burst"]["visible_rate"] / single_rate, 4),
            "closed": cl["closed"],
            "burst": cl["burst"],
            "wall_s": round(perf() - t0, 1),
            "env": env(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
