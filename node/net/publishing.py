"""Publishing at a network node: every own action to its authorities until they receipt it,
the author's key authorities first; and passing an action on to authorities its publisher did
not know of.

A component of NetNode (node.py wires it), built with what it uses: the peer table (who the
peers are, the ring, when membership last moved), `request` (one exchange with a peer), the
DhtStore, this node's agents and the warranted (read only), and the node key that signs each
batch. It owns the publish loop's state: what may be unpublished, the heads to republish after
the ring moved, the recheck pass, and `idle`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from ..core import dht, warrant
from ..core.action import Signed
from ..core.crypto import SIG_LEN, SigningKey
from ..core.errors import BudgetError
from . import protocol as P
from .dht_store import DhtStore
from .peer_table import PeerTable
from .transport import PeerUnreachable


FINAL = ("valid", "invalid", "warranted")  # answers after which a recipient need not be asked again


Batches = dict[bytes, list[Signed]]


class Publisher:
    def __init__(
        self,
        *,
        node_key: SigningKey,
        r: int,
        dht_store: DhtStore,
        peer_table: PeerTable,
        request: Callable[..., Awaitable[Any]],
        agents: Mapping[bytes, Any],
        warranted: Mapping[bytes, object],
        metrics: Counter,
        now_us: Callable[[], int],
        spawn: Callable[..., None],
        changed: Callable[[], None],
        publish_interval: float,
        outgoing: Callable[[Batches], Batches] | None,
    ) -> None:
        """`agents`: this node's own cells (pub -> Cell), whose heads are republished.
        `outgoing(batches)` may rewrite each round's batches (a test's adversary)."""
        self.node_key = node_key
        self.id = node_key.public
        self.r = r
        self.dht = dht_store
        self.peer_table = peer_table
        self.peers = peer_table.peers
        self.request = request
        self.cells = agents
        self.warranted = warranted
        self.metrics = metrics
        self.now_us = now_us
        self.spawn = spawn
        self.changed = changed
        self.publish_interval = publish_interval
        self.outgoing = outgoing
        self.maybe_unpublished = True  # no need to ask the store until something commits
        self._republish: set[bytes] = set()  # own agents whose authorities changed
        self._republish_heads: dict[bytes, bytes] = {}  # head hash in flight -> its agent
        self._recheck_from: int | None = None  # own actions past this row id: offer again
        self._recheck_short = False  # this pass left an authority without one
        self._recheck_passes = 0  # passes in a row that did
        self._recheck_not_before = 0.0
        self._peer_epoch = 0
        self._kick = trio.Event()
        self.idle = trio.Event()  # set while nothing is left to publish or retry

    def membership_moved(self) -> None:
        """New authorities may now be nearer to our agents than the ones that stored their
        heads: queue each head, to be sent to the authorities that hold no receipt for it
        (they fetch the history before it from us)."""
        self._peer_epoch += 1
        self._republish.update(p for p in self.cells if p not in self.warranted)
        self._recheck_from, self._recheck_short, self._recheck_passes = -1, False, 0
        self._recheck_not_before = 0.0
        self.wake()

    def committed(self) -> None:
        """Something new may be in the store (a commit here, or by another process)."""
        self.maybe_unpublished = True
        self.wake()

    async def run(self) -> None:
        while True:
            pending: list[Signed] = []
            if self.peers and self.maybe_unpublished:
                pending = self.dht.unpublished(P.MAX_OPS_PER_MESSAGE)
                self.maybe_unpublished = bool(pending)
            if self.peers and self._republish:
                have = {s.hash for s in pending}
                # a round's ops, backlog and heads together, fit in one publish (the bound its
                # recipients check): a restart with a backlog once sent 256 + the heads, refused
                # every round, forever
                room = P.MAX_OPS_PER_MESSAGE - len(pending)
                for pub in sorted(self._republish)[:room]:
                    cell = self.cells.get(pub)
                    head = self.dht.action_at(pub, cell.state.seq) if cell is not None else None
                    if head is None or head.hash in have:
                        self._republish.discard(pub)
                    else:
                        self._republish_heads[head.hash] = pub
                        pending.append(head)
            wait, rechecked = None, False
            if self.peers and self._recheck_from is not None:
                wait = (
                    max(
                        self.peer_table.changed_at + 2 * self.publish_interval,
                        self._recheck_not_before,
                    )
                    - trio.current_time()
                )
                if wait <= 0:
                    # a due batch of the pass goes out whether or not new ops wait too: under
                    # a steady stream of writes the pass once waited for the writes to pause
                    # (`budgetnode nemesis`: ops a restarted node missed reached it minutes late)
                    rechecks, wait = self._recheck_batch(), None
                    if rechecks:
                        await self._round(rechecks, ops_only=True)
                        rechecked = True
                    elif not pending:  # the pass is over, or starts again later: look again
                        continue
            if pending:
                await self._round(pending, ops_only=False)
            if pending or rechecked:
                # an op short of receipts is tried again after a quiet interval
                with trio.move_on_after(self.publish_interval):
                    await self._kick.wait()
            elif wait is not None:  # a recheck is due once membership has been still a while
                with trio.move_on_after(wait):
                    await self._kick.wait()
            elif not self._kick.is_set():
                self.idle.set()
                await self._kick.wait()  # a commit, new peers, or the gossiper's nudge
            self._kick = trio.Event()

    async def _round(self, batch: list[Signed], ops_only: bool) -> None:
        if not await self._publish_round(batch, ops_only):
            self._recheck_short = True
            if self._recheck_from is None:  # (an op left in someone's limbo may expire)
                self._recheck_from = -1

    def wake(self) -> None:
        """There may be work: `publisher_idle` is clear from now until the publisher has looked
        and found none (a waiter must not see the idle of before the news)."""
        self._kick.set()
        if self.idle.is_set():
            self.idle = trio.Event()

    def _recheck_batch(self) -> list[Signed]:
        """The next own actions to offer again to the authorities of their hash and entry. A
        publish counts as done once those were asked; one that was away, cut off or not yet
        known then (or that is new to the ring since) holds no receipt, and would otherwise
        never get the op: a lookup by that hash could find nothing. The pass starts over at
        each membership change, after the ring has been still for two publish intervals, so
        a ring that is still settling (a network starting up) is walked once, not per peer."""
        if self._recheck_from is None:  # no pass under way (run() asks only during one)
            return []
        rows = self.dht.own_after(self._recheck_from, P.MAX_OPS_PER_MESSAGE)
        if not rows:
            # a pass that left an authority without its op (lost, timed out) is walked again,
            # each time later (up to 2^6 publish intervals), until one finds nothing missing
            self._recheck_from = -1 if self._recheck_short else None
            self._recheck_not_before = trio.current_time() + self.publish_interval * (
                1 << min(self._recheck_passes, 6)
            )
            self._recheck_passes = self._recheck_passes + 1 if self._recheck_short else 0
            self._recheck_short = False
            return []
        self._recheck_from = rows[-1][0]
        return [s for _, s in rows if s.author not in self.warranted]

    async def _publish_round(self, pending: list[Signed], ops_only: bool = False) -> bool:
        """False if an authority of an op's hash or entry may still lack it: a recheck left
        one without a receipt, or an authority answered `pending` or `busy` (the op waits in
        its limbo, which may expire, or was turned away) although the publish is done."""
        epoch = self._peer_epoch
        # Each op goes to its authorities that have not receipted it yet; it is done when every
        # authority of its author's key has (they re-derive the budget) and the others have all
        # been asked, or when anyone refuses it. `ops_only`: a recheck of published actions, for
        # the authorities of their hash and entry only (the head's republish and the history
        # fetch behind it bring the author-key authorities the whole chain).
        targets, must, receipted = {}, {}, {}
        for s in pending:
            must[s.hash] = set(self.peer_table.nearest(s.author)) - {self.id}
            targets[s.hash] = {p for b in dht.bases(s) for p in self.peer_table.nearest(b)} - {
                self.id
            }
            if ops_only:
                targets[s.hash] -= must[s.hash]
            receipted[s.hash] = self.dht.receipted_by(s.hash)
        # Authorities of the author's key first; the others then get each op with the receipts
        # those gave (so they need not show it to one themselves to catch a fork).
        by_peer: dict[bytes, list[Signed]] = {}
        later: dict[bytes, list[Signed]] = {}
        for s in pending:
            for p in sorted(targets[s.hash] - receipted[s.hash]):
                (by_peer if p in must[s.hash] else later).setdefault(p, []).append(s)
        outcome: dict[bytes, dict[bytes, str]] = {s.hash: {} for s in pending}
        if self.outgoing is not None:  # a test's adversary (sims.rogue); never in production
            by_peer, later = self.outgoing(by_peer), self.outgoing(later)

        prevs: dict[bytes, list | None] = {}

        def prev_of(s: Signed, peer: bytes) -> list | None:
            """The action before `s`, for a peer that holds it only as an op authority (it
            validates the step from it, without fetching the author's history)."""
            if s.seq == 0 or peer in self.peer_table.nearest(s.author):
                return None
            if s.hash not in prevs:
                p = self.dht.action_at(s.author, s.seq - 1)
                prevs[s.hash] = None if p is None else [p.body, p.sig]
            return prevs[s.hash]

        vouches: dict[bytes, list] = {}

        def vouch_of(s: Signed) -> list:
            """The receipts the author-key authorities gave, read once per op, not per peer;
            checked here, where a receipt first becomes evidence for someone else."""
            if s.hash not in vouches:
                vouches[s.hash] = [
                    r
                    for r in self.dht.receipts(s.hash)
                    if r[0] in must.get(s.hash, ())
                    and len(r[1]) == SIG_LEN
                    and dht.check_receipt(s.hash, r[0], r[1])
                ][: P.MAX_VOUCHES]
            return vouches[s.hash]

        entries: dict[bytes, bytes | None] = {}

        def entry_of(s: Signed) -> bytes | None:
            if s.action.get("type") != "create":
                return None
            if s.hash not in entries:
                entries[s.hash] = self.dht.entry(s.action["entry"])
            return entries[s.hash]

        got_receipts: list[tuple] = []

        async def send(peer: bytes, batch: list[Signed], vouch: bool = False) -> None:
            # an adversary's hook (`outgoing`) may have grown a batch past the bound
            for i in range(0, len(batch), P.MAX_OPS_PER_MESSAGE):
                await send_one(peer, batch[i : i + P.MAX_OPS_PER_MESSAGE], vouch)

        async def send_one(peer: bytes, batch: list[Signed], vouch: bool) -> None:
            ops = [
                [
                    s.body,
                    s.sig,
                    entry_of(s),
                    prev_of(s, peer),
                    list(self.peer_table.nearest(s.author)),
                    vouch_of(s) if vouch else None,
                ]
                for s in batch
            ]
            signed = warrant.sign_batch(ops, peer, self.now_us(), self.node_key)
            rep = None
            for _ in range(2):  # a lost request or reply is retried at once, not a round later
                try:
                    rep = await self.request(peer, "publish", ops=ops, batch=signed)
                    break
                except PeerUnreachable:
                    if peer not in self.peers:
                        return  # dropped as dead: the next round routes around it
                except BudgetError:
                    return
            if rep is None:
                return
            self.metrics["ops_published"] += len(ops)
            # The reply is the authority's word (the transport says who answered). Only an
            # authority of the author's key signs a receipt (only its receipts vouch for an op
            # to others); that receipt is kept unchecked until it is passed on (vouch_of).
            for r in rep.results[: len(ops)]:
                if r.hash in outcome:
                    if r.status == "valid" and r.receipt is None and peer in must[r.hash]:
                        continue
                    outcome[r.hash][peer] = r.status
                    if r.status == "valid":
                        got_receipts.append((r.hash, peer, r.receipt or b""))
                        self.metrics["receipts"] += 1

        async with trio.open_nursery() as n:
            for peer, batch in by_peer.items():
                n.start_soon(send, peer, batch)
        await self.dht.add_receipts(got_receipts)  # one transaction a phase; vouch_of reads them
        got_receipts.clear()
        async with trio.open_nursery() as n:
            for peer, batch in later.items():
                n.start_soon(send, peer, batch, True)
        await self.dht.add_receipts(got_receipts)
        if ops_only:  # published already: only whether every authority has it now
            return all(
                targets[s.hash]
                <= receipted[s.hash] | {p for p, v in outcome[s.hash].items() if v in FINAL}
                for s in pending
            )
        for s in pending:
            got = outcome[s.hash]
            have = receipted[s.hash] | {p for p, v in got.items() if v == "valid"}
            refused = any(v in ("invalid", "warranted") for v in got.values())
            asked = targets[s.hash] <= have | set(got)
            if (must[s.hash] <= have and asked) or refused:
                pub = self._republish_heads.pop(s.hash, None)
                if epoch == self._peer_epoch:  # else the authorities moved mid-round: again
                    self._republish.discard(pub)
                if not self.dht.is_published(s.hash):
                    await self.dht.mark_published(s.hash, len(have))
                    self.changed()
                if refused:
                    self.metrics["own_ops_refused"] += 1
        return all(v in FINAL for got in outcome.values() for v in got.values())

    def forward(self, s: Signed, entry: bytes | None, sender: bytes, told: Sequence[bytes]) -> None:
        """A node sent an action as an author-key authority that knows an authority the
        publisher did not name (the publisher's peer table is behind: it joined late, or the
        other one did) passes the action on, naming everyone told so far. When the two views
        agree, nothing is sent."""
        told = [p for p in told[: 4 * self.r] if isinstance(p, bytes)]
        targets = [
            p
            for p in self.peer_table.nearest(s.author)
            if p != self.id and p != sender and p not in told
        ]
        if not targets:
            return
        told = sorted(set(told) | set(self.peer_table.nearest(s.author)))
        self.metrics["ops_forwarded"] += len(targets)

        async def send(peer: bytes) -> None:
            ops = [[s.body, s.sig, entry, None, told]]
            batch = warrant.sign_batch(ops, peer, self.now_us(), self.node_key)
            try:
                await self.request(peer, "publish", ops=ops, batch=batch)
            except BudgetError:
                pass  # gossip and the publisher's own republish are the backstops

        for peer in targets:
            self.spawn(send, peer)
