"""Handing ledger offers (core/ledger.py: a mint, fund, card, settle, revoke or return made to
an agent) to the node that hosts their recipient, whose chain accepts them.

An offer is already safe on its author's chain; this only carries it over. One that cannot be
handed over now (no known host, no answer) waits here and is tried again each interval, a
bounded number of times, while the peer exchange learns where agents live. What waits is kept
in the store (table `outbox`: the offer's hash and recipient; the offer itself is on its
chain), so a restart resumes it (`restore`). The recipient's node also takes an offer it stores
as data (Acceptor._stored), and any it finds in its own store when it starts
(LocalNode._take_recovered_offers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..core.action import Signed
from ..core.errors import BudgetError

MAX_WAITING = 4096
ATTEMPTS = 300  # one an interval: five minutes at the default second
SCHEMA = "CREATE TABLE IF NOT EXISTS outbox(hash BLOB PRIMARY KEY, recipient BLOB NOT NULL);"


class OfferCourier:
    def __init__(
        self,
        *,
        host_of: Callable[[bytes], bytes | None],
        request: Callable[..., Awaitable[Any]],
        metrics: Counter,
        interval: float,
        store: Any = None,  # node/store.py Store: what waits survives a restart
    ) -> None:
        self.store = store
        if store is not None:
            store.create_tables(SCHEMA)
        self.host_of = host_of
        self.request = request
        self.metrics = metrics
        self.interval = interval
        self.waiting: dict[bytes, tuple[bytes, Signed, int]] = {}
        self._kick = trio.Event()

    async def send(self, to: bytes, s: Signed) -> bool:
        """Hand `s` to `to`'s node now if it can be reached; else keep it for `run`. True once
        the recipient's node has it (taken now or before)."""
        if await self._try(to, s):
            return True
        if len(self.waiting) >= MAX_WAITING:
            self.metrics["offers_dropped"] += 1
            return False
        if s.hash not in self.waiting:
            self.waiting[s.hash] = (to, s, 0)
            await self._keep(s.hash, to)
        self._kick.set()
        return False

    def restore(self) -> int:
        """Queue again what waited when the node stopped (each offer read from its chain);
        how many."""
        if self.store is None:
            return 0
        rows = self.store.db.execute("SELECT hash, recipient FROM outbox LIMIT ?", (MAX_WAITING,))
        for h, to in rows.fetchall():
            found = self.store.record(h)
            if found is not None:
                self.waiting.setdefault(h, (to, found[0], 0))
        if self.waiting:
            self._kick.set()
        return len(self.waiting)

    async def _keep(self, h: bytes, to: bytes) -> None:
        if self.store is not None:
            await self.store.write(
                lambda db: db.execute("INSERT OR IGNORE INTO outbox VALUES (?, ?)", (h, to))
            )

    async def _done(self, h: bytes) -> None:
        self.waiting.pop(h, None)
        if self.store is not None:
            await self.store.write(lambda db: db.execute("DELETE FROM outbox WHERE hash=?", (h,)))

    async def _try(self, to: bytes, s: Signed) -> bool:
        host = self.host_of(to)
        if host is None:
            return False
        try:
            await self.request(host, "offer", offer=[s.body, s.sig])
        except BudgetError:
            self.metrics["offers_undelivered"] += 1
            return False
        self.metrics["offers_delivered"] += 1
        return True

    async def run(self) -> None:
        while True:
            if not self.waiting:
                await self._kick.wait()  # nothing waits: nothing to wake for
            self._kick = trio.Event()
            await trio.sleep(self.interval)
            for h, (to, s, tries) in list(self.waiting.items())[:64]:
                if await self._try(to, s):
                    await self._done(h)
                elif tries + 1 >= ATTEMPTS:
                    await self._done(h)
                    self.metrics["offers_dropped"] += 1
                else:
                    self.waiting[h] = (to, s, tries + 1)
