"""The simulated network: a Transport whose requests and replies travel after seeded latency and
jitter, may be lost, duplicated or reordered, and stop at partitions — all on trio's virtual clock.

A request in flight is an entry in the network's event heap; on arrival the destination's handler
runs inside the destination's own transport nursery (so a node that crashes takes its in-flight
handlers down with it), and its reply travels back as another entry. A lost request or reply
leaves the caller waiting until its request timeout, then PeerUnreachable, exactly as over a real
network.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import outcome
import trio
import trio.testing
from typing import Any

from node.core.crypto import SigningKey
from node.net.transport import MAX_FRAME, Handler, PeerUnreachable

REORDER_P = 0.1  # with --reorder, this share of messages is held back by up to 5x the latency


class _Reply:
    """One request's outcome slot: the waiting caller, resolved once (by the first reply copy
    to arrive or by the timeout), or abandoned if the caller is cancelled first."""

    __slots__ = ("task", "done")

    def __init__(self, task):
        self.task = task
        self.done = False

    def resolve(self, value) -> None:
        if not self.done:
            self.done = True
            trio.lowlevel.reschedule(self.task, outcome.Value(value))

    def abort(self, _raise_cancel):
        self.done = True
        return trio.lowlevel.Abort.SUCCEEDED


def SimClock() -> trio.testing.MockClock:
    """trio's virtual clock (autojump: when every task is blocked, time moves on to the next
    deadline) that also stops at the next message of the network it drives, and delivers it.
    A task, or even one timer, per message in flight would cost more than the node code the
    message carries; here a message costs a heap entry. MockClock cannot be subclassed, so the
    instance's `_autojump` (the hook trio's run loop calls when nothing is runnable) is
    replaced; SimNetwork(rng, clock) attaches the network."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    # MockClock cannot be subclassed, so what the SimClock adds is set on the instance, outside
    # the class's type: `hooked` is the same object, typed for that
    hooked: Any = clock
    hooked.network = None

    def autojump() -> None:
        net = hooked.network
        nxt = net.next_event() if net is not None else math.inf
        now = clock.current_time()
        to_deadline = trio.lowlevel.current_statistics().seconds_to_next_deadline
        if nxt - now < to_deadline:  # a message before any timer (or due now)
            if nxt > now:
                clock.jump(nxt - now)
            net.deliver_due(max(nxt, clock.current_time()))
        elif 0 < to_deadline < math.inf:
            clock.jump(to_deadline)

    hooked._autojump = autojump
    # rate 0: the time is the virtual base alone (what MockClock computes after reading the real
    # clock it then multiplies by 0), asked on every message and every trio scheduling pass
    hooked.current_time = lambda: hooked._virtual_base
    return clock


