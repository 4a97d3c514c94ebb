"""The simulation runner: real NetNodes on the simulated network, one trio run on a MockClock.

Phases: start (nodes open, create their agents, join node 0), warm-up (peer tables fill),
faults + workload until `hours`, then liveness: faults stop, every node is up again, and the
cluster must converge (consistency_lag() empty, every honest write held by its authorities,
every cheater warranted at every honest node) within `deadline` simulated seconds.

Why one file of ~900 lines: the run's orchestration (slots, starts and restarts, faults) and
its checks (the per-second checker, rogue accounting, the liveness lag) read the same slot
state every simulated second; the pure parts already live apart (config.py, invariants.py,
net.py, workload.py). The checker is the part to move out next, as a class given the slots.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import heapq
import itertools
import os
import random
import shutil
import statistics
import tempfile
import time
import traceback
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from node.core import dht
from node.core.budget import InsufficientRU
from node.core.crypto import to_text
from node.core.dna import Dna
from node.core.errors import BudgetError
from node.net import acceptor, peer_table
from node.net.cluster import consistency_lag
from node.net.node import NetNode
from node.net import rogue as adversarial

from .config import START_UNIX, SimConfig
from .invariants import audit_chain
from .net import SimClock, SimNetwork
from .economy import Economy
from .trust import TrustRoots
from .workload import Workload

if TYPE_CHECKING:  # imported only for a libp2p run: libp2p is slow to import
    from .realnet import Libp2pNetwork
import trio.lowlevel

MAX_VIOLATIONS = 200


class Slot:
    """One node position: its store directory survives restarts; the NetNode does not."""

    def __init__(
        self,
        index: int,
        path: str,
        rogue: tuple,
        skew: float,
        seed: int,
        clock,
        byzantine: bool = False,
    ):
        self.index = index
        self.path = path
        self.rogue = rogue
        self.byzantine = byzantine  # honest node code behind a transport that lies (sims/byzantine)
        self.honest = not rogue and not byzantine
        self.skew = skew
        self.seed = seed
        self.node: NetNode | None = None
        self.id: bytes | None = None
        self.scope: trio.CancelScope | None = None
        self.stop: trio.Event | None = None
        self.incarnation = 0
        self.starting = False
        self.agents: list[str] = []
        self._mock = clock
        self.crashes = self.leaves = 0

    @property
    def running(self) -> NetNode:
        """The node of a slot its caller knows is up (a live() one)."""
        if self.node is None:
            raise RuntimeError(f"node {self.index} is down")
        return self.node

    def listen_addr(self) -> str:
        # NetNode.open sets `transport` (node.py, unchecked until its split lands)
        return self.running.transport.listen_addrs()[0]  # type: ignore[attr-defined]

    def clock(self) -> float:
        return START_UNIX + self._mock.current_time() + self.skew

    def randbytes(self):
        return random.Random(f"{self.seed}:node:{self.index}:{self.incarnation}").randbytes


class Simulation:
    def __init__(self, cfg: SimConfig, root: str):
        self.cfg = cfg
        self.root = root
        s = cfg.seed
        if cfg.transport == "libp2p":  # the cross-check: real hosts, wall-clock time
            from . import realnet

            realnet.check_config(cfg)
            self.clock: trio.abc.Clock = realnet.RealClock()
            self.net: SimNetwork | Libp2pNetwork = realnet.Libp2pNetwork()
        elif cfg.transport == "sim":
            self.clock = clock = SimClock()
            self.net = SimNetwork(
                random.Random(f"{s}:net"),
                clock,
                latency=cfg.latency,
                jitter=cfg.jitter,
                loss=cfg.loss,
                dup=cfg.dup,
                reorder=cfg.reorder,
            )
        else:
            raise ValueError(f"transport must be 'sim' or 'libp2p', not {cfg.transport!r}")
        self.rng_faults = random.Random(f"{s}:faults")
        self.rng_check = random.Random(f"{s}:check")
        self.workload = Workload(self, random.Random(f"{s}:workload"))
        # budgets as authorizers (issue 16), from a stream of its own: off, a run is as before
        self.economy = Economy(self, random.Random(f"{s}:economy")) if cfg.economy else None
        self.trust = TrustRoots(self)
        rng_nodes = random.Random(f"{s}:nodes")
        rogue_idx = (
            set(rng_nodes.sample(range(1, cfg.nodes), min(cfg.rogue, cfg.nodes - 1)))
            if cfg.rogue
            else set()
        )
        # drawn from a stream of their own, so runs without them stay what they were
        byzantine_idx = (
            set(
                random.Random(f"{s}:byzantine").sample(
                    [i for i in range(1, cfg.nodes) if i not in rogue_idx],
                    min(cfg.byzantine, max(0, cfg.nodes - 1 - len(rogue_idx))),
                )
            )
            if cfg.byzantine
            else set()
        )
        modes = list(cfg.rogue_modes)
        self.slots = []
        k = 0
        for i in range(cfg.nodes):
            rogue: tuple[str, ...] = ()
            if i in rogue_idx:
                rogue = (modes[k % len(modes)],)
                k += 1
            skew = rng_nodes.uniform(-cfg.skew, cfg.skew) if cfg.skew else 0.0
            self.slots.append(
                Slot(i, os.path.join(root, f"n{i}"), rogue, skew, s, self.clock, i in byzantine_idx)
            )
        self.violations: list[str] = []
        self.crashes: Counter[str] = Counter()  # "honest" / "byzantine" / "rogue" node crashes
        self._seen_violations: set[str] = set()
        self.dna: Dna | None = None
        self.writes = 0
        self.rogue_writes = 0
        self.pending: dict[bytes, list] = {}  # action hash -> [t, author, seq, bases, auths]
        self.all_writes: list[tuple] = []  # (author, seq, [hash, author, entry] bases)
        self.latencies: list[float] = []
        self.epoch = 0  # bumps when node membership changes
        self.timeline: list[tuple] = []  # (t, pending, converged so far, remaining RU avg)
        self.phase = "start"
        self.converged = False
        self.lag_left: list[str] = []
        self.churn_events: Counter[str] = Counter()
        self.progress_cb = None
        self._honest: tuple[int, set[bytes | None], set[bytes]] | None = None
        self._membership_key: tuple[int, int] | None = None
        self._membership_now: tuple[dht.Ring, dict[bytes | None, Slot], set[bytes]] | None = None
        self._live_epoch: int | None = None
        self._live_now: tuple[list[Slot], list[dict[bytes, Any]], tuple[list[Any], ...]] | None = (
            None
        )
        self._warrants_checked: tuple[object, ...] | None = None

    # -- violations
    def violation(self, text: str) -> None:
        key = text
        if key in self._seen_violations or len(self.violations) >= MAX_VIOLATIONS:
            return
        self._seen_violations.add(key)
        self.violations.append(f"t={trio.current_time():.1f}s {text}")

    # -- nodes
    def live(self) -> list[Slot]:
        return list(self._live()[0])

    def _live(self) -> tuple[list[Slot], list[dict], tuple]:
        """(live slots, the warrant tables of the honest ones, every live node's bounded
        queues: limbo, peer table, fetches), kept until a node starts or stops (the epoch
        moves): the checker asks every simulated second. A node never replaces those tables."""
        live_now = self._live_now
        if live_now is None or self._live_epoch != self.epoch:
            live = [s for s in self.slots if s.node is not None]
            nodes = [s.running for s in live]
            queues = (
                [n.limbo for n in nodes],
                [n.peers for n in nodes],
                [n._fetching for n in nodes],
            )
            live_now = (live, [s.running.warranted for s in live if s.honest], queues)
            self._live_now = live_now
            self._live_epoch = self.epoch
        return live_now

    def honest_live(self) -> list[Slot]:
        return [s for s in self.slots if s.node is not None and s.honest]

    async def _run_node(self, slot: Slot, bootstrap=(), task_status=trio.TASK_STATUS_IGNORED):
        cfg = self.cfg
        slot.stop = trio.Event()
        started = False
        factory, adversary = adversarial.plug(
            self.net.transport,
            slot.rogue + (("byzantine",) if slot.byzantine else ()),
            f"{cfg.seed}:byzantine:{slot.index}:{slot.incarnation}",
        )
        with trio.CancelScope() as scope:
            slot.scope = scope
            try:
                async with NetNode.open(
                    factory,
                    path=slot.path,
                    clock=slot.clock,
                    bootstrap=bootstrap,
                    r=cfg.r,
                    gossip_interval=cfg.gossip_interval,
                    publish_interval=cfg.publish_interval,
                    durability="process",
                    randbytes=slot.randbytes(),
                    request_timeout=cfg.request_timeout,
                    dna=self.dna if self.dna is not None else cfg.dna_rules() or None,
                    **adversary,
                ) as node:
                    slot.node = node
                    slot.id = node.id
                    self._honest = None  # the honest-node ids include this one now
                    self._hook(slot, node)
                    self.epoch += 1
                    started = True
                    task_status.started(node)
                    await slot.stop.wait()
                    node._sim_closing = True  # read by the workload (sims/workload.py)
            except Exception as e:  # noqa: BLE001 - one node's crash is a finding, not the run's end
                self._crashed(slot, e)
                if not started:
                    task_status.started(None)
            finally:
                if slot.node is not None:
                    # a marker for the workload, which NetNode does not declare
                    slot.node._sim_closing = True  # type: ignore[attr-defined]
                slot.node = None
                self.epoch += 1

    def _crashed(self, slot: Slot, e: Exception) -> None:
        """A node's context exited with an exception (an escape from its nursery). For an honest
        node that is a violation: no peer may be able to crash it. The slot stays down until the
        liveness phase restarts it."""
        kind = "honest" if slot.honest else "byzantine" if slot.byzantine else "rogue"
        self.crashes[kind] += 1
        if slot.honest:
            self.violation(f"honest node {slot.index} crashed: {_describe(e)}")

    def _hook(self, slot: Slot, node: NetNode) -> None:
        """Observe every local commit (for convergence and write counts)."""
        for cell in node.cells.values():
            self._hook_cell(slot, cell)
        orig_add = node._add_cell

        def add_cell(cell):
            out = orig_add(cell)
            self._hook_cell(slot, cell)
            return out

        # observing commits by wrapping the node's method: the simulator's hook, not an API
        node._add_cell = add_cell  # type: ignore[method-assign]
        node.admissions.listen(lambda ev: self.workload.on_admission(slot, ev))

    def _hook_cell(self, slot: Slot, cell) -> None:
        inner = cell.on_commit
        if getattr(inner, "_sim", False):
            return

        def on_commit(s):
            if inner is not None:
                inner(s)
            self._committed(slot, s)

        on_commit._sim = True  # type: ignore[attr-defined]  # marks the hook (read above)
        cell.on_commit = on_commit

    def _committed(self, slot: Slot, s) -> None:
        self.net.note(s.hash)
        if self.economy is not None:
            self.economy.committed(s)
        self.trust.committed(s, slot.honest)
        if not slot.honest:
            self.rogue_writes += 1
            return
        self.writes += 1
        bases = dht.bases(s)
        self.all_writes.append((s.author, s.seq, bases))
        track = bases if self.cfg.strict_op_authorities else [s.author]
        self.pending[s.hash] = [trio.current_time(), s.author, s.seq, track, None, -1]

    async def _start_all(self, nursery) -> None:
        cfg = self.cfg
        n0 = self.slots[0]
        await nursery.start(self._run_node, n0)
        self.dna = n0.running.dna
        for i in range(1, cfg.nodes):
            await nursery.start(self._run_node, self.slots[i])
        invited = cfg.membrane == "invite"
        if not invited:  # agents created before joining: no announcement storm
            await self._make_agents()
        addr0 = n0.listen_addr()
        stagger = min(0.2, cfg.warmup / 2 / max(1, cfg.nodes))

        async def join(slot, delay):
            await trio.sleep(delay)
            if slot.node is not None:
                slot.node.bootstrap = (addr0,)  # so a node whose join was lost tries again
                await slot.node.join(addr0)

        async with trio.open_nursery() as n:
            for i in range(1, cfg.nodes):
                n.start_soon(join, self.slots[i], i * stagger)
        if invited:  # node 0's steward witnesses each invited genesis: over the network
            await self._make_agents()

    async def _make_agents(self) -> None:
        cfg = self.cfg
        for j in range(cfg.agents):
            slot = self.slots[j % cfg.nodes]
            agent = await self.trust.new_agent(slot, j) if slot.node is not None else None
            if agent is not None:
                slot.agents.append(agent.agent_id)
                self.workload.add_agent(slot, agent.agent_id)

    async def _restart(self, nursery, slot: Slot) -> None:
        # A start takes simulated time (it joins a peer first): a second restart meanwhile (the
        # liveness phase's, racing churn's) must not open a twin node on the same store.
        if slot.node is not None or slot.starting:
            return
        slot.incarnation += 1
        others = [s for s in self.live() if s is not slot]
        boot = [self.rng_faults.choice(others).listen_addr()] if others else []
        slot.starting = True
        try:
            await nursery.start(functools.partial(self._run_node, slot, bootstrap=boot))
        except BudgetError as e:  # e.g. StoreCorrupted: an honest store must always reopen
            self.violation(f"node {slot.index} could not restart from its store: {e}")
        finally:
            slot.starting = False

    async def _stop(self, slot: Slot, crash: bool) -> None:
        if slot.node is None:
            return
        # a running node's slot has both (set in _run_node before the node opens)
        assert slot.scope is not None and slot.stop is not None
        if crash:
            slot.crashes += 1
            slot.scope.cancel()  # mid-whatever: handlers, publishes, fetches all die
        else:
            slot.leaves += 1
            slot.stop.set()
        while slot.node is not None:
            await trio.lowlevel.checkpoint()

    # -- faults
    def _partition_rule(self, p):
        ids = [s.id for s in self.slots]
        order = list(range(len(ids)))
        random.Random(f"{self.cfg.seed}:partition:{p.spec}").shuffle(order)
        if p.kind == "isolate":
            victim = (
                p.node
                if p.node is not None
                else random.Random(f"{self.cfg.seed}:isolate:{p.spec}").randrange(1, len(ids))
            )
            x = ids[victim]
            return lambda src, dst: (src == x) != (dst == x)
        total = sum(p.shares)
        groups, at = [], 0
        for k, share in enumerate(p.shares):
            nxt = len(ids) if k == len(p.shares) - 1 else at + round(len(ids) * share / total)
            groups.append([ids[order[i]] for i in range(at, nxt)])
            at = nxt
        if p.kind == "oneway":
            a, b = set(groups[0]), set(groups[1])
            return lambda src, dst: src in a and dst in b
        g = {pid: k for k, grp in enumerate(groups) for pid in grp}
        return lambda src, dst: g.get(src, -1) != g.get(dst, -2) and src in g and dst in g

    async def _partitions(self) -> None:
        end = self.cfg.sim_seconds
        rules = [
            (p.start, min(p.end, end), self._partition_rule(p))
            for p in self.cfg.partitions
            if p.start < end
        ]
        moments = sorted({t for a, b, _ in rules for t in (a, b)})
        for t in moments:
            await trio.sleep_until(t)
            self.net.set_rules([rule for a, b, rule in rules if a <= t < b])

    async def _churn(self, nursery) -> None:
        cfg = self.cfg
        if cfg.churn <= 0 or cfg.nodes < 3:
            return
        rng = self.rng_faults
        n_events = int(round(cfg.churn * cfg.nodes * cfg.hours))
        t0, t1 = cfg.warmup, cfg.sim_seconds
        times = sorted(rng.uniform(t0, t1) for _ in range(n_events))

        async def one(slot, crash, down):
            await self._stop(slot, crash)
            await trio.sleep(down)
            if self.phase == "faults":
                await self._restart(nursery, slot)

        for t in times:
            await trio.sleep_until(t)
            # node 0 hosts the steward; rogue nodes' stores hold their own invalid chains, which
            # a restarting node rightly refuses to open, so they never churn
            cands = [s for s in self.live() if s.index != 0 and s.honest]
            if not cands:
                continue
            slot = rng.choice(cands)
            crash = rng.random() < 0.5
            self.churn_events["crash" if crash else "leave"] += 1
            nursery.start_soon(one, slot, crash, rng.uniform(30, 600))

    async def _rejoin(self) -> None:
        """An operator's job: a node left without peers (its bootstrap peer was unreachable when
        it restarted) is pointed at another live node."""
        while True:
            await trio.sleep(30)
            live = self.live()
            for s in live:
                if s.node is not None and len(s.node.peers) == 0 and len(live) > 1:
                    # the best-connected node, as an operator would pick (a random one may be
                    # just as lost, and the two would make an island)
                    other = max(
                        (o for o in live if o is not s and o.node is not None),
                        key=lambda o: (len(o.running.peers), -o.index),
                        default=None,
                    )
                    if other is not None and other.node is not None:
                        self.churn_events["rejoin"] += 1
                        await s.node.join(other.listen_addr())

    # -- checks
    def check_refusal(self, agent, node, e: InsufficientRU) -> None:
        """An honest agent is only refused when its own re-derived budget really is short."""
        try:
            chain = node.store.chain(agent.pub)
        except Exception:  # noqa: BLE001 - node going down
            return
        problems, b = audit_chain(chain, node.dna)
        if problems or b is None:
            self.violation(f"honest agent {agent.agent_id[:14]} own chain: {problems[:1]}")
            return
        ts = max(node.now_us(), chain[-1].action["ts"])
        b.roll(ts, node.dna)
        if b.rem != e.have_mru or e.need_mru <= b.rem:
            self.violation(
                f"honest agent {agent.agent_id[:14]} wrongly refused: needs "
                f"{e.need_mru} mRU, re-derived {b.rem} mRU, node said {e.have_mru}"
            )

    def _membership(self):
        """(the ring, slot by id, ids warranted by some honest node), as of now. Asked every
        check; rebuilt only when a node came or went (epoch) or an honest node warranted
        someone (warrants only accumulate, so their count tells)."""
        live, tables, _ = self._live()
        key = (self.epoch, sum(map(len, tables)))
        if self._membership_key != key:
            warranted: set[bytes] = set()
            for s in live:
                if s.honest:
                    warranted.update(s.running.warranted)
            # a live slot's id is set (when its node first started)
            ring = dht.Ring([s.id for s in live if s.id is not None and s.id not in warranted])
            self._membership_key = key
            self._membership_now = (ring, {s.id: s for s in live}, warranted)
        return self._membership_now

    def _honest_sets(self) -> tuple[set, set]:
        # a slot's id is set when its node first starts; agents are only ever added
        n = len(self.workload.agents)
        if self._honest is None or self._honest[0] != n:
            self._honest = (
                n,
                {s.id for s in self.slots if s.honest},
                {a.pub for a in self.workload.agents if not a.rogue},
            )
        return self._honest[1], self._honest[2]

    def _check(self) -> None:
        ring, by_id, warranted = self._membership()
        honest_ids, honest_agents = self._honest_sets()
        steward = self.dna.stewards[0] if self.dna and self.dna.stewards else None
        live, _, queues = self._live()
        limits = (acceptor.MAX_LIMBO, peer_table.MAX_PEERS, 4 * acceptor.MAX_PARALLEL_FETCHES)
        if any(max(map(len, q), default=0) > lim for q, lim in zip(queues, limits)):
            for s, *sizes in zip(live, *(map(len, q) for q in queues)):
                if any(n > lim for n, lim in zip(sizes, limits)):
                    self.violation(
                        f"node {s.index}: queue out of bounds (limbo {sizes[0]}, "
                        f"peers {sizes[1]}, fetching {sizes[2]})"
                    )
        # warrants only accumulate: the tables need reading again only when one grew (the
        # membership key counts them) or an honest agent or node was added
        checked = (self._membership_key, len(honest_ids), len(honest_agents))
        if checked != self._warrants_checked:
            self._warrants_checked = checked
            for s in live:
                if not s.honest:
                    continue
                n = s.running
                for w in n.warranted:
                    if w in honest_agents or w in honest_ids or w == steward:
                        self.violation(
                            f"honest node {s.index} warrants honest "
                            f"{to_text('agent', w)[:14]}: {n.warranted[w].reason}"
                        )
        # convergence of honest writes: held by all their authorities (live, unwarranted nodes)
        now = trio.current_time()
        done = []
        # authorities change when nodes come and go (epoch) and when a node is warranted (it
        # leaves the ring within an epoch; warrants only accumulate, so a count tells)
        ring_key = (self.epoch, len(ring))
        for h, p in self.pending.items():
            t, author, seq, bases, auths, epoch = p
            if author in warranted:
                done.append(h)
                continue
            if epoch != ring_key:
                auths = set()
                for b in bases:
                    auths.update(ring.nearest(b, self.cfg.r))
                p[4], p[5] = auths, ring_key
            # an authority found holding the write is not asked again: a store keeps what it
            # took (a crash or restart included), so only the ones still lacking it are checked
            ok = True
            for a in list(p[4]):
                slot = by_id.get(a)
                if slot is None or slot.node is None or slot.byzantine:
                    continue  # a Byzantine authority owes nobody anything
                if not _holds(slot.node, author, seq, h):
                    ok = False
                    break
                p[4].discard(a)
            if ok:
                done.append(h)
                self.latencies.append(now - t)
        for h in done:
            del self.pending[h]

    def _missing(self, h, p, ring, by_id) -> str:
        t, author, seq, bases, _, _ = p
        out = []
        names = ("hash", "author", "entry") if len(bases) > 1 else ("author",)
        for name, b in zip(names, bases):
            for a in ring.nearest(b, self.cfg.r):
                slot = by_id.get(a)
                if slot is not None and slot.byzantine:
                    continue
                hd = slot.node._head(author) if slot and slot.node else None
                if slot is None or slot.node is None or not _holds(slot.node, author, seq, h):
                    out.append(
                        f"node {slot.index if slot else '?'} ({name} basis, has seq "
                        f"{None if hd is None else hd[0]})"
                    )
        return ", ".join(out)

    def _op_authority_gaps(self, ring, by_id, warranted) -> int:
        """Honest writes that some authority of their bases (as the ring stands now) does not
        hold: it was away or cut off when the write was published, or joined the ring since, and
        its publisher's recheck has not reached it yet."""
        gaps = 0
        cache = {}
        for author, seq, bases in self.all_writes:
            if author in warranted:
                continue
            for b in bases:
                if b not in cache:
                    cache[b] = ring.nearest(b, self.cfg.r)
                if any(
                    not _holds(by_id[a].node, author, seq, bases[0])
                    for a in cache[b]
                    if a in by_id and by_id[a].node is not None and not by_id[a].byzantine
                ):
                    gaps += 1
                    break
        return gaps

    def _audit(self, sample: int | None, check_sigs: bool) -> int:
        """Re-derive the budget of held chains on honest nodes (a sample, or all)."""
        held = [(s, [*s.running.chains, *s.running.cells]) for s in self.honest_live()]
        ends = list(itertools.accumulate(len(a) for _, a in held))
        total = ends[-1] if ends else 0
        # the sample is drawn over indices (what sampling the list of all pairs would pick),
        # and only the picked pairs are built
        picks = (
            range(total)
            if sample is None or total <= sample
            else self.rng_check.sample(range(total), sample)
        )
        pairs = []
        for i in picks:
            k = bisect.bisect_right(ends, i)
            s, authors = held[k]
            pairs.append((s, authors[i - (ends[k - 1] if k else 0)]))
        for s, author in pairs:
            n = s.node
            if n is None:
                continue
            try:
                chain = n.store.chain(author)
            except Exception as e:  # noqa: BLE001
                self.violation(
                    f"node {s.index}: stored chain of {to_text('agent', author)[:14]} "
                    f"unreadable: {e}"
                )
                continue
            problems, _ = audit_chain(chain, n.dna, check_sigs)
            for p in problems[:1]:
                self.violation(f"honest node {s.index} stores an invalid action: {p}")
        return len(pairs)

    async def _checker(self) -> None:
        cfg = self.cfg
        next_audit = cfg.audit_every
        while True:
            await trio.sleep(cfg.check_interval)
            self._check()
            now = trio.current_time()
            if self.economy is not None:
                self.economy.check_views(now)
            if now >= next_audit:
                next_audit = now + cfg.audit_every
                self._audit(cfg.audit_sample, check_sigs=True)
                self._sample_timeline(now)

    def _sample_timeline(self, now: float) -> None:
        rems = []
        for a in self.workload.agents:
            n = a.slot.node
            if n is not None and not a.rogue and a.pub in n.cells:
                c = n.cells[a.pub]
                rems.append(Budget_remaining(c, n))
        p = [now - v[0] for v in self.pending.values()]
        self.timeline.append(
            (
                now,
                len(self.pending),
                max(p) if p else 0.0,
                statistics.fmean(rems) / 1000 if rems else 0.0,
                len(self.latencies),
            )
        )

    async def _progress(self) -> None:
        total = self.cfg.sim_seconds
        step = max(1.0, total / 100)
        while True:
            await trio.sleep(step)
            if self.progress_cb:
                self.progress_cb(self, trio.current_time(), total)

    # -- rogue accounting
    def cheaters(self) -> set[bytes]:
        """Offenders that actually cheated: rogue agents whose own chain is invalid, forkers whose
        twin reached an honest node, and bad_signature nodes that published a forged action."""
        out: set[bytes] = set()
        honest = self.honest_live()
        for s in self.slots:
            # a sybil's agents are refused, never warranted (TrustRoots.accepted_cheats)
            if not s.rogue or s.node is None or "sybil" in s.rogue:
                continue
            n = s.node
            for pub in n.cells:
                if pub in n.dna.stewards:
                    continue
                chain = n.store.chain(pub)
                if "bad_signature" in s.rogue:
                    if len(chain) > 1 and any(
                        h.running.metrics.get("warrants_issued", 0) or s.id in h.running.warranted
                        for h in honest
                    ):
                        out.add(n.id)  # the slot's id: it is its node's
                    continue
                problems, _ = audit_chain(chain, n.dna)
                if problems or (self.economy and self.economy.rogue_problems(chain)):
                    out.add(pub)
            for twin in getattr(n, "rogue_twins", {}).values():
                if any(
                    h.running.dht.has_action(twin.hash) or twin.author in h.running.warranted
                    for h in honest
                ):
                    out.add(twin.author)
        return out

    def _liveness_lag(self, cheaters: set[bytes]) -> list[str]:
        live = self.live()
        labels = [s.index for s in live]
        nodes = [s.running for s in live]
        honest = [s.running for s in live if s.honest]
        problems = consistency_lag(nodes, labels, accountable=honest)
        for s in self.honest_live():
            missing = cheaters - set(s.running.warranted)
            if missing:
                problems.append(f"node {s.index} has not warranted {len(missing)} cheater(s)")
        if self.pending:
            problems.append(f"{len(self.pending)} honest write(s) not yet held by all authorities")
        elif not problems and self.cfg.strict_op_authorities:
            # pending tracks a write until all its authorities held it once; the ring moves on
            # (a node back from a crash is an authority again), so check where it stands now
            gaps = self._op_authority_gaps(*self._membership())
            if gaps:
                problems.append(f"{gaps} honest write(s) missing at a hash or entry authority")
        return problems

    # -- the run
    async def main(self) -> None:
        cfg = self.cfg
        async with trio.open_nursery() as root:
            async with trio.open_nursery() as nodes:
                await self._start_all(nodes)
                self.phase = "warmup"
                root.start_soon(self._checker)
                root.start_soon(self._progress)
                root.start_soon(self._rejoin)
                await trio.sleep_until(cfg.warmup)
                self.phase = "faults"
                async with trio.open_nursery() as faults:
                    faults.start_soon(self._partitions)
                    faults.start_soon(self._churn, nodes)
                    if self.economy is not None:
                        faults.start_soon(self.economy.run, cfg.warmup, cfg.sim_seconds)
                    await self.workload.run(cfg.warmup, cfg.sim_seconds)
                    await trio.sleep_until(cfg.sim_seconds)
                    faults.cancel_scope.cancel()
                # liveness: faults stop, everyone comes back, the cluster must converge
                self.phase = "liveness"
                self.net.quiet()
                for s in self.slots:
                    if s.node is None:
                        await self._restart(nodes, s)
                deadline = trio.current_time() + cfg.deadline
                cheaters = self.cheaters()
                while True:
                    self._check()
                    cheaters = self.cheaters() if int(trio.current_time()) % 10 == 0 else cheaters
                    lag = self._liveness_lag(cheaters)
                    if not lag:
                        self.converged = True
                        break
                    if trio.current_time() >= deadline:
                        self.lag_left = lag
                        break
                    await trio.sleep(1.0)
                self.end_time = trio.current_time()
                self.cheater_set = self.cheaters()
                self.audited = self._audit(None, check_sigs=False)
                if self.economy is not None:
                    self.economy.final_check()
                self.bound_checked = self.trust.check_spending_bound()
                self.cheats_accepted = self.trust.accepted_cheats()
                ring, by_id, self.net_warranted = self._membership()
                warranted_everywhere = {
                    c
                    for c in self.cheater_set
                    if all(c in s.running.warranted for s in self.honest_live())
                }
                self.warranted_rogue = warranted_everywhere
                if not self.converged:
                    self.violation(
                        f"did not converge within {cfg.deadline:g} s after faults "
                        f"stopped: " + "; ".join(self.lag_left[:5])
                    )
                for h, p in list(self.pending.items())[:5]:
                    self.violation(
                        f"honest write by {to_text('agent', p[1])[:14]} seq {p[2]} "
                        f"never reached all its authorities: "
                        f"{self._missing(h, p, ring, by_id)}"
                    )
                for c in sorted(self.cheater_set - warranted_everywhere):
                    self.violation(
                        f"cheater {to_text('agent', c)[:14]} is not warranted at every honest node"
                    )
                # converged: the liveness check just found no gap (nothing ran since)
                self.op_gaps = (
                    0
                    if self.converged and cfg.strict_op_authorities
                    else self._op_authority_gaps(ring, by_id, self.net_warranted)
                )
                self.workload.check_deferrals()
                self.metrics_total: Counter[str] = Counter()
                for s in self.live():
                    self.metrics_total.update(s.running.metrics)
                for s in self.live():
                    s.running._sim_closing = True  # type: ignore[attr-defined]  # as in _run_node
                nodes.cancel_scope.cancel()
            root.cancel_scope.cancel()


