"""Gossip at a network node: heads and warrants swapped with one peer per round, so whatever
publishing missed (a partition, a crash, a lost message) is fetched in the end."""

from __future__ import annotations

import trio

from ..core.errors import BudgetError
from . import protocol as P

MAX_GOSSIP_BACKOFF = 2  # quiet rounds stretch the gossip interval up to this factor
EAGER_EXCHANGE_S = 2.0  # peer swaps that bring news are repeated this soon...
MAX_EAGER_EXCHANGES = 8  # ...this many times in a round
PROBES_PER_ROUND = 4  # dropped peers greeted (in case they are back) in a round


class Gossip:
    async def _gossiper(self) -> None:
        rounds = 0
        while True:
            # Rounds that find nothing stretch the interval (up to MAX_GOSSIP_BACKOFF times): an
            # idle network gossips less, and any change here brings the pace back.
            stretch = min(MAX_GOSSIP_BACKOFF, 1 << min(self._gossip_quiet, 8))
            await trio.sleep(self.gossip_interval * stretch * (0.5 + self.rng.random()))
            rounds += 1
            self.peer_table.save_cache()
            if self.store.changed_elsewhere():  # another process sharing the store committed
                self.publisher.committed()
            if self.peer_table.dropped and (rounds % 2 == 0 or not self.peers):
                # several at once: after a long partition a node may have dropped many, and
                # one every other round took longer than the liveness deadline (seed 470051)
                async with trio.open_nursery() as n:
                    for peer in self.rng.sample(
                        sorted(self.peer_table.dropped),
                        min(PROBES_PER_ROUND, len(self.peer_table.dropped)),
                    ):
                        n.start_soon(self.peer_table.probe_dropped, peer)
            if not self.peers:
                for addr in self.bootstrap:  # a restarted node whose peers were away tries again
                    await self.join(addr)
                continue
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
                    await self._gossip_with(self._gossip_partner())
            except BudgetError:
                self.metrics["gossip_failures"] += 1
            except Exception as e:  # whatever a peer's data reached: this round only
                self._task_failed("gossip", e)

    def _gossip_partner(self) -> bytes:
        """Mostly a fellow authority of a chain this node keeps (that is where a summary can
        find something to repair), sometimes anyone (so warrants and stragglers still meet)."""
        if self.rng.random() < 0.75:
            held = [a for a in self._heads() if self._should_hold(a)]
            if held:
                others = [p for p in self.peer_table.nearest(self.rng.choice(held)) if p != self.id]
                if others:
                    return self.rng.choice(others)
        return self.peer_table.random_peer()

    async def _gossip_with(self, peer: bytes) -> None:
        mine = self._heads()
        rep = await self._request(
            peer,
            "summary",
            heads=self._heads_for(peer, mine),
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
                await self._request(peer, "warrants", warrants=push[: P.MAX_WARRANTS_PER_MESSAGE])
            except BudgetError:
                pass  # the next round finds the gap again
        for author, (seq, h) in self._parse_heads(rep.heads).items():
            have = self._head(author)
            if author in self.warranted or not self._should_hold(author):
                continue
            if have is None or seq > have[0]:
                self.metrics["gossip_lag_ops"] += seq - (-1 if have is None else have[0])
                self._spawn_fetch(author, peer, seq)
                found += 1
            elif seq == have[0] and h != have[1]:
                self._spawn_fetch(author, peer, seq)
                found += 1
        self._gossip_quiet = 0 if found else self._gossip_quiet + 1

    async def _on_summary(self, peer, msg: P.SummaryRequest):
        theirs = self._parse_heads(msg.heads)
        mine = self._heads()
        for author, (seq, h) in theirs.items():
            have = mine.get(author)
            if self._should_hold(author) and (
                have is None or seq > have[0] or (seq == have[0] and h != have[1])
            ):
                self._spawn_fetch(author, peer, seq)
                self._gossip_quiet = 0
        # The asker names the offenders it already holds proof for; one proof each of the
        # others is enough (sending every copy would re-send capped ones every round).
        known = set(msg.warranted)
        missing = [w.to_wire() for a, w in self.warranted.items() if a not in known]
        return P.reply(
            heads=self._heads_for(peer, mine),
            warrants=missing[: P.MAX_WARRANTS_PER_MESSAGE],
            warranted=list(self.warranted)[: P.MAX_WARRANTED_NAMED],
        )

    def _heads_for(self, peer: bytes, mine: dict) -> list:
        """The heads `peer` should hold as an author-key authority (as this node sees the ring):
        a summary's size follows the overlap of two nodes' responsibilities, not all they hold."""
        heads = [[a, s, h] for a, (s, h) in mine.items() if peer in self.peer_table.nearest(a)]
        if len(heads) > P.MAX_SUMMARY_AUTHORS:
            heads = self.rng.sample(heads, P.MAX_SUMMARY_AUTHORS)
        return heads

    @staticmethod
    def _parse_heads(heads) -> dict:
        """author -> (seq, hash); an author named twice counts as its last head named (as the
        summary was read before)."""
        return {h.author: (h.seq, h.hash) for h in heads}
