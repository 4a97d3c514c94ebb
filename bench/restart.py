"""How long a node takes to open a store with a long history (issue 19: <= 2 s at 1,000,000
stored actions), against a floor measured in the same run: opening SQLite and reading every
chain's head and checkpoint rows, which any open must do.

    python bench/restart.py --dir /tmp/restart-1m            # builds the store once (~2-4 min)
    python bench/restart.py --dir /tmp/restart-1m --rounds 5  # later runs measure only

The store is built through the store layer, in bulk (thousands of appends a transaction), from
honest signed chains: `--own` agents of the node itself, `--held` other authors' chains held as
their author-key authority, and `--ops` single actions held for a hash or entry basis, each
action made as a cell makes it (a steward's witness opens each new window) and checked by the
validator before it is written. Then each round, in ABBA order: the floor, and a network node's
open (`NetNode.open` on the memory transport, from the call until it is ready to serve: the
DNA, the keystore, every own chain and held chain from its checkpoint, the warrants).
`--full` also times `budgetnode verify` (every action from genesis) once.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from node.core import budget  # noqa: E402
from node.core.action import Signed, entry_bytes  # noqa: E402
from node.core.crypto import SigningKey, blake2b_256, forget_verified  # noqa: E402
from node.core.validate import validate_genesis, validate_next  # noqa: E402
from node.core.witness import sign_witness  # noqa: E402
from node.local_node import LocalNode  # noqa: E402
from node.net.dht_store import DhtStore  # noqa: E402
from node.net.memory import MemoryNetwork  # noqa: E402
from node.net.node import NetNode  # noqa: E402
from node.store import store_path  # noqa: E402
from node.verifier import verify_path  # noqa: E402

START_US = 1_730_678_400 * 1_000_000
BATCH = 5_000  # appends a transaction while building


def honest_chain(key: SigningKey, steward: SigningKey, dna, app, n: int, t0: int):
    """(action, (entry hash, entry), index keys, state after it) for an n-action chain that
    writes understandings, 3 RU each, a second apart; a due window is opened by the steward's
    witness, as a cell does it."""
    g = Signed.sign(
        {
            "type": "genesis",
            "author": key.public,
            "seq": 0,
            "prev": None,
            "ts": t0,
            "dna": dna.hash,
        },
        key,
    )
    state = validate_genesis(g, dna, verify_sig=False)
    yield g, None, (), state
    edef = app.entry_def("understanding")
    cost = dna.cost(edef.op)
    ts = t0
    for i in range(1, n):
        ts += 1_000_000
        start, w = state.budget, None
        if cost > start.remaining_mru:
            ts = max(ts, start.window_start_us + dna.window_us)
            w = sign_witness(steward, dna.hash, key.public, state.hash, ts)
            start = budget.open_window(start, ts, dna)
        content = {"subject": f"s{i % 64}", "predicate": "p", "object": f"o{i}", "context": None}
        body = entry_bytes("understanding", content)
        b = budget.charge(start, cost, ts, dna)
        action = {
            "type": "create",
            "author": key.public,
            "seq": i,
            "prev": state.hash,
            "ts": ts,
            "entry_type": "understanding",
            "entry": blake2b_256(body),
            "budget": {
                "op": edef.op,
                "cost": cost,
                "ws": b.window_start_us,
                "rem": b.remaining_mru,
            },
        }
        if w is not None:
            action["witness"] = w
        s = Signed.sign(action, key)
        state = validate_next(state, s, dna, app, body, verify_sig=False)  # honest, and checked
        yield s, (s.action["entry"], body), edef.index_of(content), state


async def build(path: str, own: int, held: int, ops: int, length: int) -> dict:
    t0 = time.perf_counter()
    async with LocalNode.open(path=path, clock=lambda: START_US / 1e6) as node:
        dna, app, store = node.dna, node.app, node.store
        steward = node.keystore.get(dna.stewards[0])
        assert steward is not None
        dht = DhtStore(store)
        written = 0

        async def own_chain(i: int) -> None:
            nonlocal written
            key = SigningKey(blake2b_256(b"own%d" % i))
            node.keystore.add(key)
            items, prev = [], (None, None)
            for s, entry, index, state in honest_chain(key, steward, dna, app, length, START_US):
                items.append((s, *prev, entry, index, None, state))
                prev = (s.seq, s.hash)
                if len(items) == BATCH:
                    errors = await store.append_many(items)
                    assert not any(errors), errors
                    written, items = written + len(items), []
            if items:
                assert not any(await store.append_many(items))
                written += len(items)

        async def held_chain(i: int) -> None:
            nonlocal written
            key = SigningKey(blake2b_256(b"held%d" % i))
            items = []
            for s, entry, index, state in honest_chain(key, steward, dna, app, length, START_US):
                items.append((s, entry and entry[1], index, state))
                if len(items) == BATCH:
                    await dht.put_foreign_many(items)
                    written, items = written + len(items), []
            if items:
                await dht.put_foreign_many(items)
                written += len(items)

        for i in range(own):
            await own_chain(i)
        for i in range(held):
            await held_chain(i)
        # single ops: a hash/entry authority holds an action, not its author's chain
        items, authors = [], 0
        while written < (own + held) * length + ops and authors < 1 << 20:
            key = SigningKey(blake2b_256(b"op%d" % authors))
            authors += 1
            for s, entry, _, _ in honest_chain(key, steward, dna, app, 100, START_US):
                items.append((s, entry and entry[1], None))
                written += 1
            if len(items) >= BATCH:
                await dht.put_ops(items)
                items = []
        if items:
            await dht.put_ops(items)
        print(f"built {written:,} actions in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return {"actions": written}


def floor_open(path: str) -> float:
    """Open SQLite and read every chain's head and checkpoint rows."""
    t0 = time.perf_counter()
    db = sqlite3.connect(store_path(path))
    db.execute("SELECT * FROM heads").fetchall()
    db.execute("SELECT * FROM held").fetchall()
    db.execute("SELECT * FROM checkpoints").fetchall()
    db.close()
    return time.perf_counter() - t0