class SimNetwork:
    """Messages in flight are entries of one time-ordered heap, delivered by the SimClock when
    virtual time reaches them."""

    def __init__(
        self,
        rng: random.Random,
        clock: trio.testing.MockClock,
        *,
        latency=0.05,
        jitter=0.02,
        loss=0.0,
        dup=0.0,
        reorder=False,
    ):
        clock.network = self  # type: ignore[attr-defined]  # the SimClock's hook (see SimClock)
        self.rng = rng
        self.latency, self.jitter = latency, jitter
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.transports: dict[bytes, SimTransport] = {}
        self.rules: list = []  # active partitions: callables (src, dst) -> blocked?
        self.trace = hashlib.blake2b(digest_size=32)
        self.stats: Counter[str] = (
            Counter()
        )  # requests, replies, bytes, lost, duplicated, unreachable
        self.delivered = 0  # messages handed to a handler or back to a caller
        self.on_deliver = None  # called after each delivered message (invariant hooks)
        # (time, seq, fn, args): arrivals, replies, timeouts. Bounded by the requests of one
        # request timeout (an answered request's timeout entry waits there until its time)
        self._heap: list = []
        self._seq = itertools.count()

    # -- faults
    def set_rules(self, rules: list) -> None:
        self.rules = list(rules)

    def blocked(self, src: bytes, dst: bytes) -> bool:
        return any(rule(src, dst) for rule in self.rules)

    def quiet(self) -> None:
        """Liveness phase: no more loss or duplication (latency and jitter stay)."""
        self.loss = self.dup = 0.0
        self.rules = []

    def _delay(self) -> float:
        d = self.latency + (self.rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
        if self.reorder and self.rng.random() < REORDER_P:
            d += self.rng.uniform(0, 5 * self.latency)
        return max(0.0, d)

    def _reachable(self, src: bytes, dst: bytes) -> bool:
        return dst in self.transports and not self.blocked(src, dst)

    def _record(self, src: bytes, dst: bytes, raw: bytes) -> None:
        t = int(trio.current_time() * 1_000_000)
        self.trace.update(
            t.to_bytes(8, "big") + src[:8] + dst[:8] + hashlib.blake2b(raw, digest_size=8).digest()
        )
        self.delivered += 1
        if self.on_deliver is not None:
            self.on_deliver()

    def note(self, data: bytes) -> None:
        """Something else the trace must pin down (a write's result)."""
        self.trace.update(data)

    def trace_hash(self) -> str:
        return self.trace.copy().hexdigest()

    # -- the Transport factory NetNode.open takes
    @asynccontextmanager
    async def transport(self, seed: bytes, handler: Handler) -> AsyncIterator[SimTransport]:
        t = SimTransport(self, SigningKey(seed).public, handler)
        async with trio.open_nursery() as n:
            t.nursery = n
            self.transports[t.peer_id] = t
            try:
                yield t
            finally:
                if self.transports.get(t.peer_id) is t:
                    del self.transports[t.peer_id]
                n.cancel_scope.cancel()

    # -- the event heap
    def _at(self, when: float, fn, *args) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), fn, args))

    def next_event(self) -> float:
        heap = self._heap
        while heap and heap[0][2] is _timeout and heap[0][3][0].done:
            heapq.heappop(heap)  # a timeout whose request was answered: no stop for it
        return heap[0][0] if heap else math.inf

    def deliver_due(self, upto: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= upto:
            _, _, fn, args = heapq.heappop(heap)
            fn(*args)

    # -- delivery
    def _arrive(self, src: SimTransport, dst_id: bytes, payload: bytes, box: _Reply) -> None:
        dst = self.transports.get(dst_id)
        if dst is None or (self.rules and self.blocked(src.peer_id, dst_id)):
            self.stats["unreachable"] += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.stats["lost"] += 1
            return
        self._record(src.peer_id, dst_id, payload)
        try:
            dst.nursery.start_soon(self._serve, src, dst, payload, box)
        except RuntimeError:  # the destination is shutting down
            self.stats["unreachable"] += 1

    async def _serve(self, src: SimTransport, dst: SimTransport, payload: bytes, box: _Reply):
        reply = await dst.handler(src.peer_id, payload)
        if len(reply) > MAX_FRAME:
            return
        self.stats["replies"] += 1
        self.stats["reply_bytes"] += len(reply)
        self._at(trio.current_time() + self._delay(), self._answer, src, dst, reply, box)

    def _answer(self, src: SimTransport, dst: SimTransport, reply: bytes, box: _Reply):
        if box.done or self.transports.get(src.peer_id) is not src:
            return
        if (self.rules and self.blocked(dst.peer_id, src.peer_id)) or (
            self.loss and self.rng.random() < self.loss
        ):
            self.stats["lost"] += 1
            return
        self._record(dst.peer_id, src.peer_id, reply)
        box.resolve(reply)


def _timeout(box: _Reply) -> None:
    box.resolve(None)


class SimTransport:
    def __init__(self, net: SimNetwork, peer_id: bytes, handler: Handler):
        self.net = net
        self.peer_id = peer_id
        self.handler = handler
        self.nursery: trio.Nursery  # set by SimNetwork.transport before it is reachable

    def listen_addrs(self) -> list[str]:
        return ["sim://" + self.peer_id.hex()]

    def add_peer_addrs(self, peer: bytes, addrs: Sequence[str]) -> None:
        pass

    def peers(self) -> list[bytes]:
        return [p for p in self.net.transports if p != self.peer_id]

    async def connect(self, addr: str) -> bytes:
        await trio.sleep(2 * self.net.latency)  # a dial is a round trip
        try:
            peer = bytes.fromhex(addr.removeprefix("sim://"))
        except ValueError:
            raise PeerUnreachable(f"bad address {addr}") from None
        if not self.net._reachable(self.peer_id, peer) or not self.net._reachable(
            peer, self.peer_id
        ):
            raise PeerUnreachable(f"no peer at {addr}")
        return peer

    async def request(self, peer: bytes, payload: bytes, timeout: float = 5.0) -> bytes:
        net = self.net
        if len(payload) > MAX_FRAME:
            raise PeerUnreachable("request larger than a frame")
        net.stats["requests"] += 1
        net.stats["request_bytes"] += len(payload)
        if peer not in net.transports:  # nobody listens there: refused after one round trip
            await trio.sleep(2 * net.latency)
            net.stats["refused"] += 1
            raise PeerUnreachable(f"peer {peer.hex()[:12]} is not listening")
        box = _Reply(trio.lowlevel.current_task())
        copies = 2 if net.dup and net.rng.random() < net.dup else 1
        if copies == 2:
            net.stats["duplicated"] += 1
        now = trio.current_time()
        for _ in range(copies):
            net._at(now + net._delay(), net._arrive, self, peer, payload, box)
        net._at(now + timeout, _timeout, box)
        value = await trio.lowlevel.wait_task_rescheduled(box.abort)
        if value is None:
            raise PeerUnreachable(f"request to {peer.hex()[:12]} timed out")
        return value
