"""Many agents writing at once on a 10-node libp2p cluster, through each node's app socket:
writes per second that reached every authority, and the time from the call to "visible at
all authorities", against one node's commit rate measured in the same run.

  cluster  LocalCluster.open(n=10, transport="libp2p", r=3): ten real py-libp2p hosts on
           127.0.0.1 (TCP + Noise + Yamux), each with its AppServer (hypercorn websocket).
           100 agents, 10 per node, each a RemoteAgentClient on its node's app socket
           (`node.app.client.connect`: a new agent), all writing at once: each calls
           `transmit_understanding` W times in a loop (default 30: 90 RU of the 100 RU window,
           so no write waits for a window). A write is visible when each of its author's R
           authorities (`dht.nearest` over the ten ids) holds the author's chain at its seq
           or beyond (`node._head`). A watcher wakes on every change of any node
           (`cluster.wait_changed`) and checks the writes still pending.
  single   the same 100 agents' loop through the app socket of ONE node (libp2p transport,
           no peers: nothing to publish): the node's own commit rate, group commit included.

Order: single, cluster, single (the single-node rate brackets the cluster run).
Reported: sustained cluster rate = writes visible at all authorities / (first call to last
visibility); the cluster's commit rate (calls returned / wall); p50/p99/max of call->visible
and of the call alone; ratio cluster visible rate / single-node rate.

Everything runs in ONE process on one trio thread (nodes, app servers, clients, watcher),
so every cost shares one core: the figures are a floor for real hosts, not a forecast.

    python bench/net_cluster.py [--nodes 10] [--agents 100] [--writes 30] [--timeout 120]
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


async def cluster(a) -> dict:
    from node.core import dht
    from node.core.crypto import from_text
    from node.net.cluster import LocalCluster

    t_setup = perf()
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        c = await stack.enter_async_context(LocalCluster.open(n=a.nodes, transport="libp2p"))
        per_node = a.agents // a.nodes
        agents = await _agents(stack, nursery, c.nodes, per_node)
        ids = [n.id for n in c.nodes]
        pubs = [from_text("agent", agent.agent_id) for _, agent in agents]
        auth = [[c.nodes[ids.index(p)] for p in dht.nearest(pub, ids, c.nodes[0].r)] for pub in pubs]
        await c.await_consistency(60)  # the geneses are everywhere they belong
        log(f"  cluster up: {a.nodes} nodes, {len(agents)} agents ({perf() - t_setup:.1f}s)")
        before = [n.metrics_snapshot() for n in c.nodes]

        pending: dict[int, deque] = {}  # agent -> (seq, t_call) not yet visible, in seq order
        visible: list[float] = []
        last_visible = [0.0]
        kick = trio.Event()

        def on_done(k: int, seq: int, t_call: float) -> None:
            pending.setdefault(k, deque()).append((seq, t_call))
            kick.set()

        def sweep() -> None:
            now = perf()
            for k in list(pending):
                q = pending[k]
                pub = pubs[k]
                low = min(
                    (h[0] if (h := n._head(pub)) is not None else -1) for n in auth[k]
                )
                while q and q[0][0] <= low:
                    visible.append(now - q.popleft()[1])
                    last_visible[0] = now
                if not q:
                    del pending[k]

        writing = [True]

        async def watch() -> None:
            nonlocal kick
            while writing[0] or pending:
                sweep()
                if not (writing[0] or pending):
                    return
                with trio.move_on_after(a.timeout):
                    # a change on any node, or a write returned (its seq may be visible already)
                    async with trio.open_nursery() as w:
                        async def changed():
                            await c.wait_changed()
                            w.cancel_scope.cancel()

                        async def written():
                            await kick.wait()
                            w.cancel_scope.cancel()

                        w.start_soon(changed)
                        w.start_soon(written)
                    kick = trio.Event()
                    continue
                return  # nothing changed for `timeout` s: what is pending stays unseen

        async with trio.open_nursery() as n:
            n.start_soon(watch)
            done, t0, t1 = await _write_all(agents, a.writes, on_done)
            writing[0] = False
            kick.set()
        unseen = sum(len(q) for q in pending.values())
        after = [n.metrics_snapshot() for n in c.nodes]
        delta = {
            k: sum(x.get(k, 0) - y.get(k, 0) for x, y in zip(after, before))
            for k in ("messages_sent", "ops_published", "ops_validated", "history_fetched")
        }
        span = (last_visible[0] or t1) - t0
        out = {
            "writes": len(done),
            "commit_rate": len(done) / (t1 - t0),
            "visible_rate": len(visible) / span,
            "span_s": span,
            "unseen": unseen,
            "visible": visible,
            "calls": [d[3] - d[2] for d in done],
            "metrics_delta": delta,
        }
        log(
            f"  cluster: {len(done)} writes in {t1 - t0:.1f}s ({out['commit_rate']:.0f}/s "
            f"committed), {len(visible)} visible at all authorities by {span:.1f}s "
            f"({out['visible_rate']:.0f}/s), {unseen} never seen"
        )
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
    p.add_argument("--writes", type=int, default=30, help="per agent (<= 33 in one window)")
    p.add_argument("--timeout", type=float, default=120.0, help="s without progress: give up")
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
            "writes": cl["writes"],
            "transport": "libp2p, app socket (websocket) per agent, one process",
            "visible_rate": round(cl["visible_rate"], 1),
            "cluster_commit_rate": round(cl["commit_rate"], 1),
            "single_node_rate": round(single_rate, 1),
            "single_node_rates": [round(s["rate"], 1) for s in singles],
            "ratio_visible_to_single": round(cl["visible_rate"] / single_rate, 3),
            "call_to_visible": ms(cl["visible"]),
            "call_cluster": ms(cl["calls"]),
            "call_single": ms(singles[0]["calls"] + singles[1]["calls"]),
            "never_visible": cl["unseen"],
            "span_s": round(cl["span_s"], 1),
            "metrics_delta": cl["metrics_delta"],
            "wall_s": round(perf() - t0, 1),
            "env": env(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
