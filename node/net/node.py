"""A network node: a LocalNode whose chains are published to DHT authorities, which
re-derive every budget, gossip what publishing missed, and warrant rule-breakers.

Every action that reaches this node from outside (publish, gossip, query, warrant
evidence) goes through one path, `_accept`, which validates it against this node's own
view of the author's chain, fetching missing history from the peer that sent it.

NetNode is the composition root: `_init_net` builds the peer table, the warrant book, the
publisher, the gossiper and the request handlers (peer_table.py, warrants.py, publishing.py,
gossip.py, handlers.py), each with exactly what it uses, and wires their callbacks. (Over 500
lines: the one way in with its limbo and the chain fetches still live here; they are the part
of issue 14 not split out yet.)
"""

from __future__ import annotations

import fcntl
import functools
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from contextlib import asynccontextmanager

import trio

from ..core import budget, dht, warrant
from ..core.action import Signed, grant_body, grant_hash
from ..core.crypto import SigningKey, from_text, to_text, verify
from ..core.encoding import decode, encode
from ..core.dna import MRU_PER_RU
from ..errgroups import unwrap_single_errors
from ..core.errors import (
    BudgetError,
    InvalidChain,
    StoreBusy,
    UnknownAgent,
)
from ..core.validate import ChainState, step_anchor, validate_chain, validate_genesis, validate_next
from ..core.warrant import RETRYABLE, Warrant, proves
from ..cell import Cell
from ..local_node import AllocationResult, LocalNode
from ..records import record_dict
from . import protocol as P
from .dht_store import DhtStore, keep_running, unless_store_busy
from .gossip import Gossiper
from .handlers import RequestHandlers
from .peer_table import PeerTable
from .publishing import Publisher
from .warrants import MAX_FETCH_ROUNDS, WarrantBook

ANNOUNCE_FANOUT = 8
# Tables peers can grow, each with its policy at the bound (docs/ARCHITECTURE.md, "Bounds"):
MAX_CHAINS = 1 << 18  # other authors' chains held: a new author past it is answered busy
MAX_LIMBO = 4096
LIMBO_ATTEMPTS = 30
MAX_SHOW_PER_PASS = 64  # queued ops shown to an author-key authority per limbo pass
MAX_PARALLEL_FETCHES = 8


async def fetch_dna(transport_factory, addr: str, expect_hash: bytes | None = None):
    """Ask a peer which network it is on (for a node whose store is new)."""
    from ..core.dna import Dna

    async def refuse(peer, raw):
        return P.error_reply(P.ProtocolError("not serving yet"))

    async with transport_factory(os.urandom(32), refuse) as t:
        peer = await t.connect(addr)
        rep = P.parse_reply("dna", await t.request(peer, P.request("dna", b""), 10.0))
    try:
        dna = Dna.from_dict(decode(rep.dna))
    except (KeyError, TypeError, ValueError, BudgetError) as e:
        raise P.ProtocolError(f"the peer's DNA is unreadable: {e}") from None
    if expect_hash is not None and dna.hash != expect_hash:
        raise P.ProtocolError(f"the peer is on network {dna.hash_text}, not the one expected")
    return dna


def _run_lock(path: str):
    """Held while a network node runs on `path`: a second one on the same store would answer
    for the same node key with a different view of the network. Released when its file closes,
    so a crashed process leaves nothing to clean up. (One-shot local calls on the store, such
    as `budgetnode call --path`, do not take it: they share the store by design.)"""
    os.makedirs(path, exist_ok=True)
    f = open(os.path.join(path, "node.lock"), "ab")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StoreBusy(f"another node is already running on {path}") from None
    return f


