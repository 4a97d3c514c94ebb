"""Write -> visible on every node of a 10-node loopback libp2p cluster, against bare GossipSub.

Two systems are opened in the same process and kept open for the whole run:

  node   LocalCluster.open(n=10, transport="libp2p", r=10): every node is an authority for
         every author, so a write is "visible" when every node's `_head(author)` has reached
         the write's seq. Latency = from `await agent.transmit_understanding(...)` returning
         to the last node reaching that seq (waited on with `cluster.wait_changed()`, never
         with sleeps). One agent per node; writes rotate over the ten agents.
  floor  ten bare py-libp2p hosts (TCP + Noise + Yamux, like the node's transport) running
         libp2p.pubsub GossipSub + Pubsub on one topic, fully connected. Latency = from just
         before `pubsub.publish(...)` to the last of the nine other hosts receiving it.
         Publishers rotate over the ten hosts.

Both are paced: the next message leaves `--gap` seconds after the previous one completed
(default 0.1 s: under GossipSub's default spam limit of 10 msg/s per topic per forwarder,
and under the 32-message subscription queue; LIBP2P-NOTES trap 4). Rounds alternate the
order (ABBA). Headline: p50/p99 of each, and node/floor ratios. Goal: node p99 <= 1 s and
<= 2x the GossipSub p99.

    python bench/net_latency.py [--writes 100] [--rounds 4] [--gap 0.15]
                                [--publish-interval 0.5] [--gossip-interval 0.5]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import statistics
import struct
import sys
from contextlib import AsyncExitStack

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, env, log, perf  # noqa: E402

GOAL_P99_S = 1.0
GOAL_RATIO = 2.0
N = 10
TOPIC = "bench-latency"


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def stats_ms(xs: list[float]) -> dict:
    return {
        "p50_ms": round(pct(xs, 50) * 1e3, 2),
        "p90_ms": round(pct(xs, 90) * 1e3, 2),
        "p99_ms": round(pct(xs, 99) * 1e3, 2),
        "max_ms": round(max(xs) * 1e3, 2),
        "mean_ms": round(statistics.fmean(xs) * 1e3, 2),
        "n": len(xs),
    }


# ---------------------------------------------------------------- bare GossipSub floor


class GossipFloor:
    """Ten py-libp2p hosts with GossipSub on one topic; `send(i)` publishes from host i and
    returns the time until the nine others have it."""

    def __init__(self):
        self.hosts = []
        self.pubsubs = []
        self.routers = []
        self.arrivals: dict[int, list[float]] = {}
        self._done: dict[int, trio.Event] = {}
        self._seq = 0
        self.lost = 0

    async def open(self, stack: AsyncExitStack, nursery) -> None:
        import multiaddr
        from libp2p import new_host
        from libp2p.crypto.ed25519 import create_new_key_pair
        from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
        from libp2p.custom_types import TProtocol
        from libp2p.network.config import ConnectionConfig
        from libp2p.peer.peerinfo import PeerInfo
        from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_PROTOCOL_ID, GossipSub
        from libp2p.pubsub.pubsub import Pubsub
        from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID, Transport as Noise
        from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID, Yamux
        from libp2p.tools.anyio_service import background_trio_service

        logging.getLogger("libp2p").setLevel(logging.CRITICAL)
        logging.getLogger("multiaddr").setLevel(logging.ERROR)

        listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
        subs = []
        for i in range(N):
            kp = create_new_key_pair(hashlib.sha256(b"gossip-floor-%d" % i).digest())
            host = new_host(
                key_pair=kp,
                sec_opt={NOISE_ID: Noise(kp, noise_privkey=create_x25519_key_pair().private_key)},
                muxer_opt={TProtocol(YAMUX_ID): Yamux},
                listen_addrs=listen,
                connection_config=ConnectionConfig(max_connections_per_peer=1),
            )
            gs = GossipSub(
                protocols=[GOSSIPSUB_PROTOCOL_ID],
                degree=6,
                degree_low=4,
                degree_high=12,
                heartbeat_initial_delay=0.1,
                heartbeat_interval=1,
            )
            ps = Pubsub(host, gs)
            # Trap 6: entered here, outside any fail_after/move_on_after.
            await stack.enter_async_context(host.run(listen_addrs=listen))
            stack.push_async_callback(self._close_host, host)  # trap 5
            await stack.enter_async_context(background_trio_service(ps))
            await stack.enter_async_context(background_trio_service(gs))
            await ps.wait_until_ready()
            subs.append(await ps.subscribe(TOPIC))
            self.hosts.append(host)
            self.pubsubs.append(ps)
            self.routers.append(gs)
        for i, host in enumerate(self.hosts):
            for other in self.hosts[i + 1 :]:
                await host.connect(PeerInfo(other.get_id(), other.get_addrs()))
        for i, sub in enumerate(subs):
            nursery.start_soon(self._receive, i, sub)
        # Wait for the mesh to form (heartbeat every second).
        with trio.move_on_after(10):
            # noqa below: GossipSub's mesh has no event to wait on
            while not all(len(gs.mesh.get(TOPIC, ())) >= 4 for gs in self.routers):  # noqa: ASYNC110
                await trio.sleep(0.05)
        log("  gossipsub mesh sizes: " + str([len(gs.mesh.get(TOPIC, ())) for gs in self.routers]))

    @staticmethod
    async def _close_host(host) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await host.close()

    async def _receive(self, i: int, sub) -> None:
        while True:
            msg = await sub.get()
            t = perf()
            if len(msg.data) < 8:
                continue
            k, src = struct.unpack(">II", msg.data[:8])
            if src == i or k not in self.arrivals:
                continue
            self.arrivals[k].append(t)
            if len(self.arrivals[k]) >= N - 1:
                self._done[k].set()

    async def send(self, i: int, timeout: float = 5.0) -> tuple[float | None, list[float]]:
        k = self._seq = self._seq + 1
        self.arrivals[k] = []
        self._done[k] = trio.Event()
        t0 = perf()
        await self.pubsubs[i].publish(TOPIC, struct.pack(">II", k, i) + b"x" * 200)
        with trio.move_on_after(timeout):
            await self._done[k].wait()
        per_node = [t - t0 for t in self.arrivals[k]]
        if len(per_node) < N - 1:
            self.lost += 1
            return None, per_node
        return max(per_node), per_node


# ---------------------------------------------------------------- the node cluster


class NodeSide:
    def __init__(self, cluster):
        self.c = cluster
        self.agents = []
        self.pubs = []
        self.k = 0
        self.timeouts = 0

    async def open(self) -> None:
        from node.core.crypto import from_text

        for node in self.c.nodes:
            a = await node.new_agent()
            self.agents.append((node, a))
            self.pubs.append(from_text("agent", a.agent_id))
        await self.c.await_consistency(30)

    async def send(self, i: int, timeout: float = 5.0) -> tuple[float | None, list[float]]:
        node, a = self.agents[i]
        pub = self.pubs[i]
        self.k += 1
        await a.transmit_understanding(f"s{self.k}", "relates-to", f"o{self.k}")
        t0 = perf()
        seq = node._head(pub)[0]
        seen: dict[int, float] = {}
        with trio.move_on_after(timeout):
            while True:
                now = perf()
                for j, n in enumerate(self.c.nodes):
                    if j not in seen:
                        h = n._head(pub)
                        if h is not None and h[0] >= seq:
                            seen[j] = now - t0
                if len(seen) == N:
                    break
                await self.c.wait_changed()
        per_node = [v for j, v in seen.items() if self.c.nodes[j] is not node]
        if len(seen) < N:
            self.timeouts += 1
            return None, per_node
        return max(seen.values()), per_node


async def run(a) -> dict:
    from node.sdk import LocalCluster

    t_setup = perf()
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)  # runs first on exit: stops the receivers
        sides = {}
        c = None
        if a.only in (None, "node"):
            c = await stack.enter_async_context(
                LocalCluster.open(
                    n=N,
                    transport="libp2p",
                    r=N,
                    gossip_interval=a.gossip_interval,
                    publish_interval=a.publish_interval,
                )
            )
            sides["node"] = node = NodeSide(c)
            await node.open()
            log(f"  node cluster up ({perf() - t_setup:.1f}s)")
        if a.only in (None, "floor"):
            sides["floor"] = floor = GossipFloor()
            await floor.open(stack, nursery)
            log(f"  gossipsub floor up ({perf() - t_setup:.1f}s)")

        # Warm-up: one message per sender on each side.
        for side in sides.values():
            for i in range(N):
                await side.send(i)
                await trio.sleep(a.gap)
        nodes = c.nodes if c is not None else []
        before = {j: n.metrics_snapshot() for j, n in enumerate(nodes)}
        lat = {k: [] for k in sides}
        per_node = {k: [] for k in sides}
        per_round = a.writes // a.rounds
        t_meas = perf()
        for r in range(a.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                side = sides[name]
                for m in range(per_round):
                    total, each = await side.send((r * per_round + m) % N)
                    if total is not None:
                        lat[name].append(total)
                    per_node[name].extend(each)
                    await trio.sleep(a.gap)
            log(
                f"  round {r + 1}/{a.rounds}: "
                + "  ".join(
                    f"{k} p50 {pct(lat[k], 50) * 1e3:7.2f} ms p99 {pct(lat[k], 99) * 1e3:7.2f} ms"
                    for k in sides
                    if lat[k]
                )
            )
        after = {j: n.metrics_snapshot() for j, n in enumerate(nodes)}
        meas_s = perf() - t_meas
        delta = {
            k: sum(after[j].get(k, 0) - before[j].get(k, 0) for j in after)
            for k in (
                "messages_sent",
                "ops_published",
                "ops_validated",
                "gossip_rounds",
                "history_fetched",
                "gossip_lag_ops",
            )
        }
        nursery.cancel_scope.cancel()
        return {
            "lat": lat,
            "per_node": per_node,
            "node_timeouts": sides["node"].timeouts if "node" in sides else None,
            "floor_lost": sides["floor"].lost if "floor" in sides else None,
            "cluster_metrics_delta": delta,
            "measure_s": meas_s,
        }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=100)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--gap", type=float, default=0.1)
    p.add_argument("--publish-interval", type=float, default=0.5)
    p.add_argument("--gossip-interval", type=float, default=0.5)
    p.add_argument(
        "--only",
        choices=("node", "floor"),
        default=None,
        help="diagnostic: run one side alone (no ratio)",
    )
    a = p.parse_args(argv)
    t0 = perf()
    res = trio.run(run, a)
    if a.only:
        emit(
            {
                "bench": "net_latency",
                "only": a.only,
                a.only: stats_ms(res["lat"][a.only]),
                "per_receiver": stats_ms(res["per_node"][a.only]),
                "cluster_metrics_delta": res["cluster_metrics_delta"],
                "wall_s": round(perf() - t0, 1),
            }
        )
        return 0
    node, floor = stats_ms(res["lat"]["node"]), stats_ms(res["lat"]["floor"])
    r50, r99 = node["p50_ms"] / floor["p50_ms"], node["p99_ms"] / floor["p99_ms"]
    emit(
        {
            "bench": "net_latency",
            "nodes": N,
            "r": N,
            "writes": len(res["lat"]["node"]),
            "publish_interval": a.publish_interval,
            "gossip_interval": a.gossip_interval,
            "gap_s": a.gap,
            "node": node,
            "floor_gossipsub": floor,
            "ratio_p50": round(r50, 3),
            "ratio_p99": round(r99, 3),
            "node_per_receiver": stats_ms(res["per_node"]["node"]),
            "floor_per_receiver": stats_ms(res["per_node"]["floor"]),
            "node_timeouts": res["node_timeouts"],
            "floor_lost": res["floor_lost"],
            "cluster_metrics_delta": res["cluster_metrics_delta"],
            "goal": f"node p99 <= {GOAL_P99_S * 1e3:.0f} ms and <= {GOAL_RATIO}x gossipsub p99",
            "meets_p99": node["p99_ms"] <= GOAL_P99_S * 1e3,
            "meets_ratio": r99 <= GOAL_RATIO,
            "wall_s": round(perf() - t0, 1),
            "env": env(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