def _describe(e: BaseException) -> str:
    """An exception, with the ones inside a group, as one line of text."""
    inner = getattr(e, "exceptions", None)
    if inner:
        return "; ".join(_describe(x) for x in inner[:3])
    where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    at = f" at {os.path.relpath(where[0].filename)}:{where[0].lineno}" if where else ""
    return f"{type(e).__name__}: {str(e)[:200]}{at}"


def _holds(node, author: bytes, seq: int, h: bytes) -> bool:
    """The node holds this write: in the author's chain up to it, or as a single op."""
    hd = node._head(author)
    return (hd is not None and hd[0] >= seq) or node.dht.has_action(h)


def Budget_remaining(cell, node) -> int:
    from node.core import budget

    return budget.roll(cell.state.budget, node.now_us(), node.dna).remaining_mru


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return round(xs[k], 3)


@contextlib.contextmanager
def deterministic_trio(seed: int):
    """Make trio's scheduling a function of the seed alone. trio shuffles each batch of runnable
    tasks with its module-level `_r` (seeded here), and breaks ties between equal deadlines by
    id(cancel_scope) — a memory address, different in every process. During the run that
    tiebreak becomes a creation counter (scopes that share a deadline expire in the order they
    registered it), and batches are put in task-creation order before the shuffle; both are
    restored after."""
    from trio._core import _run

    # trio's private scheduler, patched on purpose (trio is pinned to the version this was
    # written against): its declared types (a final flag, a method) do not allow the patches
    trio_run: Any = _run
    counter = itertools.count()
    original = trio_run.Deadlines.add

    def add(self, deadline, cancel_scope):
        heapq.heappush(self._heap, (deadline, next(counter), cancel_scope))
        self._active += 1

    allow = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    trio_run._r.seed(seed)
    trio_run.Deadlines.add = add
    # What pytest-trio switches on under Hypothesis: each batch is sorted by task creation order
    # before the seeded shuffle, so set-iteration order (object addresses) cannot leak in.
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True
    try:
        yield
    finally:
        trio_run.Deadlines.add = original
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = allow


