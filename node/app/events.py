"""Subscriptions: an agent's budget changes and the node's warrants, pushed as they happen,
and its admission events (refusals, deferrals and their outcomes, low-budget alerts: pushed by
node/admission.py as they happen).

One hub per node waits on the node's change event (`NetNode.wait_changed()`, set on every local
commit, validated foreign action, publish and warrant); after each change it compares every
subscribed agent's BudgetStatus with what that subscriber last got and queues what differs.
Nothing polls a clock.

Which warrants were pushed already is one number, not a table: a node's `warrants_by_hash` only
grows, in order (a warrant is never forgotten, and the node bounds how many it keeps), so the
warrants past the first `_seen` are the new ones. Nothing here grows with the warrants.

Each subscriber has a bounded queue. When it is full the *oldest* event is dropped and counted;
the subscriber then gets `{"type": "overflow", "dropped": n}` before the events that follow, so a
slow consumer never stalls the node nor loses the newest budget state (a budget event carries the
whole state, not a delta).
"""

from __future__ import annotations

import logging
from collections import deque
from itertools import islice

import trio

from ..core.crypto import to_text

log = logging.getLogger("budgetnode.app")

MAX_QUEUED_EVENTS = 256


class DropOldestQueue:
    def __init__(self, maxlen: int = MAX_QUEUED_EVENTS):
        self._items: deque = deque()
        self.maxlen = maxlen
        self.dropped = 0  # in total
        self._unreported = 0  # since the last overflow event
        self._ready = trio.Event()
        self.closed = False

    def put(self, item) -> None:
        if self.closed:
            return
        if len(self._items) >= self.maxlen:
            self._items.popleft()
            self.dropped += 1
            self._unreported += 1
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def get(self):
        """The next event; None once closed and drained."""
        while not self._items:
            if self.closed:
                return None
            self._ready = trio.Event()
            await self._ready.wait()
        if self._unreported:
            n, self._unreported = self._unreported, 0
            return {"type": "overflow", "dropped": n}
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


def budget_event(cell) -> dict:
    st = cell.budget_status()
    return {"type": "budget", "agent_id": cell.agent_id, "seq": cell.state.seq, **st.to_dict()}


def warrant_event(w) -> dict:
    return {"type": "warrant", **w.to_dict()}


class Subscriber:
    def __init__(self, agent_pub: bytes | None, maxlen: int = MAX_QUEUED_EVENTS):
        self.agent_pub = agent_pub
        self.agent_id = None if agent_pub is None else to_text("agent", agent_pub)
        self.queue = DropOldestQueue(maxlen)
        self.last_budget: tuple | None = None


class EventHub:
    def __init__(self, node):
        self.node = node
        self.subscribers: set[Subscriber] = set()
        self._seen = len(getattr(node, "warrants_by_hash", {}))  # warrants already pushed
        self.dropped = 0
        self.scan_errors = 0
        self._unlisten = None  # while anyone subscribes: stops admission events

    def subscribe(self, agent_pub: bytes | None) -> Subscriber:
        """A new subscriber; its first event is its agent's budget as it is now."""
        sub = Subscriber(agent_pub)
        if not self.subscribers and hasattr(self.node, "admissions"):
            self._unlisten = self.node.admissions.listen(self._on_admission)
        self.subscribers.add(sub)
        self._push_budget(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            self.dropped += sub.queue.dropped
            sub.queue.close()
            if not self.subscribers and self._unlisten is not None:
                self._unlisten()
                self._unlisten = None

    def _on_admission(self, ev: dict) -> None:
        """A refusal, deferral, deferred outcome or low-budget alert (node/admission.py): to
        its agent's subscribers, and to operators' (subscribed with no agent)."""
        for sub in self.subscribers:
            if sub.agent_pub is None or sub.agent_id == ev.get("agent_id"):
                sub.queue.put(ev)

    @property
    def supported(self) -> bool:
        return hasattr(self.node, "wait_changed")

    async def run(self) -> None:
        if not self.supported:
            return
        while True:
            await self.node.wait_changed()
            try:
                self.scan()
            except Exception:  # noqa: BLE001 - a failed scan must not stop the node's server
                self.scan_errors += 1
                log.exception("subscription scan failed")

    def scan(self) -> None:
        """Queue what changed since the last scan (synchronous: no change slips in between)."""
        known = getattr(self.node, "warrants_by_hash", {})
        new = list(islice(known.values(), self._seen, None))
        self._seen = len(known)
        for w in new:
            ev = warrant_event(w)
            for sub in self.subscribers:
                sub.queue.put(ev)
        for sub in self.subscribers:
            self._push_budget(sub)

    def _push_budget(self, sub: Subscriber) -> None:
        cell = self.node.cells.get(sub.agent_pub) if sub.agent_pub is not None else None
        if cell is None:
            return
        ev = budget_event(cell)
        key = (ev["seq"], ev["remaining_mru"], ev["used_mru"], ev["window_start"])
        if key != sub.last_budget:
            sub.last_budget = key
            sub.queue.put(ev)

    def queued(self) -> int:
        return sum(len(s.queue) for s in self.subscribers)

    def dropped_total(self) -> int:
        return self.dropped + sum(s.queue.dropped for s in self.subscribers)
