"""Where does one SDK commit's time go?  Two views of `agent.transmit_understanding(...)`:

1. cProfile over N commits, folded into categories (SQLite, Ed25519, CBOR, the encoder's
   _check walk, validation, budget, trio, dataclass construction, ...) and the top
   functions by own time.  The profiler inflates Python-heavy parts, so also:
2. a stage-by-stage ablation without the profiler: each step of Cell._append and the
   zome dispatch timed alone on real data, in microseconds per commit, against the
   measured end-to-end cost. The remainder is dispatch/glue not isolated here.

    python bench/profile_commits.py [--commits 3000] [--mode process] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile

import trio

import zomes
from node.core import budget
from node.core.action import entry_bytes
from node.core.crypto import blake2b_256
from node.core.encoding import decode, encode
from node.core.validate import validate_next
from node.sdk import LocalNode
from node.store import Store

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import FakeClock, bench_dir, emit, perf  # noqa: E402


def payload(i):
    return {
        "subject": f"subject-{i % 100}",
        "predicate": "relates-to",
        "object": f"object-{i}",
        "context": "benchmark",
    }


async def commits(node, clock, agent, n, start=0):
    for i in range(start, start + n):
        if i % 30 == 0:
            clock.advance()
        await agent.transmit_understanding(**payload(i))


CATEGORIES = [  # (label, predicate on (file, line, name)); first match wins
    ("sqlite (execute/commit, incl. fsync)", lambda f, n: "sqlite3" in n or "sqlite3" in f),
    ("ed25519 sign", lambda f, n: "sign" in n and "Ed25519" in n),
    ("cbor2 dumps/loads (C)", lambda f, n: "cbor2" in n or "cbor2" in f),
    ("encoding._check walk", lambda f, n: f.endswith("encoding.py")),
    ("blake2b", lambda f, n: "blake2" in n or "digest" in n),
    ("validate.py (validate_next & co)", lambda f, n: f.endswith("core/validate.py")),
    ("budget.py", lambda f, n: f.endswith("core/budget.py")),
    ("dataclass __init__ (frozen)", lambda f, n: f == "<string>" and n == "__init__"),
    ("trio (lock, checkpoints, run loop)", lambda f, n: "/trio/" in f or "outcome" in f),
    ("cell.py", lambda f, n: f.endswith("node/cell.py")),
    ("store.py (python side)", lambda f, n: f.endswith("node/store.py")),
    ("local_node/context/sdk dispatch", lambda f, n: f.endswith(("local_node.py", "context.py"))),
    ("zomes + app validation", lambda f, n: "/zomes/" in f or f.endswith("core/app.py")),
    (
        "action.py / crypto.py / dna.py",
        lambda f, n: f.endswith(("action.py", "crypto.py", "dna.py")),
    ),
    ("builtins (isinstance, dict ops, ...)", lambda f, n: f == "~"),
]


def categorise(stats: pstats.Stats, n: int) -> list[tuple[str, float, float]]:
    totals: dict[str, float] = {}
    grand = 0.0
    for (f, _line, name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        grand += tt
        for label, pred in CATEGORIES:  # noqa: B007 - `label` is read after the loop
            if pred(f, name):
                break
        else:
            label = "other"
        totals[label] = totals.get(label, 0.0) + tt
    return sorted(((k, v / n * 1e6, v / grand) for k, v in totals.items()), key=lambda x: -x[1])


def profile_view(mode: str, n: int, top: int) -> dict:
    d = tempfile.mkdtemp(prefix="bench-prof-", dir=bench_dir())
    clock = FakeClock()
    try:

        async def go():
            async with LocalNode.open(path=d, clock=clock, durability=mode) as node:
                agent = await node.new_agent()
                await commits(node, clock, agent, 100)
                t = perf()
                await commits(node, clock, agent, n, 100)
                plain = (perf() - t) / n
                pr = cProfile.Profile()
                pr.enable()
                await commits(node, clock, agent, n, 100 + n)
                pr.disable()
                return plain, pr

        plain, pr = trio.run(go)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    st = pstats.Stats(pr)
    cats = categorise(st, n)
    total_prof = sum(c[1] for c in cats)
    print(f"\n## cProfile, {n} commits, durability={mode}")
    print(
        f"unprofiled: {plain * 1e6:.1f} us/commit; profiled: {total_prof:.1f} us/commit "
        f"(profiler overhead inflates Python-level calls)\n"
    )
    print(f"{'category':40s} {'us/commit':>10s} {'share':>7s}")
    for label, us, share in cats:
        print(f"{label:40s} {us:10.1f} {share:7.1%}")
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
    print(f"\n### top {top} by own time\n")
    print(
        "\n".join(
            line
            for line in buf.getvalue().splitlines()
            if line.strip() and not line.startswith(("   Ordered", "         "))
        )
    )
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(r"node|zomes", 30)
    print("\n### cumulative, node/ and zomes/ functions\n")
    print(
        "\n".join(
            line
            for line in buf.getvalue().splitlines()
            if line.strip() and not line.startswith(("   Ordered", "         "))
        )
    )
    return {
        "unprofiled_us_per_commit": round(plain * 1e6, 1),
        "categories_us": {k: round(v, 1) for k, v, _ in cats},
    }


def _per_op(fn, items) -> float:
    t = perf()
    for x in items:
        fn(x)
    return (perf() - t) / len(items) * 1e6


def ablation(mode: str, n: int) -> dict:
    """Each stage of one commit, timed alone on real data (us per commit)."""
    src = tempfile.mkdtemp(prefix="bench-abl-", dir=bench_dir())
    dst = tempfile.mkdtemp(prefix="bench-abl2-", dir=bench_dir())
    try:
        clock = FakeClock()

        async def build():
            async with LocalNode.open(path=src, clock=clock, durability=mode) as node:
                agent = await node.new_agent()
                await commits(node, clock, agent, 50)
                t = perf()
                await commits(node, clock, agent, n, 50)
                e2e = (perf() - t) / n * 1e6
                cell = agent._cell
                chain = node.store.chain(cell.key.public)
                entries = node.store.entries_of(cell.key.public)
                return node.dna, cell.key, chain, entries, e2e

        dna, key, chain, entries, e2e = trio.run(build)
        app = zomes.APP
        edef = app.entry_def("understanding")
        creates = chain[51:]  # the timed ones
        contents = [decode(entries[s.action["entry"]])["content"] for s in creates]
        actions = [dict(s.action) for s in creates]
        bodies = [s.body for s in creates]
        stages = {}
        stages["entry validate (edef.validate)"] = _per_op(edef.validate, contents)
        stages["entry encode (entry_bytes)"] = _per_op(
            lambda c: entry_bytes("understanding", c), contents
        )
        ebodies = [entry_bytes("understanding", c) for c in contents]
        stages["entry hash (blake2b)"] = _per_op(blake2b_256, ebodies)
        st0 = budget.initial(1, dna)
        stages["budget.charge"] = _per_op(lambda _: budget.charge(st0, 3000, 2, dna), contents)
        stages["index keys (edef.index)"] = _per_op(edef.index, contents)
        stages["action encode (encode = _check + cbor2)"] = _per_op(encode, actions)
        stages["  of which _check walk"] = stages[
            "action encode (encode = _check + cbor2)"
        ] - _per_op(lambda a: __import__("cbor2").dumps(a, canonical=True), actions)
        stages["ed25519 sign"] = _per_op(key.sign, bodies)
        stages["action hash (blake2b)"] = _per_op(blake2b_256, bodies)
        # self-validation, verify_sig=False, over consecutive real states
        from node.core.validate import validate_chain

        states = []
        cs = validate_chain(chain[:51], dna, app)
        for s in creates:
            states.append(cs)
            cs = validate_next(cs, s, dna, app, verify_sig=False)
        pairs = list(zip(states, creates))
        stages["validate_next (verify_sig=False)"] = _per_op(
            lambda p: validate_next(p[0], p[1], dna, app, verify_sig=False), pairs
        )
        # the SQLite transaction: replay the same chain into a fresh store
        store = Store(os.path.join(dst, "chain.db"), mode)

        async def appends():
            prev = None
            for s in chain[:51]:
                e = entries.get(s.action.get("entry"))
                idx = edef.index(decode(e)["content"]) if e else ()
                await store.append(
                    s,
                    prev.seq if prev else None,
                    prev.hash if prev else None,
                    (s.action["entry"], e) if e else None,
                    idx,
                )
                prev = s
            rows = []
            for s, c in zip(creates, contents):
                rows.append(
                    (
                        s,
                        prev.seq,
                        prev.hash,
                        (s.action["entry"], entries[s.action["entry"]]),
                        edef.index(c),
                    )
                )
                prev = s
            t = perf()
            for r in rows:
                await store.append(*r)
            return (perf() - t) / len(rows) * 1e6

        stages["store.append (1 txn: CAS + 2 inserts + 2 idx)"] = trio.run(appends)
        store.close()

        async def lock_cost():
            lock = trio.Lock()
            t = perf()
            for _ in range(n):
                async with lock:
                    pass
            return (perf() - t) / n * 1e6

        stages["trio.Lock acquire/release"] = trio.run(lock_cost)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)
    summed = sum(v for k, v in stages.items() if not k.startswith("  "))
    print(f"\n## ablation, durability={mode}: stages timed alone (us per commit)\n")
    print(f"{'stage':48s} {'us':>8s} {'share of e2e':>13s}")
    for k, v in stages.items():
        print(f"{k:48s} {v:8.1f} {v / e2e:13.1%}")
    print(f"{'sum of stages':48s} {summed:8.1f} {summed / e2e:13.1%}")
    print(
        f"{'remainder (dispatch, ZomeContext, glue)':48s} {e2e - summed:8.1f} "
        f"{(e2e - summed) / e2e:13.1%}"
    )
    print(f"{'end-to-end transmit_understanding':48s} {e2e:8.1f}")
    return {
        "mode": mode,
        "e2e_us": round(e2e, 1),
        "stages_us": {k.strip(): round(v, 1) for k, v in stages.items()},
        "remainder_us": round(e2e - summed, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commits", type=int, default=3000)
    p.add_argument("--mode", default="process", choices=["process", "power"])
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--skip-profile", action="store_true")
    a = p.parse_args(argv)
    out = {"bench": "profile_commits"}
    if not a.skip_profile:
        out["profile"] = profile_view(a.mode, a.commits, a.top)
    out["ablation"] = ablation(a.mode, a.commits)
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
