"""Authority validation throughput: a NetNode taking another author's published ops, against
a bare Ed25519 verify loop over the same signatures.

Node A (alone on its own in-memory network, so nothing is published anywhere) writes a chain
of N (default 2,000) transmit_understanding actions (plus genesis). Then, round by round,
a fresh node B (same DNA, same clock, its own network: no peers) is fed that chain in order:

  accept   `await B._accept(signed, entry, peer=None)` for every action -- the one path every
           foreign action takes (validate against B's view of the chain, store, index)
  batched  the same, 256 ops to a `B.store.batch()` (one transaction each), as a publish
           batch is stored
  publish  the same chain as real `publish` requests from A to B, 256 ops each, through
           `B.handlers.handle(A.id, raw)`: CBOR decode, batch-signature check, per-op signature
           check, `_accept`, and a signed receipt per op -- the whole inbound publish path
           minus the transport
  floor    `pk.verify(sig, body)` over the same signatures (cryptography, key preloaded)

Order flips each round (ABBA). Rates are ops/s; headline ratio accept/floor.

    python bench/net_validate.py [--actions 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.core import warrant
from node.core.crypto import forget_verified, from_text
from node.net import protocol as P
from node.net.memory import MemoryNetwork
from node.net.node import NetNode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import CLOCK_HELP, FakeClock, emit, env, log  # noqa: E402


async def run(a):
    clock = FakeClock()
    net_a = MemoryNetwork()
    t0 = _common.perf()
    async with NetNode.open(
        net_a.transport, clock=clock, gossip_interval=3600, publish_interval=3600
    ) as A:
        agent = await A.new_agent()
        for i in range(a.actions):
            if i % 30 == 0:
                clock.advance()
            await agent.transmit_understanding(
                subject=f"subject-{i % 100}",
                predicate="relates-to",
                object=f"object-{i}",
                context="benchmark",
            )
        pub = from_text("agent", agent.agent_id)
        chain = A.store.chain(pub)
        entries = A.store.entries_of(pub)
        ops = [
            (s, entries.get(s.action.get("entry")) if s.action.get("type") == "create" else None)
            for s in chain
        ]
        log(f"net_validate: built a chain of {len(chain)} actions in {_common.perf() - t0:.1f}s")
        n = len(chain)
        pk = Ed25519PublicKey.from_public_bytes(pub)
        pairs = [(s.sig, s.body) for s in chain]

        async def fresh_b():
            return NetNode.open(
                MemoryNetwork().transport,
                clock=clock,
                gossip_interval=3600,
                publish_interval=3600,
                dna=A.dna,
            )

        async def accept():
            async with await fresh_b() as B:
                t = _common.perf()
                for s, e in ops:
                    st = await B._accept(s, e, None)
                    if st != "valid":
                        raise SystemExit(f"_accept returned {st!r} at seq {s.seq}")
                dt = _common.perf() - t
                assert B._head(pub) == (chain[-1].seq, chain[-1].hash)
                return dt

        async def batched():
            async with await fresh_b() as B:
                t = _common.perf()
                for i in range(0, n, P.MAX_OPS_PER_MESSAGE):
                    with B.store.batch():  # as a publish batch is stored
                        for s, e in ops[i : i + P.MAX_OPS_PER_MESSAGE]:
                            st = await B._accept(s, e, None)
                            if st != "valid":
                                raise SystemExit(f"_accept returned {st!r} at seq {s.seq}")
                dt = _common.perf() - t
                assert B._head(pub) == (chain[-1].seq, chain[-1].hash)
                return dt

        async def publish():
            async with await fresh_b() as B:
                # Requests are built outside the timed part (the sender's cost).
                reqs = []
                for i in range(0, n, P.MAX_OPS_PER_MESSAGE):
                    wire = [[s.body, s.sig, e] for s, e in ops[i : i + P.MAX_OPS_PER_MESSAGE]]
                    batch = warrant.sign_batch(wire, B.id, A.now_us(), A.node_key)
                    reqs.append(P.request("publish", A.dna.hash, ops=wire, batch=batch))
                t = _common.perf()
                for raw in reqs:
                    rep = P.parse_reply("publish", await B.handlers.handle(A.id, raw))
                    bad = [r for r in rep.results if r.status != "valid"]
                    if bad:
                        raise SystemExit(
                            f"publish: {len(bad)} ops not valid, first {bad[0].status!r}"
                        )
                dt = _common.perf() - t
                assert B._head(pub) == (chain[-1].seq, chain[-1].hash)
                return dt

        async def floor():
            verify = pk.verify
            t = _common.perf()
            for sig, body in pairs:
                verify(sig, body)
            return _common.perf() - t

        cases = {"floor": floor, "accept": accept, "batched": batched, "publish": publish}
        if not hasattr(A.store, "batch"):  # code from before Store.batch (an A/B run)
            cases["batched"] = accept
        for f in cases.values():  # warm-up
            await f()
        rates = {k: [] for k in cases}
        for r in range(a.rounds):
            names = list(cases) if r % 2 == 0 else list(reversed(cases))
            for k in names:
                forget_verified()  # every round sees the chain for the first time
                rates[k].append(n / await cases[k]())
            log(
                f"  round {r + 1}/{a.rounds}: "
                + "  ".join(f"{k} {rates[k][-1]:9.1f}/s" for k in cases)
            )
        return n, rates


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--actions", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help=CLOCK_HELP)
    a = p.parse_args(argv)
    _common.use_clock(a.clock)
    t0 = _common.perf()
    n, rates = trio.run(run, a)
    med = {k: statistics.median(v) for k, v in rates.items()}
    emit(
        {
            "bench": "net_validate",
            "actions": n,
            "accept_rate": round(med["accept"], 1),
            "batched_rate": round(med["batched"], 1),
            "publish_rate": round(med["publish"], 1),
            "floor": round(med["floor"], 1),
            "ratio_accept": round(med["accept"] / med["floor"], 4),
            "ratio_batched": round(med["batched"] / med["floor"], 4),
            "ratio_publish": round(med["publish"] / med["floor"], 4),
            "us_per_op_accept": round(1e6 / med["accept"], 1),
            "us_per_op_publish": round(1e6 / med["publish"], 1),
            "us_per_verify": round(1e6 / med["floor"], 1),
            "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "clock": a.clock,
            "wall_s": round(_common.perf() - t0, 1),
            "env": env(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
