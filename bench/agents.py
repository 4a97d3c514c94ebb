"""Agent creation at scale: N agents (default 100,000) on one in-process node.

`await node.new_agent()` on one `LocalNode.open(path, clock=fake)` in a loop, timed in blocks
of --block agents. At the first block and at each checkpoint (default 10k, 50k, 100k) a floor
block and a fresh-node block run just before and just after the agents' block:

  floor  SigningKey.generate + one 80-byte append and fsync to a file + one INSERT of a
         genesis-sized row in its own BEGIN IMMEDIATE/COMMIT (WAL, synchronous=NORMAL):
         what any agent creation that keeps its key durable must do

  fresh  the same agent creation on a second node that holds only the agents these blocks
         made (at most 2 x block x checkpoints): the same work on an empty store

The ratio at a checkpoint is floor time / agent time (1.0 = no overhead over the floor);
fresh_ratio is fresh-node time / agent time, 1.0 when creation is constant time, and
first_over_last is the first block's time per agent over the last's. Then `budgetnode status
--url --json` runs (a subprocess) against an app server on the node and must list every agent;
the node is closed and re-opened (timed: it re-validates every chain), and the keystore alone is
re-opened (timed).

With --no-fsync, os.fsync is a no-op in both (CPU and SQLite only): the disk's fsync time
varies by 10x from minute to minute on a shared machine and hides any trend in the rest.

    python bench/agents.py [--agents 100000] [--block 1000] [--checkpoints 10000,50000]
                           [--no-fsync]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile

import trio

from node.core.crypto import SigningKey
from node.keystore import FILE, Keystore
from node.sdk import LocalNode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import FakeClock, bench_dir, emit, env, log, perf  # noqa: E402


class Floor:
    def __init__(self, directory: str):
        self.fd = os.open(
            os.path.join(directory, "floor.keys"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        self.db = sqlite3.connect(os.path.join(directory, "floor.db"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE a (hash BLOB PRIMARY KEY, author BLOB, body BLOB)")
        self.body = os.urandom(200)

    def block(self, n: int) -> float:
        t = perf()
        for _ in range(n):
            key = SigningKey.generate(os.urandom)
            os.write(self.fd, key.seed + key.public + key.seed[:16])
            os.fsync(self.fd)
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO a VALUES (?, ?, ?)", (os.urandom(32), key.public, self.body)
            )
            self.db.execute("COMMIT")
        return perf() - t

    def close(self) -> None:
        os.close(self.fd)
        self.db.close()


async def _agents(node, n: int) -> float:
    t = perf()
    for _ in range(n):
        await node.new_agent()
    return perf() - t


async def _create(
    path: str, fresh_path: str, n: int, block: int, checkpoints: set[int], floor: Floor
):
    blocks = []  # (agents after the block, s per agent, floor s per op, fresh node s per agent)
    t_all = perf()
    async with (
        LocalNode.open(path=path, clock=FakeClock()) as node,
        LocalNode.open(path=fresh_path, clock=FakeClock()) as fresh,
    ):
        done = 0
        while done < n:
            size = min(block, n - done)
            if done == 0 or done + size in checkpoints:
                # floor, fresh node, this node, fresh node, floor: each pair brackets the block
                f0, e0 = floor.block(size), await _agents(fresh, size)
                dt = await _agents(node, size)
                e1, f1 = await _agents(fresh, size), floor.block(size)
                blocks.append((done + size, dt / size, (f0 + f1) / 2 / size, (e0 + e1) / 2 / size))
            else:
                blocks.append((done + size, await _agents(node, size) / size, None, None))
            done += size
            _, s, f, e = blocks[-1]
            if f is not None or done % (10 * block) == 0:
                log(
                    f"  {done:7d} agents: {s * 1e3:6.2f} ms/agent"
                    + (f"  floor {f * 1e3:6.2f} ms  fresh node {e * 1e3:6.2f} ms" if f else "")
                )
        total = perf() - t_all
        status = await _status_url(node)
        log(f"status --url listed {status[1]} agents in {status[0]:.1f}s")
        if status[1] != len(node.cells):
            raise SystemExit(f"status --url listed {status[1]} of {len(node.cells)} agents")
    return blocks, total, status


async def _status_url(node) -> tuple[float, int]:
    """`budgetnode status --url --json` (a subprocess, as an operator runs it) against an app
    server on `node`: (seconds, agents it listed)."""
    from node.app.server import AppServer

    async with trio.open_nursery() as nursery:
        server = await nursery.start(AppServer(node).serve, "127.0.0.1", 0)
        argv = [sys.executable, "-m", "node.cli", "status", "--url", server.app_url, "--json"]
        t = perf()
        done = await trio.run_process(
            argv,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "BUDGETNODE_TOKEN": server.token},
        )
        dt = perf() - t
        nursery.cancel_scope.cancel()
    if done.returncode != 0:
        raise SystemExit(f"status --url failed: {done.stderr.decode().strip()}")
    return dt, len(json.loads(done.stdout)["agents"])


async def _reopen(path: str) -> tuple[float, int]:
    t = perf()
    async with LocalNode.open(path=path, clock=FakeClock()) as node:
        dt = perf() - t
        return dt, len(node.cells)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=100_000)
    p.add_argument("--block", type=int, default=1000)
    p.add_argument("--checkpoints", default="10000,50000")
    p.add_argument("--no-fsync", action="store_true")
    a = p.parse_args(argv)
    if a.no_fsync:
        os.fsync = lambda fd: None  # this process only; see the docstring
    checkpoints = {int(x) for x in a.checkpoints.split(",") if x} | {a.agents}

    d = tempfile.mkdtemp(prefix="bench-agents-", dir=bench_dir())
    try:
        floor = Floor(d)
        node_dir = os.path.join(d, "node")
        blocks, total, (status_s, status_agents) = trio.run(
            _create, node_dir, os.path.join(d, "fresh"), a.agents, a.block, checkpoints, floor
        )
        floor.close()
        ks_bytes = os.path.getsize(os.path.join(node_dir, FILE))
        db_bytes = sum(
            os.path.getsize(os.path.join(node_dir, f))
            for f in os.listdir(node_dir)
            if f.startswith("chain.db")
        )
        t = perf()
        ks = Keystore.open(node_dir)
        ks_open = perf() - t
        reopen, cells = trio.run(_reopen, node_dir)
        log(
            f"agents: {a.agents} in {total:.1f}s; keystore {ks_bytes} B ({len(ks)} keys) "
            f"re-opens in {ks_open:.3f}s; the node ({cells} cells) in {reopen:.1f}s"
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)

    points = [
        {
            "after": done,
            "ms_per_agent": round(s * 1e3, 3),
            "floor_ms": round(f * 1e3, 3),
            "ratio": round(f / s, 3),
            "fresh_node_ms": round(e * 1e3, 3),
            "fresh_ratio": round(e / s, 3),
        }
        for done, s, f, e in blocks
        if f is not None
    ]
    tenth = max(1, len(blocks) // 10)  # the trend over the whole run, floor blocks aside
    by_tenth = [
        round(sum(b[1] for b in blocks[i : i + tenth]) / len(blocks[i : i + tenth]) * 1e3, 3)
        for i in range(0, len(blocks), tenth)
    ]
    emit(
        {
            "bench": "agents",
            "agents": a.agents,
            "block": a.block,
            "fsync": not a.no_fsync,
            "points": points,
            "ms_per_agent_by_tenth": by_tenth,
            "first_over_last": round(blocks[0][1] / blocks[-1][1], 3),
            "total_s": round(total, 1),
            "status_url_s": round(status_s, 1),
            "status_url_agents": status_agents,  # the agents plus the node's steward
            "keystore_bytes": ks_bytes,
            "chain_db_bytes": db_bytes,
            "keystore_open_s": round(ks_open, 3),
            "node_reopen_s": round(reopen, 1),
            "env": env(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
