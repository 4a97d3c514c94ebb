"""Gossip at a network node: heads and warrants swapped with one peer per round, so whatever
publishing missed (a partition, a crash, a lost message) is fetched in the end.

A component of NetNode (node.py wires it), built with the peer table, the warrant book, the
publisher (told when another process committed to the shared store), `request`, and the
node's view of the chains it holds: `heads()`, `head(author)`, `should_hold(author)` and
`fetch(author, peer, seq)` (the chain fetcher). It owns the pace (`quiet` rounds; `news()`
brings it back) and the `summary` handler.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from ..core.errors import BudgetError
from . import protocol as P
from .messages import Head as HeadMsg
from .peer_table import PeerTable
from .publishing import Publisher
from .warrants import WarrantBook

Head = tuple[int, bytes]  # (seq, hash) of a chain's head

MAX_GOSSIP_BACKOFF = 2  # quiet rounds stretch the gossip interval up to this factor
EAGER_EXCHANGE_S = 2.0  # peer swaps that bring news are repeated this soon...
MAX_EAGER_EXCHANGES = 8  # ...this many times in a round
PROBES_PER_ROUND = 4  # dropped peers greeted (in case they are back) in a round
MAX_REDIAL_GAP = (
    32  # a node without peers redials its bootstrap peers after 1, 2, 4, … rounds, then every 32
)


class Gossiper:
    def __init__(
        self,
        *,
        rng: random.Random,
        gossip_interval: float,
        peer_table: PeerTable,
        warrant_book: WarrantBook,
        publisher: Publisher,
        request: Callable[..., Awaitable[Any]],
        metrics: Counter,
        changed_elsewhere: Callable[[], bool],
        heads: Callable[[], dict[bytes, Head]],
        head: Callable[[bytes], Head | None],
        should_hold: Callable[[bytes], bool],
        fetch: Callable[[bytes, bytes, int], None],
        task_failed: Callable[[str, Exception], None],
    ) -> None:
        self.rng = rng
        self.gossip_interval = gossip_interval
        self.peer_table = peer_table
        self.peers = peer_table.peers
        self.id = peer_table.id
        self.warrant_book = warrant_book
        self.warranted = warrant_book.warranted
        self.publisher = publisher
        self.request = request
        self.metrics = metrics
        self.changed_elsewhere = changed_elsewhere
        self.heads = heads
        self.head = head
        self.should_hold = should_hold
        self.fetch = fetch
        self.task_failed = task_failed
        self.quiet = 0  # rounds in a row that found nothing
        self.bootstrap: tuple = ()  # addresses a node left without peers dials again
        self.alone = 0  # rounds in a row without peers
        self.redial_gap = 1  # rounds until the next redial: doubles per redial, up to the bound
        self.redial_at = 1  # the `alone` round of the next redial

    def news(self) -> None:
        """Something changed here: gossip at the full pace again."""
        self.quiet = 0

    async def run(self) -> None:
        rounds = 0
        while True:
            # Rounds that find nothing stretch the interval (up to MAX_GOSSIP_BACKOFF times): an
            # idle network gossips less, and any change here brings the pace back.
            stretch = min(MAX_GOSSIP_BACKOFF, 1 << min(self.quiet, 8))
            await trio.sleep(self.gossip_interval * stretch * (0.5 + self.rng.random()))
            rounds += 1
            self.peer_table.save_cache()
            if self.changed_elsewhere():  # another process sharing the store committed
                self.publisher.committed()
            # A node without peers (a restart while its peers were away, its bootstrap peer
            # unreachable) greets its dropped and bootstrap peers again after 1, 2, 4, … rounds,
            # then every MAX_REDIAL_GAP (the rounds' seeded jitter spreads them): not a hello a
            # second forever.
            redial = False
            if not self.peers:
                self.alone += 1
                redial = self.alone >= self.redial_at
                if redial:
                    self.redial_at = self.alone + self.redial_gap
                    self.redial_gap = min(MAX_REDIAL_GAP, self.redial_gap * 2)
            if self.peer_table.dropped and (redial or (self.peers and rounds % 2 == 0)):
                # several at once: after a long partition a node may have dropped many, and
                # one every other round took longer than the liveness deadline (seed 470051)
                async with trio.open_nursery() as n:
                    for peer in self.rng.sample(
                        sorted(self.peer_table.dropped),
                        min(PROBES_PER_ROUND, len(self.peer_table.dropped)),
                    ):
                        n.start_soon(self.peer_table.probe_dropped, peer)
            if not self.peers:
                if redial:
                    for addr in self.bootstrap:
                        await self.peer_table.join(addr)
                continue
            self.alone, self.redial_gap, self.redial_at = 0, 1, 1
            try:
                settling = (
                    trio.current_time() - self.peer_table.changed_at < 5 * self.gossip_interval
                )
                # Every await may drop peers (3 failures in a row): choose after it, not before.
                if (settling or rounds % 5 == 0) and self.peers:
                    # while membership is changing, swap peer infos every round, and again a
                    # few seconds later for as long as a swap brings news
                    got = await self.peer_table.refresh(self.peer_table.random_peer())
                    for _ in range(MAX_EAGER_EXCHANGES):
                        if not got or not self.peers:
                            break
                        await trio.sleep(
                            min(self.gossip_interval, EAGER_EXCHANGE_S) * (0.5 + self.rng.random())
                        )
                        got = await self.peer_table.refresh(self.peer_table.random_peer())
                if self.peers:
                    await self.gossip_with(self.gossip_partner())
            except BudgetError:
                self.metrics["gossip_failures"] += 1
            except Exception as e:  # whatever a peer's data reached: this round only
                self.task_failed("gossip", e)

    def gossip_partner(self) -> bytes:
        """Mostly a fellow authority of a chain this node keeps (that is where a summary can
        find something to repair), sometimes anyone (so warrants and stragglers still meet)."""
        if self.rng.random() < 0.75:
            held = [a for a in self.heads() if self.should_hold(a)]
            if held:
                others = [p for p in self.peer_table.nearest(self.rng.choice(held)) if p != self.id]
                if others:
                    return self.rng.choice(others)
        return self.peer_table.random_peer()

    async def gossip_with(self, peer: bytes) -> None:
        mine = self.heads()
        rep = await self.request(
            peer,
            "summary",
            heads=self.heads_for(peer, mine),
            warranted=list(self.warranted)[: P.MAX_WARRANTED_NAMED],
        )
        self.metrics["gossip_rounds"] += 1
        found = 0
        for w in rep.warrants:
            found += await self.warrant_book.receive(w, peer)
        # Push as well as pull: a warrant spreads both ways through every round, so it reaches
        # every node in O(log N) rounds whoever happens to ask whom.
        theirs = set(rep.warranted)
        push = [w.to_wire() for a, w in self.warranted.items() if a not in theirs]
        if push:
            try:
                await self.request(peer, "warrants", warrants=push[: P.MAX_WARRANTS_PER_MESSAGE])
            except BudgetError:
                pass  # the next round finds the gap again
        for author, (seq, h) in self._parse_heads(rep.heads).items():
            have = self.head(author)
            if author in self.warranted or not self.should_hold(author):
                continue
            if have is None or seq > have[0]:
                self.metrics["gossip_lag_ops"] += seq - (-1 if have is None else have[0])
                self.fetch(author, peer, seq)
                found += 1
            elif seq == have[0] and h != have[1]:
                self.fetch(author, peer, seq)
                found += 1
        self.quiet = 0 if found else self.quiet + 1

    async def on_summary(self, peer: bytes, msg: P.SummaryRequest) -> Any:
        theirs = self._parse_heads(msg.heads)
        mine = self.heads()
        for author, (seq, h) in theirs.items():
            have = mine.get(author)
            if self.should_hold(author) and (
                have is None or seq > have[0] or (seq == have[0] and h != have[1])
            ):
                self.fetch(author, peer, seq)
                self.quiet = 0
        # The asker names the offenders it already holds proof for; one proof each of the
        # others is enough (sending every copy would re-send capped ones every round).
        known = set(msg.warranted)
        missing = [w.to_wire() for a, w in self.warranted.items() if a not in known]
        return P.reply(
            heads=self.heads_for(peer, mine),
            warrants=missing[: P.MAX_WARRANTS_PER_MESSAGE],
            warranted=list(self.warranted)[: P.MAX_WARRANTED_NAMED],
        )

    def heads_for(self, peer: bytes, mine: dict[bytes, Head]) -> list:
        """The heads `peer` should hold as an author-key authority (as this node sees the ring):
        a summary's size follows the overlap of two nodes' responsibilities, not all they hold."""
        heads = [[a, s, h] for a, (s, h) in mine.items() if peer in self.peer_table.nearest(a)]
        if len(heads) > P.MAX_SUMMARY_AUTHORS:
            heads = self.rng.sample(heads, P.MAX_SUMMARY_AUTHORS)
        return heads

    @staticmethod
    def _parse_heads(heads: Iterable[HeadMsg]) -> dict[bytes, Head]:
        """author -> (seq, hash); an author named twice counts as its last head named (as the
        summary was read before)."""
        return {h.author: (h.seq, h.hash) for h in heads}
