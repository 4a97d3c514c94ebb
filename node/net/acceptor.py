"""The one way in for other authors' actions at a network node, and what feeds it: every action
that reaches this node from outside (publish, gossip, a query, warrant evidence) is validated
by `accept` against this node's own view of the author's chain, fetching missing history from
the peer that sent it (`fetch_chain`, `ask_chain`); what cannot be validated yet waits in
`limbo`, which `run_limbo` retries, and ops held alone are shown to an author-key authority.

A component of NetNode (node.py wires it), built with the node key, dna/app, the DhtStore, the
cells (own agents: never taken from outside), the peer table, the warrant book (issues what it
proves), request, metrics, clock, spawn and the node's callbacks (`changed`, `news`: gossip's
pace, `task_failed`). It owns `chains` (validated heads of other authors' chains), `limbo`,
and the fetches in flight.

(Over 400 lines: accept, its limbo and the chain fetches call each other; split apart they
would pass the same state back and forth.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from ..core import dht, ledger, warrant
from ..core.action import Signed, grant_hash
from ..core.app import App
from ..core.crypto import SigningKey, verify
from ..core.dna import Dna
from ..core.encoding import decode, decode_stored
from ..core.errors import BudgetError, InvalidChain
from ..core.validate import ChainState, step_anchor, validate_genesis, validate_next
from ..core.warrant import REFUSED_ONLY, RETRYABLE, proves
from . import protocol as P
from ..verifier import open_states
from .dht_store import DhtStore
from .peer_table import PeerTable
from .warrants import MAX_FETCH_ROUNDS, WarrantBook

MAX_CHAINS = 1 << 18  # other authors' chains held: a new author past it is answered busy
MAX_LIMBO = 4096
LIMBO_ATTEMPTS = 30
MAX_SHOW_PER_PASS = 64  # queued ops shown to an author-key authority per limbo pass
MAX_PARALLEL_FETCHES = 8
MAX_ADMISSIONS = 1 << 16  # authors whose genesis this node checked for single ops (membrane)

Request = Callable[..., Awaitable[Any]]


async def ask_chain(request: Request, peer: bytes, author: bytes, start: int, limit: int) -> tuple:
    """`author`'s records from seq `start`, at most `limit`, as `peer` holds them: every chain
    fetch asks through here. No answer, a refusal or garbage is no records."""
    try:
        rep = await request(peer, "chain", author=author, **{"from": start}, limit=limit)
    except BudgetError:
        return ()
    return rep.records[:limit]


class Acceptor:
    def __init__(
        self,
        *,
        node_key: SigningKey,
        dna: Dna,
        app: App,
        dht_store: DhtStore,
        agents: Mapping[bytes, Any],
        peer_table: PeerTable,
        warrant_book: WarrantBook,
        request: Request,
        metrics: Counter,
        now_us: Callable[[], int],
        spawn: Callable[..., None],
        changed: Callable[[], None],
        news: Callable[[], None],
        task_failed: Callable[[str, Exception], None],
        publish_interval: float,
        take_offer: Callable[[Any, Signed], Awaitable[bool]] | None = None,
    ) -> None:
        self.node_key = node_key
        self.id = node_key.public
        self.dna = dna
        self.app = app
        self.dht = dht_store
        self.cells = agents
        self.peer_table = peer_table
        self.warrant_book = warrant_book
        self.warranted = warrant_book.warranted
        self.request = request
        self.metrics = metrics
        self.now_us = now_us
        self.spawn = spawn
        self.changed = changed
        self.news = news
        self.task_failed = task_failed
        self.publish_interval = publish_interval
        self.take_offer = take_offer  # node/budgets.py: offers to local agents, as they arrive
        self.chains: dict[bytes, ChainState] = {}  # validated heads of other authors' chains
        self.limbo: dict[bytes, tuple] = {}
        self._showing: set[bytes] = set()  # ops being shown to an author-key authority
        self._maybe_unshown = True  # the store may hold ops not yet shown
        self.fetching: set[bytes] = set()
        self._fetch_limit = trio.Semaphore(MAX_PARALLEL_FETCHES)
        self._limbo_kick = trio.Event()
        # author -> whether its genesis passed the membrane: a step alone cannot show it, and an
        # uninvited author, refused without a warrant, would otherwise be fetched again each time
        self.admitted: dict[bytes, bool] = {}

    def load(self) -> None:
        """The other authors' chains held before a restart, each from its checkpoint
        (node/verifier.py: what is checked when)."""
        authors = self.dht.foreign_authors()
        self.chains.update(open_states(self.dht.store, authors, self.dna, self.app))

    def should_hold_as_authority(self, pub: bytes) -> bool:
        return self.id in self.peer_table.nearest(pub)

    def head(self, author: bytes) -> tuple[int, bytes] | None:
        cell = self.cells.get(author)
        cs = cell.state if cell is not None else self.chains.get(author)
        return None if cs is None else (cs.seq, cs.hash)

    def heads(self) -> dict[bytes, tuple[int, bytes]]:
        out = {
            pub: (c.state.seq, c.state.hash)
            for pub, c in self.cells.items()
            if pub not in self.warranted
        }
        out.update(
            {a: (cs.seq, cs.hash) for a, cs in self.chains.items() if a not in self.warranted}
        )
        return out

    def should_hold(self, author: bytes) -> bool:
        """Chains gossip keeps current here: our own agents' and those we are an author-key
        authority for. Copies held for an action or entry basis are refreshed when queried
        (refresh_agent), so replication stays O(R), not O(N)."""
        return author in self.cells or self.should_hold_as_authority(author)

    async def accept(
        self,
        s: Signed,
        entry: bytes | None,
        peer: bytes | None,
        fetch: bool = True,
        prev: Signed | None = None,
        op: bool = False,
        vouch: list | None = None,
    ) -> str:
        """Validate and store one action; returns valid, invalid, forged (its signature does not
        verify), warranted, pending or busy. `op`: it was published to this node as one of its
        authorities (`prev`, the action before it, and `vouch`, receipts from authorities of
        its author's key, may come along)."""
        author, seq = s.action.get("author"), s.action.get("seq")
        if not isinstance(author, bytes) or not isinstance(seq, int) or seq < 0:
            return "invalid"
        if self.dht.has_action(s.hash) if op else self.dht.in_chain(s.hash):
            return "valid"  # held already (an op: in a chain, or alone)
        if self._warranted_from(author, seq):
            return "warranted"  # the history before the offence is still checked and kept
        if author in self.cells:
            return "invalid"  # someone else's copy of our own agent's chain: never ours to take
        if self.admitted.get(author) is False:
            return "invalid"  # its genesis was refused (not_invited): nothing after it is taken
        cs = self.chains.get(author)
        if op and (cs is None or seq > cs.seq + 1) and not self.should_hold(author):
            return await self._accept_op(s, entry, peer, prev, vouch)
        if cs is not None and seq <= cs.seq:
            if not verify(author, s.sig, s.body):
                return "forged"
            existing = self.dht.action_at(author, seq)
            if existing is not None:
                await self.warrant_book.issue("fork", author, "fork", seq, [existing, s])
            return "invalid"
        if seq > (0 if cs is None else cs.seq + 1):
            if fetch and peer is not None:
                await self.fetch_chain(author, peer, seq - 1)
                # The sender may hold this action alone (a forwarder, a hash authority): the
                # author's own node has the history for sure.
                host = self.peer_table.agent_hosts.get(author)
                head = self.head(author)
                if (
                    host is not None
                    and host not in (peer, self.id)
                    and host in self.peer_table.peers
                    and (head is None or head[0] < seq - 1)
                ):
                    await self.fetch_chain(author, host, seq - 1)
                # While we waited, another delivery may have stored this very action: every
                # check above must run again, or an honest duplicate would look like bad_seq.
                return await self.accept(s, entry, peer, fetch=False)
            return self._to_limbo(s, entry, peer)
        is_create = s.action.get("type") == "create"
        if is_create and entry is None:
            return self._to_limbo(s, entry, peer)
        if cs is None and len(self.chains) >= MAX_CHAINS:
            # Full: a new author waits (its sender retries, gossip brings it again) rather than
            # evicting a chain held, whose budget state the next action is checked against.
            self.metrics["chains_full"] += 1
            return "busy"
        try:
            if cs is None:
                new = validate_genesis(s, self.dna)
            else:
                new = validate_next(
                    cs,
                    s,
                    self.dna,
                    self.app,
                    entry if is_create else None,
                    now_us=self.now_us(),
                    offers=self.offer_status,
                )
        except InvalidChain as e:
            if cs is None and e.reason in REFUSED_ONLY:
                self._admit(s, False)
            if e.reason == "offer_unverified":
                self._fetch_offer_chain(s, peer)
            prev = self.dht.action_at(author, seq - 1) if seq > 0 else None
            return await self._refuse(e, s, entry, peer, fetch, prev=prev)
        twin = self.dht.twin_of(s)
        if twin is not None:  # held alone, as an authority of its hash or entry: a fork
            await self.warrant_book.issue("fork", author, "fork", seq, [twin, s])
            return "invalid"
        index: Any = ()
        if is_create:
            edef = self.app.entry_def(s.action["entry_type"])
            assert edef is not None and entry is not None  # validate_next checked both
            # validate_next decoded these very bytes strictly (they hash to the signed entry
            # hash) and checked their content: a plain parse is enough here
            index = edef.index_of(decode_stored(entry)["content"])
        await self.dht.put_foreign(s, entry, index, new)
        self.chains[author] = new
        self.dht.store.if_lost(lambda: self._unstored(author, cs, new))
        self._stored(s, entry)
        return "valid"

    def _unstored(self, author: bytes, before: ChainState | None, after: ChainState) -> None:
        """A batch that held `after` was rolled back (its COMMIT failed): the chain's head in
        memory goes back to where the store has it."""
        if self.chains.get(author) is after:
            if before is None:
                self.chains.pop(author)
            else:
                self.chains[author] = before

    def _stored(self, s: Signed, entry: bytes | None) -> None:
        self.limbo.pop(s.hash, None)
        self.metrics["ops_validated"] += 1
        self.news()
        self.changed()
        grant = s.action.get("type") == "create" and s.action["entry_type"] == self.app.grant_entry
        if grant and entry is not None:  # (a create is stored with its entry)
            self.spawn(self._claim_if_local, decode(entry)["content"])
        v = s.action.get("ledger") if s.action.get("type") == "ledger" else None
        to = v.get("to") if isinstance(v, dict) else None
        if isinstance(to, bytes) and to in self.cells and self.take_offer is not None:
            self.spawn(self._take_offer, self.cells[to], s)

    async def _refuse(
        self,
        e: InvalidChain,
        s: Signed,
        entry: bytes | None,
        peer: bytes | None,
        fetch: bool,
        op: bool = False,
        prev: Signed | None = None,
    ) -> str:
        if e.reason in RETRYABLE:
            return self._to_limbo(s, entry, peer, op)
        self.metrics["ops_rejected"] += 1
        if e.reason == "bad_signature":  # proves nothing against the named author
            return "forged"
        if not proves(e.reason):
            return "invalid"  # the messenger's fault: an honest copy comes another way
        if e.reason == "bad_prev" and peer is not None and fetch:
            # It builds on an action we do not hold at seq-1: a fork. Fetch that twin so the
            # warrant is a self-proving fork warrant every node accepts.
            await self.check_fork_at(s.author, peer, s.seq - 1)
            if s.author in self.warranted:
                return "warranted"
        # With the action before it as evidence, the warrant proves itself: the author signed
        # both, and one does not follow from the other.
        await self.warrant_book.issue(
            "invalid", s.author, e.reason, s.seq, [s] if prev is None else [s, prev], entry=entry
        )
        return "invalid"

    async def _accept_op(
        self,
        s: Signed,
        entry: bytes | None,
        peer: bytes | None,
        sent_prev: Signed | None,
        vouch: list | None = None,
    ) -> str:
        """An action published to this node as an authority of its hash or entry, not of its
        author's key: validated as one step from the signed action before it (whose recorded
        BudgetState is the starting point) and kept alone, without the author's chain. Every
        step is also checked by the author-key authorities against the whole chain, so a
        cheating step is caught where it happens; an invalid action before this one is its own
        authorities' to warrant. Grants claimed twice are visible only to those holding the
        whole chain."""
        is_create = s.action.get("type") == "create"
        if is_create and entry is None:
            return self._to_limbo(s, entry, peer, True, vouch)
        prev = None
        try:
            if s.seq == 0:
                validate_genesis(s, self.dna)
            else:
                if s.seq >= 2 and self.dna.membrane == "invite":  # seq 1 anchors on the genesis
                    admitted = await self._admitted(s.author, peer)
                    if admitted is None:
                        return self._to_limbo(s, entry, peer, True, vouch)
                    if not admitted:
                        self.metrics["ops_rejected"] += 1
                        return "invalid"
                prev = await self.prev_of(s, peer, sent_prev)
                anchor = step_anchor(prev, s, self.dna)
                if anchor is None:
                    return self._to_limbo(s, entry, peer, True, vouch)
                validate_next(
                    anchor,
                    s,
                    self.dna,
                    self.app,
                    entry if is_create else None,
                    now_us=self.now_us(),
                )
        except InvalidChain as e:
            return await self._refuse(e, s, entry, peer, fetch=False, op=True, prev=prev)
        # Two actions the author signed at one seq are a fork, proven here and now (a create's
        # twins share an entry, so that entry's authorities are sent both).
        twin = self.dht.twin_of(s)
        if twin is not None:
            await self.warrant_book.issue("fork", s.author, "fork", s.seq, [twin, s])
            return "invalid"
        if self._warranted_from(s.author, s.seq):
            return "warranted"  # warranted while this was checked: its ops from then are dropped
        vouched = self._vouched(s, peer, vouch)
        await self.dht.put_op(s, entry, None if vouched else peer or b"")
        self._maybe_unshown |= not vouched
        self.metrics["ops_held_single"] += 1
        self._stored(s, entry)
        if vouched:
            self.metrics["ops_vouched"] += 1
        else:
            self.spawn(self._register_activity, s.hash, peer or b"")
        return "valid"

    def _warranted_from(self, author: bytes, seq: int) -> bool:
        """`author` is warranted for an offence at or before `seq`."""
        w = self.warranted.get(author)
        return w is not None and not (type(w.body.get("seq")) is int and seq < w.body["seq"])

    async def _admitted(self, author: bytes, peer: bytes | None) -> bool | None:
        """Whether `author`'s genesis passes the membrane (None: not known yet). A step validated
        alone cannot tell an invited chain from an uninvited one, so a single op's holder checks
        the genesis once per author: the author signed it, and its invite's witness names the
        author, so no one can show an admitted genesis for a key that has none."""
        known = self.admitted.get(author)
        if known is not None or author in self.chains:
            return known if known is not None else True
        g = self.dht.action_at(author, 0)
        if g is None and peer is not None:
            records = await self.ask_chain(peer, author, 0, 1)
            g = records[0].action if records else None
        if g is None or g.action.get("author") != author:
            return None
        try:
            validate_genesis(g, self.dna)
        except InvalidChain as e:
            if e.reason not in REFUSED_ONLY or not self._admit(g, False):
                return None  # a messenger's damaged copy, or not a genesis: ask again later
            return False
        self._admit(g, True)
        return True

    def _admit(self, genesis: Signed, ok: bool) -> bool:
        """Remember the verdict on an author's genesis, if the author signed it (the membrane is
        checked before the signature: a messenger that strips an honest genesis's invite must
        not get its author refused here). Whether it was remembered."""
        if not verify(genesis.author, genesis.sig, genesis.body):
            return False
        if len(self.admitted) >= MAX_ADMISSIONS:
            self.admitted.pop(next(iter(self.admitted)))  # the oldest: it is checked again
        self.admitted[genesis.author] = ok
        return True

    def _vouched(self, s: Signed, sender: bytes | None, vouch: list | None) -> bool:
        """An author-key authority other than the sender has receipted this very action: it
        holds the chain, so a twin at this seq shown to it, or to its fellow authorities
        (their gossip compares heads), is caught there, and nothing needs showing again."""
        if not vouch:
            return False
        near = self.peer_table.nearest(s.author)
        for validator, receipt in vouch:
            if (
                validator in near
                and validator not in (self.id, sender)
                and dht.check_receipt(s.hash, validator, receipt)
            ):
                return True
        return False

    async def _register_activity(self, h: bytes, sender: bytes) -> None:
        """Show an op held here to an author-key authority (the nearest that answers, not the
        sender: it may be the author's own node), which holds the chain: an author who sends
        different actions at one seq to different authorities (a fork) is caught there,
        whichever authorities it chose to show each twin to. Until one answers the op stays
        queued (`unshown`, in the store) and the limbo worker tries again."""
        if h in self._showing:
            return
        found = self.dht.op_record(h)
        if found is None:
            await self.dht.shown(h)
            return
        s, entry = found
        # The author's own node would not report its fork: a show to it does not count.
        skip = (self.id, sender, self.peer_table.agent_hosts.get(s.author))
        self._showing.add(h)
        try:
            for peer in self.peer_table.nearest(s.author):
                if peer in skip:
                    continue
                ops = [[s.body, s.sig, entry, None]]
                batch = warrant.sign_batch(ops, peer, self.now_us(), self.node_key)
                self.metrics["ops_registered"] += 1
                try:
                    await self.request(peer, "publish", ops=ops, batch=batch)
                except BudgetError:
                    continue  # the next-nearest, else a later pass
                await self.dht.shown(h)
                self.changed()
                return
            if all(p in skip for p in self.peer_table.nearest(s.author)):
                await self.dht.shown(h)  # no one else to show it to
            else:
                self._limbo_kick.set()  # still unshown: the limbo worker tries again
        finally:
            self._showing.discard(h)

    async def prev_of(self, s: Signed, peer: bytes | None, prev: Signed | None) -> Signed | None:
        """The action before `s`: the one sent along if it is that one, else the sender's."""
        if (prev is None or prev.hash != s.action.get("prev")) and peer is not None:
            self.metrics["op_prev_fetched"] += 1
            records = await self.ask_chain(peer, s.author, s.seq - 1, 1)
            prev = records[0].action if records else None
        return prev

    def _to_limbo(
        self,
        s: Signed,
        entry: bytes | None,
        peer: bytes | None,
        op: bool = False,
        vouch: list | None = None,
    ) -> str:
        if s.hash in self.limbo:
            return "pending"
        if len(self.limbo) >= MAX_LIMBO:
            self.metrics["limbo_full"] += 1
            return "busy"  # the sender keeps it and retries: nothing is dropped silently
        self.limbo[s.hash] = (s, entry, peer, 0, op, vouch)
        self._limbo_kick.set()
        return "pending"

    async def fetch_chain(self, author: bytes, peer: bytes, upto: int | None = None) -> None:
        """Fetch and validate `author`'s actions after our head, from `peer`, up to `upto`
        (each answer's records stored in one transaction)."""
        with self.dht.store.batch():
            await self._fetch_chain(author, peer, upto)

    async def _fetch_chain(self, author: bytes, peer: bytes, upto: int | None) -> None:
        for _ in range(MAX_FETCH_ROUNDS):
            head = self.head(author)
            start = 0 if head is None else head[0] + 1
            if upto is not None and start > upto:
                return
            limit = (
                P.MAX_OPS_PER_MESSAGE
                if upto is None
                else min(P.MAX_OPS_PER_MESSAGE, upto - start + 1)
            )
            records = await self.ask_chain(peer, author, start, limit)
            for record in records:
                self.metrics["history_fetched"] += 1
                status = await self.accept(record.action, record.entry, peer, fetch=False)
                if status != "valid":
                    return
            if len(records) < limit:
                return

    async def ask_chain(self, peer: bytes, author: bytes, start: int, limit: int) -> tuple:
        # What a batch validated so far is committed before waiting on the network: the
        # store lock is not held, nor anything kept uncommitted, across a peer's answer.
        self.dht.store.end_batch()
        return await ask_chain(self.request, peer, author, start, limit)

    def spawn_fetch(self, author: bytes, peer: bytes, seq: int) -> None:
        if author in self.fetching or len(self.fetching) >= 4 * MAX_PARALLEL_FETCHES:
            return
        self.fetching.add(author)

        async def run() -> None:
            try:
                async with self._fetch_limit:
                    await self.fetch_chain(author, peer, seq)
                    head = self.head(author)
                    if head is not None and head[0] >= seq:
                        await self.check_fork_at(author, peer, seq)
            finally:
                self.fetching.discard(author)

        self.spawn(run)

    async def check_fork_at(self, author: bytes, peer: bytes, seq: int) -> None:
        for record in await self.ask_chain(peer, author, seq, 1):
            await self.accept(record.action, record.entry, peer, fetch=False)

    async def _claim_if_local(self, content: dict) -> None:
        cell = self.cells.get(content["grant"].get("grantee"))
        if cell is None:
            return
        if grant_hash(content["grant"]) in cell.state.claimed:
            return
        try:
            await cell.claim(content["grant"], content["sig"])
        except BudgetError:
            self.metrics["grant_claims_failed"] += 1

    def offer_status(self, o: Signed) -> bool | None:
        """Whether the offer `o` is an action of a chain this node holds and validated (True),
        of a chain warranted at or before it (False), or not known here yet (None)."""
        if self.dht.store.record(o.hash) is not None:
            return True  # the actions table holds own and validated chains only
        w = self.warranted.get(o.author)
        if w is not None and w.body["seq"] <= o.seq:
            return False
        return None

    def _fetch_offer_chain(self, s: Signed, peer: bytes | None) -> None:
        """An accept (or a grant) waits for the chains of the actions it cites: fetch them,
        from each author's node or the one that sent it."""
        try:
            cited = ledger.cited(s.action["ledger"], s.author)
        except BudgetError:
            return
        for o in cited:
            if self.offer_status(o) is not None:
                continue
            host = self.peer_table.agent_hosts.get(o.author) or peer
            if host is not None and host != self.id:
                self.spawn_fetch(o.author, host, o.seq)

    async def _take_offer(self, cell: Any, s: Signed) -> None:
        """An offer to a local agent that reached this node as data (node/budgets.py)."""
        assert self.take_offer is not None
        try:
            await self.take_offer(cell, s)
        except BudgetError:
            self.metrics["offers_refused"] += 1

    async def run_limbo(self) -> None:
        while True:
            if not (self.limbo or self._maybe_unshown):
                await self._limbo_kick.wait()  # nothing waits: no need to wake each interval
            self._limbo_kick = trio.Event()
            await trio.sleep(self.publish_interval)
            if self._maybe_unshown and len(self._showing) < MAX_SHOW_PER_PASS:
                rows = self.dht.unshown(MAX_SHOW_PER_PASS)
                self._maybe_unshown = bool(rows)  # a row stays until shown: no need to look
                for h, sender in rows:
                    if h not in self._showing:
                        self.spawn(self._register_activity, h, sender)
            for h, (s, entry, peer, tries, op, vouch) in list(self.limbo.items())[:256]:
                self.limbo.pop(h, None)
                try:
                    status = await self.accept(s, entry, peer, op=op, vouch=vouch)
                except Exception as e:  # refused on its way in: gossip may bring it anew
                    self.task_failed("limbo", e)
                    continue
                if status == "pending" and h in self.limbo:
                    if tries + 1 >= LIMBO_ATTEMPTS:
                        self.limbo.pop(h)
                        self.metrics["limbo_expired"] += 1  # gossip will bring it again
                    else:
                        self.limbo[h] = (s, entry, peer, tries + 1, op, vouch)
