"""`budgetnode nemesis`: real node processes, each on its own host (a Linux network namespace
with its own address on a shared bridge), joined only by `--bootstrap` multiaddrs, driven by
agents over their app sockets while a seeded schedule injects faults, then judged.

Faults (one at a time, from `random.Random(seed)`: which, on which node, for how long):
  kill       kill -9, then restart on the same data directory
  partition  the node's veth cut (link down), then mended: it and everyone else are cut apart
  pause      SIGSTOP, then SIGCONT
  move       a clean stop, then a restart on a new libp2p port
After the fault phase every node is healed, the writers stop, and the run waits (bounded) for
convergence; then the checker (sims/nemesis_check.py) judges what the nodes hold.

Parts: sims/netns.py (hosts), sims/nemesis_procs.py (node processes), sims/nemesis_clients.py
(writers and observer), sims/nemesis_check.py (verdicts)."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass

import trio

from node.apps import resolve
from node.core.crypto import to_text
from node.core.dna import Dna
from node.core.encoding import decode
from node.core.errors import BudgetError
from node.errgroups import unwrap_single_errors
from node.store import Store, store_path
from node.verifier import open_states, verify_path

from . import netns
from .nemesis_check import ChainView, History, judge, slowest
from .nemesis_clients import Clients
from .nemesis_procs import NodeFailed, NodeProc, _tail

FAULTS = ("kill", "partition", "pause", "move")
WRITE = ("memory", "transmit_understanding")  # the op every writer sends, its cost from the DNA
MESH_TIMEOUT_S = 60.0
POLL_S = 0.25
FAULT_GAP_S = (1.0, 3.0)  # quiet time before each fault
FAULT_LEN_S = (2.0, 6.0)  # how long a node stays killed, cut off, paused or moved


@dataclass(frozen=True)
class Config:
    nodes: int = 3
    minutes: float = 1.0
    faults: tuple[str, ...] = FAULTS
    seed: int = 1
    rate: float = 2.0  # writes a second, per node
    settle_s: float = 60.0
    agents: int = 1  # agents made on each node at the start (more as they run out of RU)
    max_agents: int = 200  # per node: a spent agent is replaced by a new one, up to this
    out: str | None = None


def say(msg: str) -> None:
    print(f"nemesis: {msg}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, cfg: Config, lan, out: str):
        self.cfg = cfg
        self.lan = lan
        self.rng = random.Random(cfg.seed)
        self.procs = [
            NodeProc(lan, lan.add_host(), os.path.join(out, f"node{i}")) for i in range(cfg.nodes)
        ]
        self.history = History()
        self.clients: Clients | None = None
        self.expected_down: set[int] = set()

    def bootstrap_for(self, i: int) -> list[str]:
        return [p.addr for j, p in enumerate(self.procs) if j != i and p.info]

    async def start_all(self) -> None:
        await self.procs[0].start([])
        for i, p in enumerate(self.procs[1:], 1):
            await p.start(self.bootstrap_for(i))
        say(f"{len(self.procs)} nodes up")

    async def wait_until(self, what: str, timeout: float, check) -> bool:
        """Poll `check()` (async, bool) until true or `timeout` passes: these are real processes
        on real sockets, so there is no event to wait on."""
        with trio.move_on_after(timeout):
            while not await check():  # noqa: ASYNC110 - another process's state: polled
                await trio.sleep(POLL_S)
            return True
        say(f"{what}: not within {timeout:.0f} s")
        return False

    async def meshed(self) -> bool:
        assert self.clients is not None
        for i in range(len(self.procs)):
            st = await self.clients.status(i)
            if st is None or len(st.get("peers", ())) < len(self.procs) - 1:
                return False
        return True

    # -- faults
    async def nemesis(self, until: float) -> None:
        """Faults one after another until `until`. Kinds come in seeded rounds (each round a
        shuffle of every enabled kind), so even a short run meets each of them."""
        kinds: list[str] = []
        while self.cfg.faults and trio.current_time() < until:
            await trio.sleep(self.rng.uniform(*FAULT_GAP_S))  # the schedule's quiet time
            if not kinds:
                kinds = list(self.cfg.faults)
                self.rng.shuffle(kinds)
            kind = kinds.pop()
            i = self.rng.randrange(len(self.procs))
            length = self.rng.uniform(*FAULT_LEN_S)
            if trio.current_time() + length > until:
                break
            await self.inject(kind, i, length)
        await trio.sleep_until(until)  # the writes go on for the whole phase, faults or none

    async def inject(self, kind: str, i: int, length: float) -> None:
        p = self.procs[i]
        self.history.faults[kind] += 1
        if kind == "kill":
            self.expected_down.add(i)
            await p.kill()
            await trio.sleep(length)  # the fault's length: how long the node stays dead
            await p.start(self.bootstrap_for(i))
            self.expected_down.discard(i)
        elif kind == "move":
            self.expected_down.add(i)
            await p.stop()
            p.port += 1
            await trio.sleep(length)
            await p.start(self.bootstrap_for(i))
            self.expected_down.discard(i)
        elif kind == "partition":
            self.lan.cut(p.host)
            p.cut = True
            await trio.sleep(length)
            self.lan.mend(p.host)
            p.cut = False
        elif kind == "pause":
            p.signal(signal.SIGSTOP)
            p.paused = True
            await trio.sleep(length)
            p.signal(signal.SIGCONT)
            p.paused = False
        else:
            raise ValueError(f"unknown fault {kind!r}")

    async def watchdog(self) -> None:
        """A node that exits on its own is a crash: recorded, and restarted so the run goes on."""
        while True:
            await trio.sleep(POLL_S)
            for i, p in enumerate(self.procs):
                if i in self.expected_down or p.running or p.proc is None:
                    continue
                err = _tail(os.path.join(p.directory, "up.err"), 2000)
                self.history.crashes.append(
                    {"node": i, "exit": p.proc.returncode, "stderr_tail": err}
                )
                say(f"node {i} crashed (exit {p.proc.returncode}); restarting")
                self.expected_down.add(i)
                await p.start(self.bootstrap_for(i))
                self.expected_down.discard(i)

    def heal(self) -> None:
        for p in self.procs:
            if p.cut:
                self.lan.mend(p.host)
                p.cut = False
            if p.paused:
                p.signal(signal.SIGCONT)
                p.paused = False

    # -- after the faults
    async def settled(self) -> bool:
        assert self.clients is not None
        await self.clients.observe_round()
        if self.clients.pending:
            return False
        for i in range(len(self.procs)):
            st = await self.clients.status(i)
            if st is None:
                return False
            pend = st["ops_pending"]
            if pend["unpublished"] or pend["limbo"] or len(st["peers"]) < len(self.procs) - 1:
                return False
        return True

    async def final_sweep(self) -> tuple[dict[str, set[int]], dict[int, list[dict]]]:
        """Every acknowledged write asked of every node (each node is asked about all of them:
        one that holds what it need not is no fault), and every node's warrants."""
        assert self.clients is not None
        hashes = [a.hash for a in self.history.acks]
        held: dict[str, set[int]] = {h: set() for h in hashes}
        warrants: dict[int, list[dict]] = {}
        for i in range(len(self.procs)):
            for k in range(0, len(hashes), 2000):
                found = await self.clients.held_at(i, hashes[k : k + 2000])
                for h in found or ():
                    held[h].add(i)
            st = await self.clients.status(i)
            warrants[i] = [] if st is None else st["warrants"]
        return held, warrants