async def node_open(path: str) -> tuple[float, int]:
    network = MemoryNetwork()
    forget_verified()  # each round checks its signatures afresh, as a restarted process does
    t0 = time.perf_counter()
    async with NetNode.open(network.transport, path=path, clock=lambda: START_US / 1e6) as node:
        elapsed = time.perf_counter() - t0
        chains = len(node.cells) + len(node.chains)
    return elapsed, chains


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="the store (built there if absent)")
    ap.add_argument("--own", type=int, default=20, help="own agents")
    ap.add_argument("--held", type=int, default=780, help="other authors' chains held")
    ap.add_argument("--length", type=int, default=1_000, help="actions a chain")
    ap.add_argument("--ops", type=int, default=200_000, help="single ops held")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="also time `budgetnode verify` once")
    args = ap.parse_args()
    if not os.path.exists(store_path(args.dir)):
        trio.run(build, args.dir, args.own, args.held, args.ops, args.length)
    db = sqlite3.connect(store_path(args.dir))
    actions = db.execute("SELECT count(*) FROM actions").fetchone()[0]
    held_ops = db.execute("SELECT count(*) FROM ops").fetchone()[0]
    db.close()
    size = os.path.getsize(store_path(args.dir))
    opens, floors, chains = [], [], 0
    for r in range(args.rounds):
        for which in ("floor", "open") if r % 2 == 0 else ("open", "floor"):
            if which == "floor":
                floors.append(floor_open(args.dir))
            else:
                t, chains = trio.run(node_open, args.dir)
                opens.append(t)
    out = {
        "stored_actions": actions + held_ops,
        "chain_actions": actions,
        "held_ops": held_ops,
        "chains": chains,
        "db_mb": round(size / 2**20),
        "open_s_median": round(statistics.median(opens), 3),
        "open_s_worst": round(max(opens), 3),
        "floor_s_median": round(statistics.median(floors), 4),
        "ratio_open_to_floor": round(statistics.median(opens) / statistics.median(floors), 1),
    }
    if args.full:
        t0 = time.perf_counter()
        verify_path(args.dir)
        out["full_verify_s"] = round(time.perf_counter() - t0, 1)
        out["full_verify_actions_per_s"] = round((actions + held_ops) / out["full_verify_s"])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
