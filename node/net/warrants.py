"""Warrants at a network node: issuing, keeping, spreading, and believing them only on proof.

An `invalid` warrant is proven from the step it names when the action before it came along,
else against the offender's history before it, from this node's copy or from whoever can serve
it; a fetched history must validate in full, so nobody can frame an honest author with one.
"""

from __future__ import annotations

from ..core import warrant
from ..core.action import Signed
from ..core.encoding import encode
from ..core.errors import BudgetError, InvalidChain
from ..core.validate import ChainState, step_anchor, validate_chain, validate_genesis, validate_next
from ..core.warrant import Warrant, proves
from . import protocol as P
from .messages import Record

MAX_WARRANTS_PER_OFFENDER = 3
MAX_WARRANTED = 1 << 16  # offenders: past it, only one whose chain or node this node holds
MAX_FETCH_ROUNDS = 64  # * MAX_OPS_PER_MESSAGE actions of history per fetch


def prefix_state(records: list[Record], seq: int, dna, app) -> ChainState | None:
    """The state after records 0..seq-1 of a chain, or None if they are not all there or do
    not validate."""
    if len(records) != seq:
        return None
    try:
        prefix = [r.action for r in records]
        entries = {r.action.action.get("entry"): r.entry for r in records if r.entry}
        return validate_chain(prefix, dna, app, entries)
    except (BudgetError, TypeError, ValueError):  # InvalidChain included
        return None


class Warrants:
    async def _issue(
        self, kind: str, offender: bytes, reason: str, seq: int, evidence, *, entry=None, batch=None
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
        if await self._remember_warrant(w):
            self.metrics["warrants_issued"] += 1
            self._spawn(self._broadcast_warrant, w)

    async def _remember_warrant(self, w: Warrant) -> bool:
        """Keep a proven warrant. A warranted agent stays warranted: nothing is ever evicted.
        Past MAX_WARRANTED offenders, a new one is kept only if this node holds its chain, hosts
        it, or routes to it as a peer (state that the warrant protects); proven offenders made
        up in bulk cannot crowd those out."""
        if w.hash in self.warrants_by_hash:
            return False
        if (
            w.offender not in self.warranted
            and len(self.warranted) >= MAX_WARRANTED
            and not (
                w.offender in self.chains or w.offender in self.cells or w.offender in self.peers
            )
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
            self._forget_peer(w.offender)
            self._unsaved_peers.pop(w.offender, None)
            self._unsaved_forgets.add(w.offender)
            cell = self.cells.get(w.offender)
            if cell is not None:
                cell.warrant = w  # this node is told why its agent is refused everywhere
        self._changed()
        return True

    async def _broadcast_warrant(self, w: Warrant) -> None:
        for peer in list(self.peers):
            try:
                await self._request(peer, "warrants", warrants=[w.to_wire()])
            except BudgetError:
                pass  # gossip carries it there later

    async def _receive_warrant(self, msg: P.WarrantMsg, peer: bytes) -> bool:
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
            ok = await self._invalid_proven(w, peer)
        if not ok:
            self.metrics["warrants_refused"] += 1
            return False
        self.metrics["warrants_received"] += 1
        await self._remember_warrant(w)
        return True

    async def _invalid_proven(self, w: Warrant, peer: bytes) -> bool:
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
            *self._nearest(w.offender),
            self.agent_hosts.get(w.offender),
        ]
        sources = list(dict.fromkeys(x for x in sources if x != self.id))
        for source in sources:
            records = (
                self._held_prefix(w.offender, seq)
                if source is None
                else await self._fetch_prefix(w.offender, seq, source)
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

    def _held_prefix(self, author: bytes, seq: int) -> list[Record]:
        """Records 0..seq-1 of `author`'s chain as this node holds it."""
        try:
            return [
                Record(Signed.from_wire(b, sg), e) for b, sg, e in self.dht.records(author, 0, seq)
            ]
        except BudgetError:
            return []

    async def _fetch_prefix(self, author: bytes, seq: int, source: bytes) -> list[Record]:
        """Records 0..seq-1 of `author`'s chain from `source`, or as many as it had."""
        records: list[Record] = []
        if source == self.id or source not in self.peers:
            return records
        while len(records) < seq and len(records) < MAX_FETCH_ROUNDS * P.MAX_OPS_PER_MESSAGE:
            got = await self._ask_chain(
                source, author, len(records), min(P.MAX_OPS_PER_MESSAGE, seq - len(records))
            )
            if not got:
                return records
            records.extend(got)
        return records

    def warrants(self) -> list[Warrant]:
        return list(self.warrants_by_hash.values())

    async def _on_warrants(self, peer, msg: P.WarrantsRequest):
        for w in msg.warrants:
            await self._receive_warrant(w, peer)
        return P.reply(ok=True)