def read_views(directory: str) -> tuple[dict[str, ChainView], str | None]:
    """A stopped node's store: verified in full (`budgetnode verify`), then every chain it holds
    as the node re-derives it on open. (views, None) or ({}, the error)."""
    try:
        verify_path(directory)
        store = Store(store_path(directory))
        try:
            raw = store.get_meta("dna")
            assert raw is not None  # verify_path refuses a store that names no network
            dna = Dna.from_dict(decode(raw))
            authors = list(dict.fromkeys(store.authors(every=True) + store.held_authors()))
            states = open_states(store, authors, dna, resolve(None))
        finally:
            store.close()
    except BudgetError as e:
        return {}, str(e)
    return {
        to_text("agent", a): ChainView(cs.seq, to_text("action", cs.hash), *_budget(cs.budget))
        for a, cs in states.items()
    }, None


def _budget(b) -> tuple[int, int, int]:
    return b.window_start_us, b.remaining_mru, b.used_mru


async def run(cfg: Config) -> dict:
    """One nemesis run; the report (sims/nemesis_check.py). Everything it made is removed
    however it ends (the data directories too, unless `cfg.out` names where to keep them)."""
    netns.preflight()
    cleaned = netns.clean_leftovers()
    if cleaned:
        say(f"removed what earlier runs left: {', '.join(cleaned)}")
    out = cfg.out or tempfile.mkdtemp(prefix="budgetnode-nemesis-")
    os.makedirs(out, exist_ok=True)
    lan = netns.Lan()
    say(f"run {lan.run}: hosts on {lan.net}.0/24")
    run_ = None
    try:
        run_ = Run(cfg, lan, out)
        await run_.start_all()
        report = await _drive(run_, cfg, out)
        report.update(seed=cfg.seed, nodes=cfg.nodes, minutes=cfg.minutes, run=lan.run)
        if cfg.out:
            text = json.dumps(report, indent=2, sort_keys=True)
            await trio.Path(out, "report.json").write_text(text)
        return report
    finally:
        # however the run ends (Ctrl-C included): every process reaped, then the hosts removed
        with trio.CancelScope(shield=True), trio.move_on_after(60):
            for p in run_.procs if run_ else ():
                try:
                    await p.kill()
                except NodeFailed as e:
                    say(str(e))
        lan.close()
        if not cfg.out:
            shutil.rmtree(out, ignore_errors=True)


