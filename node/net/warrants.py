"""Warrants at a network node: issuing, keeping, spreading, and believing them only on proof.

The book is a component of NetNode (node.py wires it): it owns `warranted` (offender -> the
first proven warrant) and `warrants_by_hash`, and reaches the rest of the node only through
what it is given: the peer table's `peers` and `request`, the ring (`nearest`), the chain
fetch (`ask_chain`), and `on_warranted`, which routes the node away from a new offender.

An `invalid` warrant is proven from the step it names when the action before it came along,
else against the offender's history before it, from this node's copy or from whoever can serve
it; a fetched history must validate in full, so nobody can frame an honest author with one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..core import warrant
from ..core.app import App
from ..core.crypto import SigningKey
from ..core.dna import Dna
from ..core.action import Signed
from ..core.encoding import encode
from ..core.errors import BudgetError, InvalidChain
from ..core.validate import ChainState, step_anchor, validate_chain, validate_genesis, validate_next
from ..core.warrant import Warrant, proves
from . import protocol as P
from .dht_store import DhtStore
from .messages import Record

MAX_WARRANTS_PER_OFFENDER = 3
MAX_WARRANTED = 1 << 16  # offenders: past it, only one whose chain or node this node holds
MAX_FETCH_ROUNDS = 64  # * MAX_OPS_PER_MESSAGE actions of history per fetch


def prefix_state(records: list[Record], seq: int, dna: Dna, app: App) -> ChainState | None:
    """The state after records 0..seq-1 of a chain, or None if they are not all there or do
    not validate."""
    if len(records) != seq:
        return None
    try:
        prefix = [r.action for r in records]
        entries: dict[bytes, bytes] = {
            e: r.entry
            for r in records
            if r.entry and isinstance(e := r.action.action.get("entry"), bytes)
        }
        return validate_chain(prefix, dna, app, entries)
    except (BudgetError, TypeError, ValueError):  # InvalidChain included
        return None


Request = Callable[..., Awaitable[Any]]
Spawn = Callable[..., None]


class WarrantBook:
    def __init__(
        self,
        *,
        node_id: bytes,
        node_key: SigningKey,
        dna: Dna,
        app: App,
        dht: DhtStore,
        metrics: Counter,
        now_us: Callable[[], int],
        spawn: Spawn,
        changed: Callable[[], None],
        warranted: dict[bytes, Warrant],
        peers: Mapping[bytes, P.PeerInfo],
        request: Request,
        nearest: Callable[[bytes], Sequence[bytes]],
        host_of: Callable[[bytes], bytes | None],
        ask_chain: Callable[[bytes, bytes, int, int], Awaitable[Sequence[Record]]],
        holds: Callable[[bytes], bool],
        on_warranted: Callable[[Warrant], None],
    ) -> None:
        """`warranted`: offender -> the first warrant kept, written here only (the peer table
        reads it). `holds(offender)`: this node holds its chain, hosts it or routes to it (state a
        warrant protects). `on_warranted(w)`: a new offender's first warrant was kept."""
        self.id = node_id
        self.node_key = node_key
        self.dna = dna
        self.app = app
        self.dht = dht
        self.metrics = metrics
        self.now_us = now_us
        self.spawn = spawn
        self.changed = changed
        self.peers = peers
        self.request = request
        self.nearest = nearest
        self.host_of = host_of
        self.ask_chain = ask_chain
        self.holds = holds
        self.on_warranted = on_warranted
        self.warranted = warranted
        self.warrants_by_hash: dict[bytes, Warrant] = {}

    async def load(self) -> None:
        """The warrants kept before a restart."""
        for wire in self.dht.warrants():
            w = warrant.from_wire(wire)
            if w is not None:
                await self.remember(w)

    async def issue(
        self,
        kind: str,
        offender: bytes,
        reason: str,
        seq: int,
        evidence: list[Signed],
        *,
        entry: bytes | None = None,
        batch: dict | None = None,
    ) -> None:
        w = warrant.make(
            kind,
            offender,
            reason,
            seq,
            evidence,
            self.node_key,
            self.now_us(),
            entry=entry,
            batch=batch,
        )
        if await self.remember(w):
            self.metrics["warrants_issued"] += 1
            self.spawn(self._broadcast, w)

    async def remember(self, w: Warrant) -> bool:
        """Keep a proven warrant. A warranted agent stays warranted: nothing is ever evicted.
        Past MAX_WARRANTED offenders, a new one is kept only if this node holds its chain, hosts
        it, or routes to it as a peer (state that the warrant protects); proven offenders made
        up in bulk cannot crowd those out."""
        if w.hash in self.warrants_by_hash:
            return False
        if (
            w.offender not in self.warranted
            and len(self.warranted) >= MAX_WARRANTED
            and not self.holds(w.offender)
        ):
            self.metrics["warrants_table_full"] += 1
            return False
        if (
            w.offender in self.warranted
            and sum(1 for x in self.warrants_by_hash.values() if x.offender == w.offender)
            >= MAX_WARRANTS_PER_OFFENDER
        ):
            return False  # enough proof kept; more issuers' copies add nothing
        await self.dht.put_warrant(w.hash, w.offender, encode(w.to_wire()))
        if w.hash in self.warrants_by_hash:  # kept by another task while this one waited
            return False
        self.warrants_by_hash[w.hash] = w
        if w.offender not in self.warranted:
            self.warranted[w.offender] = w
            self.on_warranted(w)
            if type(w.body.get("seq")) is int:  # the offence the acceptor refuses from
                await self.dht.drop_ops_from(w.offender, w.body["seq"])
        self.changed()
        return True

    async def _broadcast(self, w: Warrant) -> None:
        for peer in list(self.peers):
            try:
                await self.request(peer, "warrants", warrants=[w.to_wire()])
            except BudgetError:
                pass  # gossip carries it there later

    async def receive(self, msg: P.WarrantMsg, peer: bytes) -> bool:
        w = warrant.from_wire(msg.to_wire())
        if w is None:
            self.metrics["warrants_refused"] += 1
            return False
        if w.hash in self.warrants_by_hash:
            return True
        if w.kind == "fork":
            ok = warrant.fork_proven(w)
        elif w.kind == "peer":
            ok = warrant.peer_proven(w)
        else:
            ok = await self.invalid_proven(w, peer)
        if not ok:
            self.metrics["warrants_refused"] += 1
            return False
        self.metrics["warrants_received"] += 1
        await self.remember(w)
        return True

    async def invalid_proven(self, w: Warrant, peer: bytes) -> bool:
        """Re-run the validator on the evidence: one step from the action before it when that
        came along (enough for everything but a grant claimed twice), else against the
        offender's chain before it: this node's copy, or one fetched from the sender, the
        issuer, the offender's authorities or its host (once an agent is warranted nobody
        fetches its history, so its authorities may lack it). A fetched history must itself
        validate, or its sender could frame the author by leaving records out."""
        if warrant.prev_mismatch_proven(w):
            return True
        evidence = w.evidence()
        s = evidence[0]
        seq = s.seq
        entry = w.body.get("entry")
        if len(evidence) == 2:
            anchor = step_anchor(evidence[1], s, self.dna)
            if anchor is not None:
                try:
                    validate_next(anchor, s, self.dna, self.app, entry)
                except InvalidChain as e:
                    if proves(e.reason):
                        return True
        if seq == 0:
            try:
                validate_genesis(s, self.dna)
            except InvalidChain as e:
                return proves(e.reason)
            return False
        sources = [
            None,
            peer,
            w.issuer,
            *self.nearest(w.offender),
            self.host_of(w.offender),
        ]
        sources = list(dict.fromkeys(x for x in sources if x != self.id))
        for source in sources:
            records = (
                self.held_prefix(w.offender, seq)
                if source is None
                else await self.fetch_prefix(w.offender, seq, source)
            )
            cs = prefix_state(records, seq, self.dna, self.app)
            if cs is None:
                continue
            try:
                validate_next(cs, s, self.dna, self.app, entry)
            except InvalidChain as e:
                return proves(e.reason)
            return False
        return False

    def held_prefix(self, author: bytes, seq: int) -> list[Record]:
        """Records 0..seq-1 of `author`'s chain as this node holds it."""
        try:
            return [
                Record(Signed.from_wire(b, sg), e) for b, sg, e in self.dht.records(author, 0, seq)
            ]
        except BudgetError:
            return []

    async def fetch_prefix(self, author: bytes, seq: int, source: bytes) -> list[Record]:
        """Records 0..seq-1 of `author`'s chain from `source`, or as many as it had."""
        records: list[Record] = []
        if source == self.id or source not in self.peers:
            return records
        while len(records) < seq and len(records) < MAX_FETCH_ROUNDS * P.MAX_OPS_PER_MESSAGE:
            got = await self.ask_chain(
                source, author, len(records), min(P.MAX_OPS_PER_MESSAGE, seq - len(records))
            )
            if not got:
                return records
            records.extend(got)
        return records

    def warrants(self) -> list[Warrant]:
        return list(self.warrants_by_hash.values())

    async def on_warrants(self, peer: bytes, msg: P.WarrantsRequest) -> Any:
        """The `warrants` request: each is believed only on proof."""
        for w in msg.warrants:
            await self.receive(w, peer)
        return P.reply(ok=True)