def memory_backed_dir() -> str | None:
    """A simulation's stores live only as long as the run: on a RAM-backed filesystem
    (Linux's /dev/shm) they cost no disk writes; elsewhere, the usual temp directory."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def run(cfg: SimConfig, progress=None) -> dict:
    """Run one seeded simulation; returns the report (a dict, JSON-ready)."""
    root = tempfile.mkdtemp(
        prefix=f"budgetnode-sim-{cfg.seed}-", dir=cfg.store_root or memory_backed_dir()
    )
    sim = Simulation(cfg, root)
    sim.progress_cb = progress
    wall = time.perf_counter()
    try:
        with deterministic_trio(cfg.seed):
            trio.run(sim.main, clock=sim.clock)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - wall
    st = sim.net.stats
    writes = max(1, sim.writes + sim.rogue_writes)
    report = {
        "seed": cfg.seed,
        "nodes": cfg.nodes,
        "agents": cfg.agents,
        "transport": cfg.transport,
        "sim_seconds": round(sim.end_time, 3),
        "wall_seconds": round(wall, 3),
        "writes": sim.writes + sim.rogue_writes,
        "honest_writes": sim.writes,
        "refusals": sim.workload.refusals,
        "refusals_by_code": dict(sorted(sim.workload.refused.items())),
        "convergence_p50_s": _pct(sim.latencies, 0.50),
        "convergence_p99_s": _pct(sim.latencies, 0.99),
        "messages_per_write": round(st["requests"] / writes, 2),
        "bytes_per_write": round((st["request_bytes"] + st["reply_bytes"]) / writes, 1),
        "invariant_violations": list(sim.violations),
        "rogue_modes": sorted({m for s in sim.slots for m in s.rogue}),
        "membrane": cfg.membrane,
        "window_s": sim.dna.window_s if sim.dna else None,
        "windows_opened": sim.trust.windows_opened,
        "spending_bound_chains": sim.bound_checked,
        **sim.cheats_accepted,
        "invite_failures": dict(sim.trust.invite_failures),
        "rogue_agents": len(sim.cheater_set),
        "warranted_rogue_agents": len(sim.warranted_rogue),
        "converged": sim.converged,
        "byzantine_nodes": sum(1 for s in sim.slots if s.byzantine),
        "honest_node_crashes": sim.crashes["honest"],
        "byzantine_node_crashes": sim.crashes["byzantine"] + sim.crashes["rogue"],
        "trace_hash": sim.net.trace_hash(),
        # beyond the fields: what the run did
        "calls": sim.workload.calls,
        "grants": sim.workload.grants,
        "deferred": sim.workload.deferred,
        "deferred_run": sim.workload.deferred_run,
        "deferred_refused": sim.workload.deferred_refused,
        "errors": dict(sorted(sim.workload.errors.items())),
        "network": dict(sorted(st.items())),
        "churn": dict(sim.churn_events),
        "audited_chains": sim.audited,
        "node_metrics": {k: sim.metrics_total[k] for k in sorted(sim.metrics_total)},
        "lagging": sim.lag_left[:10],
        "writes_missing_at_op_authorities": sim.op_gaps,
        # budgets as authorizers (--economy): ledger invariants broken on honest nodes
        "ledger_violations": len(sim.economy.violations) if sim.economy else 0,
        "economy": sim.economy.report() if sim.economy else None,
    }
    report["ok"] = report["converged"] and not report["invariant_violations"]
    if not report["ok"]:
        report["replay"] = cfg.replay_command()
    report["_timeline"] = sim.timeline
    report["_latencies"] = sim.latencies
    return report
