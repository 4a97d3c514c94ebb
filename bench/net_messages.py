"""Messages and bytes per write as the cluster grows (r=3): O(R), not O(N)?

For each N in --sizes, a LocalCluster (r=3, gossip_interval=0.5, publish_interval=0.5) is
opened on the in-memory transport (all sizes) and on libp2p (N <= --libp2p-max). Every
node's `transport.request` is wrapped (per instance, in this script) to count requests by
type ("publish", "summary", "chain", "peers", "hello", ...) and the bytes of request and
reply. After the cluster is consistent and has idled, three phases are counted:

  idle    --idle seconds with no writes: the background rate (gossip), messages/s
  paced   K writes, one at a time; after each, wait (on wait_changed) until the writing
          node has its receipts (no unpublished action left). Then await_consistency.
  burst   K writes back to back, then await_consistency (the publisher batches per peer)

Per write: publish messages, publish bytes, and "excess" gossip (gossip messages in the
phase minus idle-rate x phase time -- gossip runs on a timer, not per write). Also the
mean number of distinct authorities per action (bases: action hash, author, entry; r
nearest each, minus the writer): the O(R) bound publish should track (<= 3R - 1 = 8).
Writes rotate over 4 agents on nodes 0..3 (mod N); K/4 <= 33 so no budget refusal.

    python bench/net_messages.py [--sizes 3,5,10,20] [--writes 40] [--libp2p-max 10]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

import trio

from node.core import dht
from node.core.crypto import from_text
from node.core.encoding import decode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, env, log, perf  # noqa: E402

R = 3
GOSSIP = ("summary", "chain", "peers", "hello", "record", "warrants")


def wrap(node, counts: Counter) -> None:
    inner = node.transport.request

    async def request(peer, payload, timeout=5.0):
        try:
            t = decode(payload).get("t", "?")
        except Exception:
            t = "?"
        counts[t] += 1
        counts["bytes_" + t] += len(payload)
        reply = await inner(peer, payload, timeout)
        counts["reply_bytes_" + t] += len(reply)
        return reply

    node.transport.request = request


def diff(after: Counter, before: Counter) -> Counter:
    out = Counter(after)
    out.subtract(before)
    return +out


async def measure(n: int, transport: str, k: int, idle_s: float) -> dict:
    from node.sdk import ConsistencyTimeout, LocalCluster

    t_open = perf()
    async with LocalCluster.open(
        n=n, transport=transport, r=R, gossip_interval=0.5, publish_interval=0.5
    ) as c:
        counts = Counter()
        for node in c.nodes:
            wrap(node, counts)
        agents = []
        for i in range(4):
            host = c.nodes[i % n]
            a = await host.new_agent()
            agents.append((host, a, from_text("agent", a.agent_id)))
        await c.await_consistency(30)
        await trio.sleep(1.0)  # let the announce/hello wave settle
        setup_s = perf() - t_open

        c0, t0 = Counter(counts), perf()
        await trio.sleep(idle_s)
        idle = diff(counts, c0)
        idle_t = perf() - t0
        idle_rate = {t: idle[t] / idle_t for t in GOSSIP}

        def authorities_of_new(host, pub, after_seq):
            everyone = [host.id, *host.peers]
            return [
                len(dht.authorities(s, everyone, R) - {host.id})
                for s in host.store.chain(pub, after_seq)
            ]

        async def phase(paced: bool) -> dict:
            start_heads = [h._head(p)[0] for h, _, p in agents]
            c1, t1 = Counter(counts), perf()
            for w in range(k):
                host, a, pub = agents[w % len(agents)]
                await a.transmit_understanding(f"s{w}", "relates-to", f"o{w}-{paced}")
                if paced:
                    with trio.fail_after(10):
                        while host.dht.unpublished(1):
                            await c.wait_changed()
            problems = None
            try:
                await c.await_consistency(15)
            except ConsistencyTimeout:
                # Seen on libp2p N=10 burst: an honest agent warranted (invalid/bad_seq) by a
                # race in NetNode._accept; see bench/README.md. Report it, keep going.
                problems = c.lagging()[:4]
                log(f"  N={n} {transport}: NOT consistent: {problems}")
            d, dt = diff(counts, c1), perf() - t1
            auths = [
                x
                for (h, _, p), s0 in zip(agents, start_heads)
                for x in authorities_of_new(h, p, s0)
            ]
            gossip = sum(d[t] for t in GOSSIP)
            gossip_expected = sum(idle_rate.values()) * dt
            return {
                "publish_msgs_per_write": round(d["publish"] / k, 3),
                "publish_bytes_per_write": round(
                    (d["bytes_publish"] + d["reply_bytes_publish"]) / k
                ),
                "all_msgs_per_write": round(sum(d[t] for t in (*GOSSIP, "publish")) / k, 3),
                "excess_gossip_msgs_per_write": round((gossip - gossip_expected) / k, 3),
                "chain_msgs_per_write": round(d["chain"] / k, 3),
                "consistent": problems is None,
                "lagging": problems,
                "warrants_issued": sum(nd.metrics["warrants_issued"] for nd in c.nodes),
                "all_bytes_per_write": round(sum(v for t, v in d.items() if "bytes" in t) / k),
                "authorities_per_action": round(sum(auths) / len(auths), 2),
                "phase_s": round(dt, 2),
                "by_type": {t: d[t] for t in sorted(d) if "bytes" not in t},
            }

        paced = await phase(True)
        burst = await phase(False)
        validated = sum(nd.metrics["ops_validated"] for nd in c.nodes)
        return {
            "n": n,
            "transport": transport,
            "r": R,
            "writes": k,
            "setup_s": round(setup_s, 1),
            "idle_msgs_per_s": round(sum(idle_rate.values()), 2),
            "idle_bytes_per_s": round(sum(v for t, v in idle.items() if "bytes" in t) / idle_t),
            "idle_by_type_per_s": {t: round(v, 2) for t, v in idle_rate.items() if v},
            "paced": paced,
            "burst": burst,
            "ops_validated_total": validated,
            "memory_network_messages": c.network.messages if c.network else None,
        }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="3,5,10,20")
    p.add_argument("--writes", type=int, default=40)
    p.add_argument("--idle", type=float, default=1.5)
    p.add_argument("--libp2p-max", type=int, default=10)
    a = p.parse_args(argv)
    t0 = perf()
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        for transport in ("memory", "libp2p"):
            if transport == "libp2p" and n > a.libp2p_max:
                continue
            row = trio.run(measure, n, transport, a.writes, a.idle)
            rows.append(row)
            log(
                f"  N={n:3d} {transport:7s} paced: publish "
                f"{row['paced']['publish_msgs_per_write']:.2f} "
                f"msg/w ({row['paced']['publish_bytes_per_write']} B/w), authorities "
                f"{row['paced']['authorities_per_action']:.2f}, excess gossip "
                f"{row['paced']['excess_gossip_msgs_per_write']:+.2f} msg/w, chain "
                f"{row['paced']['chain_msgs_per_write']:.2f} msg/w | burst: publish "
                f"{row['burst']['publish_msgs_per_write']:.2f} msg/w | idle "
                f"{row['idle_msgs_per_s']:.1f} msg/s"
            )
            emit({"bench": "net_messages", **row})
    emit(
        {
            "bench": "net_messages_summary",
            "wall_s": round(perf() - t0, 1),
            "paced_publish_msgs_per_write": {
                f"{r['n']}/{r['transport']}": r["paced"]["publish_msgs_per_write"] for r in rows
            },
            "idle_msgs_per_s": {f"{r['n']}/{r['transport']}": r["idle_msgs_per_s"] for r in rows},
            "env": env(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
