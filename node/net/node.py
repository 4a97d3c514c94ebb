"""A network node: a LocalNode whose chains are published to DHT authorities, which
re-derive every budget, gossip what publishing missed, and warrant rule-breakers.

Every action that reaches this node from outside (publish, gossip, query, warrant
evidence) goes through one path, `Acceptor.accept` (acceptor.py), which validates it against
this node's own view of the author's chain, fetching missing history from the peer that sent it.

NetNode is the composition root: `_init_net` builds the peer table, the warrant book, the
publisher, the acceptor (the one way in, its limbo and the chain fetches), the gossiper and the
request handlers (peer_table.py, warrants.py, publishing.py, acceptor.py, gossip.py,
handlers.py), each with exactly what it uses, and wires their callbacks. What is left here is
the agent-facing surface (queries, allocate, observability) and the wiring. (Over 500 lines
only by the formatter's one-argument-a-line calls: the wiring and the delegations tests use.)
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

from ..core import admission, budget, dht
from ..core.action import Signed, grant_hash
from ..core.crypto import SigningKey, from_text, to_text
from ..core.encoding import decode, encode
from ..core.dna import MRU_PER_RU
from ..errgroups import unwrap_single_errors
from ..core.errors import (
    BudgetError,
    InvalidChain,
    InviteUsed,
    NotAuthorized,
    NotFound,
    PeerUnreachable,
    StoreBusy,
    UnknownAgent,
    Warranted,
    error_class,
)
from ..core.witness import check_witness, invite_hash
from ..core.warrant import Warrant
from ..cell import Cell
from ..local_node import AllocationResult, LocalNode, usable_directory
from ..records import record_dict
from . import protocol as P
from ..verifier import Verifier
from .dht_store import DhtStore, keep_running, unless_store_busy
from .acceptor import Acceptor, ask_chain
from .gossip import Gossiper
from .offers import OfferCourier
from .handlers import RequestHandlers
from .peer_table import PeerTable
from .publishing import Publisher
from .warrants import WarrantBook

ANNOUNCE_FANOUT = 8
# Tables peers can grow, each with its policy at the bound (docs/ARCHITECTURE.md, "Bounds"):


async def fetch_dna(transport_factory, addr: str, expect_hash: bytes | None = None):
    """Ask a peer which network it is on (for a node whose store is new)."""
    async with transport_factory(os.urandom(32), _not_serving) as t:
        peer = await t.connect(addr)
        return await _dna_of(t, peer, addr, expect_hash)


async def find_dna(transport_factory, expect_hash: bytes | None, timeout: float):
    """The network of the first node found on the LAN that answers (`up --mdns` on a new
    store): `transport_factory` makes a transport that discovers (it yields (peer, address) on
    `discovered`). With `expect_hash`, nodes of other networks are passed over. PeerUnreachable
    if none answers within `timeout` seconds."""
    tried = 0
    async with transport_factory(os.urandom(32), _not_serving) as t:
        with trio.move_on_after(timeout):
            async for _peer, addr in t.discovered:
                tried += 1
                try:
                    peer = await t.connect(addr)
                    return await _dna_of(t, peer, addr, expect_hash)
                except BudgetError:  # not a budgetnode, unreachable, or another network
                    continue
    raise PeerUnreachable(
        f"no node of {'that' if expect_hash else 'any'} network answered on the LAN within "
        f"{timeout:.0f} s ({tried} libp2p peer(s) found): start the network's first node on a "
        f"store that exists (`budgetnode init --path DIR`), or give --bootstrap"
    )


async def _not_serving(peer, raw):
    return P.error_reply(P.ProtocolError("not serving yet"))


async def _dna_of(t, peer: bytes, addr: str, expect_hash: bytes | None):
    from ..core.dna import Dna

    try:
        rep = P.parse_reply("dna", await t.request(peer, P.request("dna", b""), 10.0))
    except PeerUnreachable as e:  # e.g. a libp2p peer that is not a budgetnode
        raise type(e)(f"bootstrap peer {addr} did not answer: {e.message}") from None
    assert isinstance(rep, P.DnaReply)  # parse_reply("dna", ...) parses nothing else
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
    f = open(os.path.join(usable_directory(path), "node.lock"), "ab")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StoreBusy(f"another node is already running on {path}") from None
    return f


class NetNode(LocalNode):
    _parts_built = False  # LocalNode.load adds the cells it finds before _init_net runs
    _nursery: trio.Nursery  # the node's background tasks, set by open()

    # -- lifecycle
    @classmethod
    @asynccontextmanager
    async def open(  # type: ignore[override]  # a network node is opened on a transport
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
                    if hasattr(transport, "metrics"):  # the libp2p transport's counters
                        transport.metrics = node.metrics
                    async with trio.open_nursery() as nursery:
                        node._nursery = nursery
                        node.admissions.resume()  # a queue kept from before: its timer runs
                        nursery.start_soon(keep_running, node.metrics, node.publisher.run)
                        nursery.start_soon(keep_running, node.metrics, node.gossiper.run)
                        nursery.start_soon(keep_running, node.metrics, node.acceptor.run_limbo)
                        nursery.start_soon(keep_running, node.metrics, node.courier.run)
                        nursery.start_soon(node.verifier.run)  # corruption found stops the node
                        node.bootstrap = tuple(bootstrap)[:16]
                        cached = node.peer_table.load_cache()
                        for addr in node.bootstrap:
                            await node.join(addr)
                        nursery.start_soon(
                            node.peer_table.greet_cached, cached
                        )  # dead ones cost time
                        if getattr(transport, "discovering", False):  # `up --mdns`
                            nursery.start_soon(node.peer_table.join_found, transport.discovered)
                        await node._take_recovered_offers()
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
            found = self.keystore.get(raw)
            assert found is not None  # checked just above
            key = found
        self.node_key = key
        self.id = key.public
        self.r = r
        self.outgoing = outgoing  # kept for inspection (tests); the publisher calls it
        self.gossip_interval = gossip_interval
        self.publish_interval = publish_interval
        self.request_timeout = request_timeout
        self.rng = random.Random(key.public)
        self.metrics: Counter[str] = Counter()
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
            ask_chain=functools.partial(ask_chain, self.peer_table.request),
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
        self.acceptor = Acceptor(
            node_key=key,
            dna=self.dna,
            app=self.app,
            dht_store=self.dht,
            agents=self.cells,
            peer_table=self.peer_table,
            warrant_book=self.warrant_book,
            request=self.peer_table.request,
            metrics=self.metrics,
            now_us=self.now_us,
            spawn=self._spawn,
            changed=self._changed,
            news=self._news,
            task_failed=self._task_failed,
            publish_interval=publish_interval,
            take_offer=self.budgets.take_offer,
        )
        self.chains = self.acceptor.chains
        self.limbo = self.acceptor.limbo
        self._fetching = self.acceptor.fetching
        self.gossiper = Gossiper(
            rng=self.rng,
            gossip_interval=gossip_interval,
            peer_table=self.peer_table,
            warrant_book=self.warrant_book,
            publisher=self.publisher,
            request=self.peer_table.request,
            metrics=self.metrics,
            changed_elsewhere=self.store.changed_elsewhere,
            heads=self.acceptor.heads,
            head=self.acceptor.head,
            should_hold=self.acceptor.should_hold,
            fetch=self.acceptor.spawn_fetch,
            task_failed=self._task_failed,
        )
        self.warrants_by_hash = self.warrant_book.warrants_by_hash
        self.courier = OfferCourier(
            host_of=self.agent_hosts.get,
            request=self._request,
            metrics=self.metrics,
            interval=publish_interval,
            store=self.store,
        )
        self.courier.restore()
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
            accept=self.acceptor.accept,
            record=self._record,
            chain_of=self.store.chain,
            witness_service=self.witness_service,
            take_offer=self.budgets.take_offer,
        )
        self._handlers = self.handlers.table  # tests swap a handler in it
        for cell in self.cells.values():
            self._wire_cell(cell)
        self._parts_built = True
        self.acceptor.load()
        self.verifier = Verifier(self.store, self.dna, self.app, self.metrics)
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

    async def new_agent(self, invite: str | None = None):
        agent = await super().new_agent(invite)
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

    # -- the one way in (acceptor.py), as tests, sims and benchmarks reach it
    async def _accept(self, s: Signed, entry, peer, **kw) -> str:
        return await self.acceptor.accept(s, entry, peer, **kw)

    def _head(self, author: bytes):
        return self.acceptor.head(author)

    def _heads(self) -> dict:
        return self.acceptor.heads()

    def _news(self) -> None:
        self.gossiper.news()

    # -- time witnesses (core/witness.py): asked of the stewards' nodes
    async def _remote_witness(self, agent: bytes, prev: bytes | None, invite: dict | None):
        """A steward's witness from the node that hosts it (for an invite, only its issuer's),
        checked before it is used; None if no steward answers with a usable one. The issuer's
        refusal of an invite (E_INVITE_USED, E_NOT_AUTHORIZED) is raised here as it was there."""
        ih = None if invite is None else invite_hash(invite)
        stewards = [invite["body"]["steward"]] if invite is not None else sorted(self.dna.stewards)
        for steward in stewards:
            host = self.agent_hosts.get(steward)
            if host is None or host == self.id:
                continue
            try:
                rep = await self._request(host, "witness", agent=agent, prev=prev, invite=invite)
            except P.ProtocolError as e:
                cls = error_class(e.peer_code or "")
                if invite is not None and cls in (InviteUsed, NotAuthorized):
                    raise cls(e.peer_message) from None
                continue
            except BudgetError:  # unreachable, or its reply was garbage (counted already)
                continue
            w = rep.to_wire()
            try:
                check_witness(w, self.dna, agent, prev, ih, 0)
            except InvalidChain:  # well-shaped but false: malformed, like any other bad reply
                self.metrics["malformed_replies"] += 1
                self.peer_table.strike(host)
                continue
            if w["at"] > self.now_us() + self.dna.max_future_us:
                # an action stamped at that time would be refused here (and by every node
                # whose clock agrees with this one) as a future timestamp
                self.metrics["witnesses_ahead"] += 1
                continue
            return w
        return None

    # -- queries and cross-node calls
    async def ensure_agent(self, pub: bytes) -> None:
        if pub in self.cells or pub in self.chains:
            return
        candidates = dht.nearest(pub, list(self.peers), self.r)
        host = self.agent_hosts.get(pub)
        if host is not None and host not in candidates:
            candidates.append(host)
        for peer in candidates:
            await self.acceptor.fetch_chain(pub, peer)
            if pub in self.chains:
                return
        raise UnknownAgent(f"no chain for {to_text('agent', pub)} was found on the network")

    async def refresh_agent(self, pub: bytes) -> None:
        """A node that is not one of the agent's authorities may hold an old copy of its chain:
        catch up from an authority before answering from it."""
        if pub in self.cells or self.acceptor.should_hold_as_authority(pub):
            return
        for peer in dht.nearest(pub, list(self.peers), self.r):
            before = self._head(pub)
            await self.acceptor.fetch_chain(pub, peer)
            if self._head(pub) != before or before is not None:
                return

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

    async def check_offer(self, o: Signed) -> None:
        """`LocalNode.check_offer`, fetching the offer's chain (from its author's node, then its
        authorities) if this node does not hold it up to the offer yet."""
        if self.acceptor.offer_status(o) is None:
            host = self.agent_hosts.get(o.author)
            peers = [host] if host is not None else []
            peers += dht.nearest(o.author, list(self.peers), self.r)
            for peer in peers[: 1 + self.r]:
                if peer == self.id:
                    continue
                await self.acceptor.fetch_chain(o.author, peer, o.seq)
                if self.acceptor.offer_status(o) is not None:
                    break
        status = self.acceptor.offer_status(o)
        if status is False:
            raise NotAuthorized(
                f"the offer {to_text('action', o.hash)} comes from a chain warranted at or "
                f"before it"
            )
        if status is None:
            await super().check_offer(o)

    async def get_budget(self, budget_id: str):
        """A budget, as this node re-derives it from its holder's signed chain: found through
        the offer that made it (its id is that action's hash: fetched from the network if not
        held here), then the holder's chain, caught up from its authorities."""
        bid = from_text("budget", budget_id)
        try:
            if self._record(bid) is None:
                await self.fetch_record(to_text("action", bid))
            found = self._record(bid)
            v = found[0].action.get("ledger") if found is not None else None
            holder = v.get("to") if isinstance(v, dict) else None
            if isinstance(holder, bytes) and len(holder) == 32:
                await self.ensure_agent(holder)
                await self.refresh_agent(holder)
        except (NotFound, UnknownAgent):
            pass  # then no node reached knows it: E_UNKNOWN_BUDGET below
        return await super().get_budget(budget_id)

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
                    await self.acceptor.fetch_chain(author, peer, seq)
                    if self._record(h) is not None:
                        break
        return self.get_record(action_hash)

    def _record(self, h: bytes) -> tuple[Signed, bytes | None] | None:
        return self.store.record(h) or self.dht.op_record(h)

    def record_of(self, h: bytes) -> tuple[Signed, bytes | None] | None:
        """Also an op this node holds as an authority, whose chain it may not hold."""
        return self._record(h)

    def get_record(self, action_hash: str) -> dict:
        found = self._record(from_text("action", action_hash))
        if found is None:
            return super().get_record(action_hash)  # raises NotFound
        return record_dict(*found, self.app)

    async def allocate(self, steward, grantee: bytes, amount_mru: int) -> AllocationResult:
        if grantee in self.cells:
            return await super().allocate(steward, grantee, amount_mru)
        await self.ensure_agent(grantee)  # before anything is written
        async with self.granting():
            self.grant_preflight(steward, grantee, amount_mru)
            grant, sig, allocation = await self._record_grant(steward, grantee, amount_mru)
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

    def grant_preflight(self, steward, grantee: bytes, amount_mru: int) -> None:
        """As LocalNode's; a grantee on another node is judged from its chain as this node
        holds it (it may be behind: the grantee's node then refuses the claim, and the grant
        recorded waits unclaimed)."""
        if grantee in self.cells:
            return super().grant_preflight(steward, grantee, amount_mru)
        steward.check_writable()
        if grantee in self.warranted:
            raise Warranted(f"{to_text('agent', grantee)} is warranted: it claims nothing")
        cs = self.chains.get(grantee)
        if cs is not None:
            admission.claim_at(cs, amount_mru, self.now_us(), self.dna)

    def ledgers(self):
        """Its own agents' ledgers, then those of the chains it holds for the network (a
        budget's balance is answered by any node holding its holder's chain)."""
        yield from super().ledgers()
        for author, cs in list(self.chains.items()):
            if cs.ledger is not None:
                yield author, cs.ledger

    async def send_offer(self, to: bytes, s: Signed) -> None:
        """Hand an offer to the node hosting its recipient (node/net/offers.py)."""
        await self.courier.send(to, s)

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