async def _drive(r: Run, cfg: Config, out: str) -> dict:
    t0 = trio.current_time()
    clients = r.clients = Clients(r.procs, r.history, t0, cfg.rate, cfg.max_agents)
    for i in range(cfg.nodes):
        for _ in range(cfg.agents):
            if await clients.new_agent(i) is None:
                raise NodeFailed(f"node {i} did not make an agent")
    if not await r.wait_until("every node knows every other", MESH_TIMEOUT_S, r.meshed):
        raise NodeFailed("the nodes did not find each other")
    say(f"writing for {cfg.minutes:g} min with faults {','.join(cfg.faults) or 'none'}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(r.watchdog)
        for i in range(cfg.nodes):
            nursery.start_soon(clients.writer, i)
        nursery.start_soon(clients.observe, POLL_S)
        await r.nemesis(trio.current_time() + cfg.minutes * 60)
        r.heal()
        nursery.cancel_scope.cancel()
    # a node killed as the phase ended is back (the watchdog was cancelled with the rest)
    for i, p in enumerate(r.procs):
        if not p.running:
            await p.start(r.bootstrap_for(i))
    say(f"{len(r.history.acks)} writes acknowledged; waiting for convergence")
    converged = await r.wait_until("convergence", cfg.settle_s, r.settled)
    held, warrants = await r.final_sweep()
    node_ids = clients.node_ids()
    for p in r.procs:
        await p.stop()
    views, errors = {}, {}
    for i, p in enumerate(r.procs):
        views[i], err = read_views(p.directory)
        if err:
            errors[i] = err
    dna = Dna.for_app(resolve(None))
    report = judge(
        r.history,
        node_ids,
        held,
        clients.visible_at,
        warrants,
        views,
        errors,
        converged,
        dna.base_mru,
        dna.cost(WRITE[1]),
    )
    report["details"]["slowest"] = slowest(r.history, node_ids, clients.seen_at)
    return report


# -- the command line
def _faults(text: str) -> tuple[str, ...]:
    kinds = tuple(k for k in text.split(",") if k)
    bad = [k for k in kinds if k not in FAULTS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown fault {bad[0]!r}: choose from {','.join(FAULTS)} (comma-separated)"
        )
    return tuple(dict.fromkeys(kinds))


def _bounded(kind, lo, hi, what):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: not a number: {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{what} is from {lo} to {hi}, not {text}")
        return v

    return parse


def add_parser(sub) -> argparse.ArgumentParser:
    d = Config()
    p = sub.add_parser(
        "nemesis",
        help="fault injection over real node processes on separate hosts (root, Linux netns)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "--nodes", type=_bounded(int, 2, 50, "--nodes"), default=d.nodes, help="node processes"
    )
    p.add_argument(
        "--minutes",
        type=_bounded(float, 0.05, 24 * 60, "--minutes"),
        default=d.minutes,
        help="length of the write-and-fault phase",
    )
    p.add_argument(
        "--faults",
        type=_faults,
        default=d.faults,
        help=f"comma-separated, from {','.join(FAULTS)} (default all; '' for none)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="the fault schedule's seed")
    p.add_argument(
        "--rate",
        type=_bounded(float, 0.1, 100, "--rate"),
        default=d.rate,
        help="writes a second per node",
    )
    p.add_argument(
        "--settle",
        type=_bounded(float, 1, 3600, "--settle"),
        default=d.settle_s,
        help="seconds allowed for convergence after the faults stop",
    )
    p.add_argument("--out", help="keep the nodes' directories, logs and report.json here")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_run_cli)
    return p


async def _run_cli(args) -> int:
    cfg = Config(
        nodes=args.nodes,
        minutes=args.minutes,
        faults=args.faults,
        seed=args.seed,
        rate=args.rate,
        settle_s=args.settle,
        out=args.out,
    )
    report = None
    try:
        # SIGTERM and SIGHUP stop the run as Ctrl-C does: cancelled, so everything is torn down
        with (
            unwrap_single_errors(),
            trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as sigs,
        ):
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for sig in sigs:
                        say(f"stopping on {signal.Signals(sig).name}: removing the nodes and hosts")
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                report = await run(cfg)
                nursery.cancel_scope.cancel()
    except NodeFailed as e:  # a node that would not start (again): the run cannot be judged
        say(f"the run stopped: {e} (seed {cfg.seed}; --out DIR keeps each node's up.err)")
        return 1
    if report is None:
        return 143
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        brief = {k: v for k, v in report.items() if k != "details"}
        print(json.dumps(brief, indent=2, sort_keys=True))
    if not report["ok"]:
        say(f"verdicts failed: {', '.join(report['failed'])} (seed {cfg.seed})")
        return 1
    return 0