class NetNode(LocalNode):
    _parts_built = False  # LocalNode.load adds the cells it finds before _init_net runs

    # -- lifecycle
    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        transport_factory,
        path: str | None = None,
        clock=None,
        *,
        bootstrap=(),
        r: int = dht.DEFAULT_R,
        gossip_interval: float = 1.0,
        publish_interval: float = 1.0,
        durability: str = "process",
        randbytes=os.urandom,
        request_timeout: float = 5.0,
        dna=None,
        app=None,
        cell_type=Cell,
        outgoing=None,
    ):
        """`app`: the application (None: the Rose Forest app, `node.apps`). `cell_type` writes
        the agents' chains; `outgoing(node, {peer: [Signed]})` may rewrite
        each publish round's batches (None: sent as they are). Both exist for tests'
        adversaries (`sims.rogue`); production uses the defaults."""
        tmp = None
        if path is None:
            path = tmp = tempfile.mkdtemp(prefix="budgetnode-")
        lock = _run_lock(path)
        try:
            node = await cls.load(
                path, clock or time.time, durability, randbytes, dna, app, cell_type
            )
        except BaseException:
            lock.close()
            raise
        try:
            with unwrap_single_errors():
                await node._init_net(
                    r, outgoing, gossip_interval, publish_interval, request_timeout
                )
                await node._claim_recovered_grants()
                async with transport_factory(node.node_key.seed, node.handlers.handle) as transport:
                    node.transport = transport
                    node.peer_table.attach(transport)
                    async with trio.open_nursery() as nursery:
                        node._nursery = nursery
                        nursery.start_soon(keep_running, node.metrics, node.publisher.run)
                        nursery.start_soon(keep_running, node.metrics, node.gossiper.run)
                        nursery.start_soon(keep_running, node.metrics, node._limbo_worker)
                        node.bootstrap = tuple(bootstrap)[:16]
                        cached = node.peer_table.load_cache()
                        for addr in node.bootstrap:
                            await node.join(addr)
                        nursery.start_soon(
                            node.peer_table.greet_cached, cached
                        )  # dead ones cost time
                        try:
                            yield node
                        finally:
                            nursery.cancel_scope.cancel()
        finally:
            node.close()
            lock.close()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    async def _init_net(
        self, r, outgoing, gossip_interval, publish_interval, request_timeout
    ) -> None:
        self.dht = DhtStore(self.store)
        raw = self.store.get_meta("node_key")
        if raw is None or self.keystore.get(raw) is None:
            key = SigningKey.generate(self.randbytes)
            self.keystore.add(key)
            await self.dht.set_meta("node_key", key.public)
        else:
            key = self.keystore.get(raw)
        self.node_key = key
        self.id = key.public
        self.r = r
        self.outgoing = outgoing  # kept for inspection (tests); the publisher calls it
        self.gossip_interval = gossip_interval
        self.publish_interval = publish_interval
        self.request_timeout = request_timeout
        self.rng = random.Random(key.public)
        self.metrics = Counter()
        self.chains: dict[bytes, ChainState] = {}  # validated heads of other authors' chains
        self.limbo: dict[bytes, tuple] = {}
        self._showing: set[bytes] = set()  # ops being shown to an author-key authority
        self._maybe_unshown = True  # the store may hold ops not yet shown
        self._fetching: set[bytes] = set()
        self._fetch_limit = trio.Semaphore(MAX_PARALLEL_FETCHES)
        self._limbo_kick = trio.Event()
        self._change = trio.Event()
        self.on_change = None
        # the offenders: the warrant book writes it, the peer table never takes one as a peer
        warranted: dict[bytes, Warrant] = {}
        self.peer_table = PeerTable(
            node_key=key,
            dna=self.dna,
            r=r,
            rng=self.rng,
            dht_store=self.dht,
            metrics=self.metrics,
            now_us=self.now_us,
            agents=self.cells,
            warranted=warranted,
            gossip_interval=gossip_interval,
            request_timeout=request_timeout,
            spawn=self._spawn,
            changed=self._changed,
            on_set_changed=self._membership_moved,
            on_new_peer=self._wake_publisher,
        )
        self.peers = self.peer_table.peers
        self.agent_hosts = self.peer_table.agent_hosts
        self.warrant_book = WarrantBook(
            node_id=self.id,
            node_key=key,
            dna=self.dna,
            app=self.app,
            dht=self.dht,
            metrics=self.metrics,
            now_us=self.now_us,
            spawn=self._spawn,
            changed=self._changed,
            warranted=warranted,
            peers=self.peers,
            request=self.peer_table.request,
            nearest=self.peer_table.nearest,
            host_of=self.agent_hosts.get,
            ask_chain=self._ask_chain,
            holds=self._holds_state_of,
            on_warranted=self._route_around,
        )
        self.warranted = self.warrant_book.warranted
        self.publisher = Publisher(
            node_key=key,
            r=r,
            dht_store=self.dht,
            peer_table=self.peer_table,
            request=self.peer_table.request,
            agents=self.cells,
            warranted=warranted,
            metrics=self.metrics,
            now_us=self.now_us,
            spawn=self._spawn,
            changed=self._changed,
            publish_interval=publish_interval,
            outgoing=None if outgoing is None else functools.partial(outgoing, self),
        )
        self.gossiper = Gossiper(
            rng=self.rng,
            gossip_interval=gossip_interval,
            peer_table=self.peer_table,
            warrant_book=self.warrant_book,
            publisher=self.publisher,
            request=self.peer_table.request,
            metrics=self.metrics,
            changed_elsewhere=self.store.changed_elsewhere,
            heads=self._heads,
            head=self._head,
            should_hold=self._should_hold,
            fetch=self._spawn_fetch,
            task_failed=self._task_failed,
        )
        self.warrants_by_hash = self.warrant_book.warrants_by_hash
        self.handlers = RequestHandlers(
            node_key=key,
            dna=self.dna,
            dht_store=self.dht,
            agents=self.cells,
            metrics=self.metrics,
            spawn=self._spawn,
            peer_table=self.peer_table,
            warrant_book=self.warrant_book,
            publisher=self.publisher,
            gossiper=self.gossiper,
            accept=self._accept,
            record=self._record,
            chain_of=self.store.chain,
        )
        self._handlers = self.handlers.table  # tests swap a handler in it
        for cell in self.cells.values():
            self._wire_cell(cell)
        self._parts_built = True
        for author in self.dht.foreign_authors():
            self.chains[author] = validate_chain(
                self.store.chain(author), self.dna, self.app, self.store.entries_of(author)
            )
        await self.warrant_book.load()

    def _holds_state_of(self, agent: bytes) -> bool:
        """This node holds the agent's chain, hosts it, or routes to it as a peer."""
        return agent in self.chains or agent in self.cells or agent in self.peers

    def _route_around(self, w: Warrant) -> None:
        """A new offender: no longer a peer (nor in the peer cache), and an agent of this node
        is told why it is refused everywhere."""
        self.peer_table.forget_for_good(w.offender)
        cell = self.cells.get(w.offender)
        if cell is not None:
            cell.warrant = w

    def _add_cell(self, cell):
        if self._parts_built:  # else _init_net wires it with the rest
            self._wire_cell(cell)
        return super()._add_cell(cell)

    def _wire_cell(self, cell) -> None:
        cell.on_commit = self._on_local_commit
        self.publisher.committed()  # its genesis was written before it was wired
        cell.warrant = self.warranted.get(cell.key.public)

    async def new_agent(self):
        agent = await super().new_agent()
        self._spawn(self._announce, agent._cell.key.public)  # peers learn where the agent lives
        return agent

    async def _announce(self, pub: bytes) -> None:
        """Tell the agent's authorities and a few others at once; the rest learn the newer peer
        info from peer exchanges (an epidemic, not a broadcast to every peer)."""
        targets = [p for p in self.peer_table.nearest(pub) if p != self.id]
        others = sorted(set(self.peers) - set(targets))
        targets += self.rng.sample(others, min(ANNOUNCE_FANOUT, len(others)))
        for peer in targets:
            try:
                await self.peer_table.hello(peer)
            except BudgetError:
                pass

    def _on_local_commit(self, s: Signed) -> None:
        self.gossiper.news()
        self._changed()
        self.publisher.committed()

    def _changed(self) -> None:
        self._change.set()
        self._change = trio.Event()
        if self.on_change is not None:
            self.on_change()

    async def wait_changed(self) -> None:
        await self._change.wait()

    # -- peers
    def _spawn(self, fn, *args) -> None:
        """Background work; a node that is shutting down starts none. Whatever such a task
        raises (a refusal, or a bug that peer data reached) is counted and kept for
        diagnostics, never let into the node's nursery, where it would stop the node."""

        async def guarded():
            try:
                await unless_store_busy(self.metrics, fn, *args)
            except Exception as e:  # trio.Cancelled is a BaseException: shutdown still works
                self._task_failed(getattr(fn, "__name__", "task"), e)

        try:
            self._nursery.start_soon(guarded)
        except RuntimeError:
            self.metrics["spawn_refused_closing"] += 1

    def _task_failed(self, what: str, e: Exception) -> None:
        self.metrics["task_errors"] += 1
        self.last_task_error = f"{what}: {e!r}"[:512]

    def _membership_moved(self) -> None:
        """A peer came or went: gossip picks up its pace, and the publisher offers our heads to
        authorities that may now be nearer."""
        self._changed()
        self.gossiper.news()
        self.publisher.membership_moved()

    def _wake_publisher(self) -> None:
        self.publisher.wake()

    @property
    def bootstrap(self) -> tuple:
        """The addresses this node joined through, dialled again when it has no peers left."""
        return self.gossiper.bootstrap

    @bootstrap.setter
    def bootstrap(self, addrs: tuple) -> None:
        self.gossiper.bootstrap = addrs

    @property
    def publisher_idle(self) -> trio.Event:
        """Set while nothing is left to publish or retry."""
        return self.publisher.idle

    def peer_ids(self) -> list[bytes]:
        return list(self.peers)

    async def join(self, addr: str) -> bytes | None:
        """Dial a peer, exchange signed peer infos, and learn its peers."""
        return await self.peer_table.join(addr)

    async def _request(self, peer: bytes, t: str, **fields):
        """One exchange with a peer (PeerTable.request); here so a test can watch what this
        node sends."""
        return await self.peer_table.request(peer, t, **fields)

    # -- the one way in for other authors' actions
    def _head(self, author: bytes):
        cell = self.cells.get(author)
        cs = cell.state if cell is not None else self.chains.get(author)
        return None if cs is None else (cs.seq, cs.hash)

    def _heads(self) -> dict:
        out = {
            pub: (c.state.seq, c.state.hash)
            for pub, c in self.cells.items()
            if pub not in self.warranted
        }
        out.update(
            {a: (cs.seq, cs.hash) for a, cs in self.chains.items() if a not in self.warranted}
        )
        return out

    def _should_hold(self, author: bytes) -> bool:
        """Chains gossip keeps current here: our own agents' and those we are an author-key
        authority for. Copies held for an action or entry basis are refreshed when queried
        (refresh_agent), so replication stays O(R), not O(N)."""
        return author in self.cells or self._should_hold_as_authority(author)

    async def _accept(
        self,
        s: Signed,
        entry: bytes | None,
        peer: bytes | None,
        fetch: bool = True,
        prev=None,
        op: bool = False,
        vouch=None,
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
        w = self.warranted.get(author)
        if w is not None and not (type(w.body.get("seq")) is int and seq < w.body["seq"]):
            return "warranted"  # the history before the offence is still checked and kept
        if author in self.cells:
            return "invalid"  # someone else's copy of our own agent's chain: never ours to take
        cs = self.chains.get(author)
        if op and (cs is None or seq > cs.seq + 1) and not self._should_hold(author):
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
                await self._fetch_chain(author, peer, seq - 1)
                # The sender may hold this action alone (a forwarder, a hash authority): the
                # author's own node has the history for sure.
                host = self.agent_hosts.get(author)
                head = self._head(author)
                if (
                    host is not None
                    and host not in (peer, self.id)
                    and host in self.peers
                    and (head is None or head[0] < seq - 1)
                ):
                    await self._fetch_chain(author, host, seq - 1)
                # While we waited, another delivery may have stored this very action: every
                # check above must run again, or an honest duplicate would look like bad_seq.
                return await self._accept(s, entry, peer, fetch=False)
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
                    cs, s, self.dna, self.app, entry if is_create else None, now_us=self.now_us()
                )
        except InvalidChain as e:
            prev = self.dht.action_at(author, seq - 1) if seq > 0 else None
            return await self._refuse(e, s, entry, peer, fetch, prev=prev)
        twin = self.dht.twin_of(s)
        if twin is not None:  # held alone, as an authority of its hash or entry: a fork
            await self.warrant_book.issue("fork", author, "fork", seq, [twin, s])
            return "invalid"
        index = (
            self.app.entry_def(s.action["entry_type"]).index_of(decode(entry)["content"])
            if is_create
            else ()
        )
        await self.dht.put_foreign(s, entry, index)
        self.chains[author] = new
        self._stored(s, entry)
        return "valid"

    def _stored(self, s: Signed, entry) -> None:
        self.limbo.pop(s.hash, None)
        self.metrics["ops_validated"] += 1
        self.gossiper.news()
        self._changed()
        if s.action.get("type") == "create" and s.action["entry_type"] == self.app.grant_entry:
            self._spawn(self._claim_if_local, decode(entry)["content"])

    async def _refuse(
        self,
        e: InvalidChain,
        s: Signed,
        entry,
        peer,
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
            await self._check_fork_at(s.author, peer, s.seq - 1)
            if s.author in self.warranted:
                return "warranted"
        # With the action before it as evidence, the warrant proves itself: the author signed
        # both, and one does not follow from the other.
        await self.warrant_book.issue(
            "invalid", s.author, e.reason, s.seq, [s] if prev is None else [s, prev], entry=entry
        )
        return "invalid"

    async def _accept_op(self, s: Signed, entry, peer, sent_prev: Signed | None, vouch=None) -> str:
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
                prev = await self._prev_of(s, peer, sent_prev)
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
        vouched = self._vouched(s, peer, vouch)
        await self.dht.put_op(s, entry, None if vouched else peer or b"")
        self._maybe_unshown |= not vouched
        self.metrics["ops_held_single"] += 1
        self._stored(s, entry)
        if vouched:
            self.metrics["ops_vouched"] += 1
        else:
            self._spawn(self._register_activity, s.hash, peer or b"")
        return "valid"

    def _vouched(self, s: Signed, sender, vouch) -> bool:
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
        skip = (self.id, sender, self.agent_hosts.get(s.author))
        self._showing.add(h)
        try:
            for peer in self.peer_table.nearest(s.author):
                if peer in skip:
                    continue
                ops = [[s.body, s.sig, entry, None]]
                batch = warrant.sign_batch(ops, peer, self.now_us(), self.node_key)
                self.metrics["ops_registered"] += 1
                try:
                    await self._request(peer, "publish", ops=ops, batch=batch)
                except BudgetError:
                    continue  # the next-nearest, else a later pass
                await self.dht.shown(h)
                self._changed()
                return
            if all(p in skip for p in self.peer_table.nearest(s.author)):
                await self.dht.shown(h)  # no one else to show it to
            else:
                self._limbo_kick.set()  # still unshown: the limbo worker tries again
        finally:
            self._showing.discard(h)

    async def _prev_of(self, s: Signed, peer, prev: Signed | None) -> Signed | None:
        """The action before `s`: the one sent along if it is that one, else the sender's."""
        if (prev is None or prev.hash != s.action.get("prev")) and peer is not None:
            self.metrics["op_prev_fetched"] += 1
            records = await self._ask_chain(peer, s.author, s.seq - 1, 1)
            prev = records[0].action if records else None
        return prev

    def _to_limbo(self, s: Signed, entry, peer, op: bool = False, vouch=None) -> str:
        if s.hash in self.limbo:
            return "pending"
        if len(self.limbo) >= MAX_LIMBO:
            self.metrics["limbo_full"] += 1
            return "busy"  # the sender keeps it and retries: nothing is dropped silently
        self.limbo[s.hash] = (s, entry, peer, 0, op, vouch)
        self._limbo_kick.set()
        return "pending"

    async def _fetch_chain(self, author: bytes, peer: bytes, upto: int | None = None) -> None:
        """Fetch and validate `author`'s actions after our head, from `peer`, up to `upto`."""
        for _ in range(MAX_FETCH_ROUNDS):
            head = self._head(author)
            start = 0 if head is None else head[0] + 1
            if upto is not None and start > upto:
                return
            limit = (
                P.MAX_OPS_PER_MESSAGE
                if upto is None
                else min(P.MAX_OPS_PER_MESSAGE, upto - start + 1)
            )
            records = await self._ask_chain(peer, author, start, limit)
            for record in records:
                self.metrics["history_fetched"] += 1
                status = await self._accept(record.action, record.entry, peer, fetch=False)
                if status != "valid":
                    return
            if len(records) < limit:
                return

    async def _ask_chain(self, peer: bytes, author: bytes, start: int, limit: int) -> tuple:
        """`author`'s records from seq `start`, at most `limit`, as `peer` holds them: every
        chain fetch asks through here. No answer, a refusal or garbage is no records."""
        try:
            rep = await self._request(peer, "chain", author=author, **{"from": start}, limit=limit)
        except BudgetError:
            return ()
        return rep.records[:limit]

    def _spawn_fetch(self, author: bytes, peer: bytes, seq: int) -> None:
        if author in self._fetching or len(self._fetching) >= 4 * MAX_PARALLEL_FETCHES:
            return
        self._fetching.add(author)

        async def run():
            try:
                async with self._fetch_limit:
                    await self._fetch_chain(author, peer, seq)
                    head = self._head(author)
                    if head is not None and head[0] >= seq:
                        await self._check_fork_at(author, peer, seq)
            finally:
                self._fetching.discard(author)

        self._spawn(run)

    async def _check_fork_at(self, author: bytes, peer: bytes, seq: int) -> None:
        for record in await self._ask_chain(peer, author, seq, 1):
            await self._accept(record.action, record.entry, peer, fetch=False)

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

    # -- background work (publishing.py and gossip.py hold the publisher and the gossiper)
    async def _limbo_worker(self) -> None:
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
                        self._spawn(self._register_activity, h, sender)
            for h, (s, entry, peer, tries, op, vouch) in list(self.limbo.items())[:256]:
                self.limbo.pop(h, None)
                try:
                    status = await self._accept(s, entry, peer, op=op, vouch=vouch)
                except Exception as e:  # refused on its way in: gossip may bring it anew
                    self._task_failed("limbo", e)
                    continue
                if status == "pending" and h in self.limbo:
                    if tries + 1 >= LIMBO_ATTEMPTS:
                        self.limbo.pop(h)
                        self.metrics["limbo_expired"] += 1  # gossip will bring it again
                    else:
                        self.limbo[h] = (s, entry, peer, tries + 1, op, vouch)

    # -- queries and cross-node calls
    async def ensure_agent(self, pub: bytes) -> None:
        if pub in self.cells or pub in self.chains:
            return
        candidates = dht.nearest(pub, list(self.peers), self.r)
        host = self.agent_hosts.get(pub)
        if host is not None and host not in candidates:
            candidates.append(host)
        for peer in candidates:
            await self._fetch_chain(pub, peer)
            if pub in self.chains:
                return
        raise UnknownAgent(f"no chain for {to_text('agent', pub)} was found on the network")

    async def refresh_agent(self, pub: bytes) -> None:
        """A node that is not one of the agent's authorities may hold an old copy of its chain:
        catch up from an authority before answering from it."""
        if pub in self.cells or self._should_hold_as_authority(pub):
            return
        for peer in dht.nearest(pub, list(self.peers), self.r):
            before = self._head(pub)
            await self._fetch_chain(pub, peer)
            if self._head(pub) != before or before is not None:
                return

    def _should_hold_as_authority(self, pub: bytes) -> bool:
        return self.id in self.peer_table.nearest(pub)

    async def get_budget_state(self, agent_id: str) -> budget.BudgetStatus:
        """An agent's budget, re-derived by this node from the agent's signed chain."""
        pub = from_text("agent", agent_id)
        await self.ensure_agent(pub)
        await self.refresh_agent(pub)
        cell = self.cells.get(pub)
        cs = cell.state if cell is not None else self.chains[pub]
        return budget.status(cs.budget, max(self.now_us(), cs.ts), self.dna)

    async def agent_activity(self, agent_id: str, limit: int = 1000) -> list[dict]:
        pub = from_text("agent", agent_id)
        await self.ensure_agent(pub)
        await self.refresh_agent(pub)
        return [
            record_dict(Signed.from_store(b, s), e, self.app)
            for b, s, e in self.dht.records(pub, 0, max(1, min(limit, 100_000)))
        ]

    async def fetch_record(self, action_hash: str) -> dict:
        """A record by hash: from this node, or from the authorities of that hash."""
        h = from_text("action", action_hash)
        if self._record(h) is None:
            for peer in dht.nearest(h, list(self.peers), self.r):
                try:
                    rep = await self._request(peer, "record", hash=h)
                except BudgetError:
                    continue
                if rep.record is not None:
                    author, seq = (
                        rep.record.action.action.get("author"),
                        rep.record.action.action.get("seq"),
                    )
                    if type(author) is not bytes or type(seq) is not int or seq < 0:
                        continue  # not an action anyone could have signed: nothing to fetch
                    await self._fetch_chain(author, peer, seq)
                    if self._record(h) is not None:
                        break
        return self.get_record(action_hash)

    def _record(self, h: bytes):
        return self.store.record(h) or self.dht.op_record(h)

    def get_record(self, action_hash: str) -> dict:
        found = self._record(from_text("action", action_hash))
        if found is None:
            return super().get_record(action_hash)  # raises NotFound
        return record_dict(*found, self.app)

    async def allocate(self, steward, grantee: bytes, amount_mru: int) -> AllocationResult:
        if grantee in self.cells:
            return await super().allocate(steward, grantee, amount_mru)
        await self.ensure_agent(grantee)  # before anything is written
        grant = grant_body(
            self.dna.hash,
            steward.key.public,
            grantee,
            amount_mru,
            self.now_us(),
            self.randbytes(16),
        )
        sig = steward.key.sign(encode(grant))
        allocation = await steward.create_entry(self.app.grant_entry, {"grant": grant, "sig": sig})
        granted = None
        host = self.agent_hosts.get(grantee)
        if host is not None:
            try:
                granted = (await self._request(host, "grant", grant=grant, sig=sig)).granted
            except BudgetError:
                granted = None  # the grantee's node claims it when the record reaches it
        return AllocationResult(
            amount_mru / MRU_PER_RU,
            None if granted is None else granted / MRU_PER_RU,
            to_text("grant", grant_hash(grant)),
            to_text("action", allocation),
            claimed=granted is not None,
        )

    # -- observability
    def warrants(self) -> list[Warrant]:
        return self.warrant_book.warrants()

    def state_hash(self) -> bytes:
        from ..core.crypto import blake2b_256

        heads = sorted([a, s, h] for a, (s, h) in self._heads().items())
        return blake2b_256(encode({"heads": heads, "warranted": sorted(self.warranted)}))

    def metrics_snapshot(self) -> dict:
        return {
            **self.metrics,
            "peers": len(self.peers),
            "limbo": len(self.limbo),
            "unpublished": len(self.dht.unpublished(1 << 20)),
            "warrants": len(self.warrants_by_hash),
            "held_authors": len(self._heads()),
        }
