"""Durable, signed, budget-checked commits per second through the SDK, against a floor.

SDK path (what is measured): `await agent.transmit_understanding(...)` on a LocalNode
opened on a fresh directory; each call is one zome dispatch, entry validation, a budget
charge, CBOR encoding, an Ed25519 signature, BLAKE2b hashing, self-validation and one
SQLite transaction (head compare-and-swap, action row, entry row, two index rows).
The injected clock jumps 86,400 s every 30 writes so the 100 RU budget never refuses.

Floor (same process, same directory, same round): a bare loop of Ed25519 sign
(cryptography) + BLAKE2b-256 + one INSERT per BEGIN IMMEDIATE/COMMIT transaction on a
WAL database with the same `synchronous` setting, over bodies the size of a real action.

Both durability modes: "process" (synchronous=NORMAL) and "power" (synchronous=FULL).
Rounds alternate SDK/floor order (ABBA) and the ratio is median(SDK) / median(floor).

    python bench/commits.py [--seconds 2] [--rounds 3] [--modes process,power]
    BENCH_DIR=/some/disk python bench/commits.py     # where the databases go
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.sdk import LocalNode
from node.store import DURABILITY

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import CLOCK_HELP, FakeClock, bench_dir, emit, env, log, summary  # noqa: E402

GOAL_RATIO = 0.5
GOAL_RATE = 5_000
WRITES_PER_WINDOW = 30  # x 3 RU = 90 RU <= the 100 RU base budget


def _payload(i: int) -> dict:
    return {
        "subject": f"subject-{i % 100}",
        "predicate": "relates-to",
        "object": f"object-{i}",
        "context": "benchmark",
    }


async def _sdk_round(
    mode: str, seconds: float, warmup: int = 50, writers: int = 1
) -> tuple[int, float, float]:
    """(commits, elapsed, mean action body bytes) for one fresh node; `writers` agents each
    write in a loop of their own, all at once (concurrent tasks on one node)."""
    d = tempfile.mkdtemp(prefix="bench-commits-", dir=bench_dir())
    clock = FakeClock()
    try:
        async with LocalNode.open(path=d, clock=clock, durability=mode) as node:
            agents = [await node.new_agent() for _ in range(writers)]
            count = [0]  # writes so far, all agents: the clock jumps every 30 of them
            stop = [False]
            measured = [0]

            async def loop(agent, quota=None):
                while not stop[0] and (quota is None or quota > 0):
                    i = count[0]
                    count[0] += 1
                    if i % WRITES_PER_WINDOW == 0:
                        clock.advance()
                    await agent.transmit_understanding(**_payload(i))
                    measured[0] += 1
                    if quota is not None:
                        quota -= 1

            async with trio.open_nursery() as nursery:  # warm-up
                for agent in agents:
                    nursery.start_soon(loop, agent, max(1, warmup // writers))
            measured[0] = 0
            t0 = _common.perf()

            async def stopper():
                while _common.perf() - t0 < seconds:  # noqa: ASYNC110 - a wall-clock deadline, no event to wait on
                    await trio.sleep(0.01)
                stop[0] = True

            async with trio.open_nursery() as nursery:
                for agent in agents:
                    nursery.start_soon(loop, agent)
                nursery.start_soon(stopper)
            elapsed = _common.perf() - t0
            body_len = node.store.db.execute(
                "SELECT avg(length(body)) FROM actions WHERE seq > 0"
            ).fetchone()[0]
            return measured[0], elapsed, body_len
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _floor_round(mode: str, seconds: float, body_len: int, warmup: int = 50) -> tuple[int, float]:
    d = tempfile.mkdtemp(prefix="bench-floor-", dir=bench_dir())
    try:
        db = sqlite3.connect(os.path.join(d, "floor.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={DURABILITY[mode]}")
        db.execute(
            "CREATE TABLE actions(id INTEGER PRIMARY KEY, hash BLOB UNIQUE NOT NULL, "
            "body BLOB NOT NULL, sig BLOB NOT NULL)"
        )
        sk = Ed25519PrivateKey.generate()
        base = os.urandom(body_len)
        blake2b = hashlib.blake2b
        execute = db.execute
        sign = sk.sign

        def one(i: int) -> None:
            body = i.to_bytes(8, "big") + base[8:]
            sig = sign(body)
            h = blake2b(body, digest_size=32).digest()
            execute("BEGIN IMMEDIATE")
            execute("INSERT INTO actions(hash, body, sig) VALUES (?,?,?)", (h, body, sig))
            execute("COMMIT")

        i = 0
        for _ in range(warmup):
            one(i)
            i += 1
        n = 0
        t0 = _common.perf()
        deadline = t0 + seconds
        while True:
            one(i)
            i += 1
            n += 1
            if _common.perf() >= deadline:
                break
        elapsed = _common.perf() - t0
        db.close()
        return n, elapsed
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _probe_body_len() -> int:
    async def probe():
        return (await _sdk_round("process", 0.05, warmup=5))[2]

    return int(round(trio.run(probe)))


def run_mode(mode: str, seconds: float, rounds: int, body_len: int, writers: int = 1) -> dict:
    sdk, floor, paired = [], [], []
    for r in range(rounds):
        order = ("sdk", "floor") if r % 2 == 0 else ("floor", "sdk")
        got = {}
        for which in order:
            if which == "sdk":
                n, el, _ = trio.run(_sdk_round, mode, seconds, 50, writers)
            else:
                n, el = _floor_round(mode, seconds, body_len)
            got[which] = n / el
        sdk.append(got["sdk"])
        floor.append(got["floor"])
        paired.append(got["sdk"] / got["floor"])
        log(
            f"  {mode:7s} x{writers} round {r + 1}/{rounds}: sdk {got['sdk']:9.1f}/s  "
            f"floor {got['floor']:9.1f}/s  ratio {paired[-1]:.3f}"
        )
    rate, fl = statistics.median(sdk), statistics.median(floor)
    ratio = rate / fl
    return {
        "bench": "commits",
        "mode": mode,
        "writers": writers,
        "synchronous": DURABILITY[mode],
        "rate": round(rate, 1),
        "floor": round(fl, 1),
        "ratio": round(ratio, 4),
        "paired_ratio_median": round(statistics.median(paired), 4),
        "us_per_commit": round(1e6 / rate, 1),
        "us_per_floor_op": round(1e6 / fl, 1),
        "goal_ratio": GOAL_RATIO,
        "goal_rate": GOAL_RATE,
        "meets_ratio": ratio >= GOAL_RATIO,
        "meets_rate": rate >= GOAL_RATE,
        "sdk_rounds": summary(sdk)["rounds"],
        "floor_rounds": summary(floor)["rounds"],
        "action_body_bytes": body_len,
        "seconds_per_measurement": seconds,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per mode (default 3)")
    p.add_argument("--modes", default="process,power")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help=CLOCK_HELP)
    p.add_argument(
        "--writers",
        default="1,8",
        help="agents writing at once on one node, one run per value (default 1,8)",
    )
    a = p.parse_args(argv)
    _common.use_clock(a.clock)
    body_len = _probe_body_len()
    log(
        f"commits: action body ~{body_len} bytes; db dir {bench_dir() or tempfile.gettempdir()}; "
        f"{env()}"
    )
    for mode in a.modes.split(","):
        for writers in a.writers.split(","):
            res = run_mode(mode.strip(), a.seconds, a.rounds, body_len, int(writers))
            res["clock"] = a.clock
            res["env"] = env()
            emit(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
