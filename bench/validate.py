"""Chain validation rate against a bare Ed25519 verify loop over the same signatures.

A chain of N (default 5,000) transmit_understanding actions is written through the SDK,
then three things are timed, interleaved round by round:

  full   validate_chain(node.store.chain(pub), node.dna, zomes.APP, node.store.entries_of(pub))
         -- the expression the node runs on open: SQLite read + CBOR decode + validation
  pure   validate_chain(chain, dna, APP, entries) with chain and entries already in memory
  floor  for s in chain: pk.verify(s.sig, s.body)   (cryptography, key object preloaded)

Rates are actions per second; the headline ratio is full / floor (goal >= 0.7);
pure / floor is reported beside it.

    python bench/validate.py [--actions 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import zomes
from node.core.crypto import forget_verified
from node.core.validate import validate_chain
from node.sdk import LocalNode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import FakeClock, bench_dir, emit, env, log, perf  # noqa: E402

GOAL_RATIO = 0.7


async def _build(path: str, n: int) -> bytes:
    clock = FakeClock()
    async with LocalNode.open(path=path, clock=clock) as node:
        agent = await node.new_agent()
        for i in range(n):
            if i % 30 == 0:
                clock.advance()
            await agent.transmit_understanding(
                subject=f"subject-{i % 100}",
                predicate="relates-to",
                object=f"object-{i}",
                context="benchmark",
            )
        return agent._cell.key.public


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--actions", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)

    d = tempfile.mkdtemp(prefix="bench-validate-", dir=bench_dir())
    try:
        t0 = perf()
        pub = trio.run(_build, d, a.actions)
        log(f"validate: built a chain of {a.actions} actions (+ genesis) in {perf() - t0:.1f}s")

        async def timed():
            async with LocalNode.open(path=d, clock=FakeClock(2 * 10**9)) as node:
                store, dna = node.store, node.dna
                chain, entries = store.chain(pub), store.entries_of(pub)
                n = len(chain)
                pk = Ed25519PublicKey.from_public_bytes(pub)
                pairs = [(s.sig, s.body) for s in chain]

                def full():
                    validate_chain(store.chain(pub), dna, zomes.APP, store.entries_of(pub))

                def pure():
                    validate_chain(chain, dna, zomes.APP, entries)

                def floor():
                    verify = pk.verify
                    for sig, body in pairs:
                        verify(sig, body)

                cases = {"floor": floor, "full": full, "pure": pure}
                for f in cases.values():  # warm-up
                    f()
                rates = {k: [] for k in cases}
                for r in range(a.rounds):
                    names = list(cases) if r % 2 == 0 else list(reversed(cases))
                    for k in names:
                        forget_verified()  # every round sees the chain for the first time
                        t = perf()
                        cases[k]()
                        rates[k].append(n / (perf() - t))
                    log(
                        f"  round {r + 1}/{a.rounds}: "
                        + "  ".join(f"{k} {rates[k][-1]:9.1f}/s" for k in cases)
                    )
                return n, rates

        n, rates = trio.run(timed)
    finally:
        shutil.rmtree(d, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["full"] / med["floor"]
    emit(
        {
            "bench": "validate",
            "actions": n,
            "rate": round(med["full"], 1),
            "floor": round(med["floor"], 1),
            "ratio": round(ratio, 4),
            "pure_rate": round(med["pure"], 1),
            "pure_ratio": round(med["pure"] / med["floor"], 4),
            "us_per_action_full": round(1e6 / med["full"], 2),
            "us_per_action_pure": round(1e6 / med["pure"], 2),
            "us_per_verify": round(1e6 / med["floor"], 2),
            "goal_ratio": GOAL_RATIO,
            "meets_ratio": ratio >= GOAL_RATIO,
            "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "env": env(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
