"""A network node: a LocalNode whose chains are published to DHT authorities, which
re-derive every budget, gossip what publishing missed, and warrant rule-breakers.

Every action that reaches this node from outside (publish, gossip, query, warrant
evidence) goes through one path, `_accept`, which validates it against this node's own
view of the author's chain, fetching missing history from the peer that sent it.

(Over 500 lines: the peer table, the request handlers, the chain fetches and the one way in
still share NetNode's state; splitting them into components with explicit dependencies is the
part of issue 14 not done yet.)
"""

from __future__ import annotations

import fcntl
import hashlib
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
from ..core.encoding import decode, encode, encode_trusted
from ..core.dna import MRU_PER_RU
from ..errgroups import unwrap_single_errors
from ..core.errors import (
    BudgetError,
    GrantAlreadyClaimed,
    InvalidChain,
    MalformedInput,
    StoreBusy,
    TooLarge,
    UnknownAgent,
)
from ..core.validate import ChainState, step_anchor, validate_chain, validate_genesis, validate_next
from ..core.warrant import RETRYABLE, Warrant, Warranted, proves
from ..cell import Cell
from ..local_node import AllocationResult, LocalNode
from .nearest import NearestCache
from ..records import record_dict
from . import protocol as P
from .dht_store import DhtStore, keep_running, unless_store_busy
from .gossip import Gossip
from .publishing import Publishing
from .strikes import Strikes
from .transport import PeerUnreachable
from .warrants import MAX_FETCH_ROUNDS, Warrants

MAX_PEERS = P.MAX_PEERS  # full membership: authorities are the R nearest of all known peers
ANNOUNCE_FANOUT = 8
DEAD_AFTER_FAILURES = 3  # consecutive unreachable requests before a peer is dropped
# Tables peers can grow, each with its policy at the bound (docs/ARCHITECTURE.md, "Bounds"):
MAX_CHAINS = 1 << 18  # other authors' chains held: a new author past it is answered busy
MAX_AGENT_HOSTS = 1 << 16  # agent -> hosting peer hints: new hints past it are not kept
MALFORMED_WINDOW_S = 60.0  # malformed messages from one peer are counted over this window;
MAX_MALFORMED = 8  # this many in one window and the peer is dropped and backed off
MALFORMED_BACKOFF_S = 600.0  # for this long (its requests refused, its infos ignored)
MAX_LIMBO = 4096
LIMBO_ATTEMPTS = 30
MAX_GREETING = 64  # unknown requesters greeted at once
GREET_CACHED = 3  # cached peers a restarted node swaps peers with at once
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


class NetNode(Publishing, Gossip, Warrants, LocalNode):
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
                async with transport_factory(node.node_key.seed, node._handle) as transport:
                    node.transport = transport
                    async with trio.open_nursery() as nursery:
                        node._nursery = nursery
                        nursery.start_soon(keep_running, node.metrics, node._publisher)
                        nursery.start_soon(keep_running, node.metrics, node._gossiper)
                        nursery.start_soon(keep_running, node.metrics, node._limbo_worker)
                        node.bootstrap = tuple(bootstrap)[:16]
                        cached = node._load_peer_cache()
                        for addr in node.bootstrap:
                            await node.join(addr)
                        nursery.start_soon(node._greet_cached, cached)  # dead ones cost time
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
        self.outgoing = outgoing
        self.gossip_interval = gossip_interval
        self.publish_interval = publish_interval
        self.request_timeout = request_timeout
        self.rng = random.Random(key.public)
        self.metrics = Counter()
        self.peers: dict[bytes, P.PeerInfo] = {}  # peer id -> signed peer info
        self.agent_hosts: dict[bytes, bytes] = {}  # agent -> peer id hosting it
        self.chains: dict[bytes, ChainState] = {}  # validated heads of other authors' chains
        self.limbo: dict[bytes, tuple] = {}
        self._showing: set[bytes] = set()  # ops being shown to an author-key authority
        self._greeting: set[bytes] = set()  # unknown requesters being greeted
        self._maybe_unshown = True  # the store may hold ops not yet shown
        self.warrants_by_hash: dict[bytes, Warrant] = {}
        self.warranted: dict[bytes, Warrant] = {}
        self._fetching: set[bytes] = set()
        self._near = NearestCache(r)  # basis -> R nearest of self + peers
        self._republish: set[bytes] = set()  # own agents whose authorities changed
        self._recheck_from: int | None = None  # own actions past this row id: offer again
        self._recheck_short = False  # this pass left an authority without one
        self._recheck_passes = 0  # passes in a row that did
        self._recheck_not_before = 0.0
        self._peer_epoch = 0
        self._table_version = 0  # bumps on any change to self.peers
        self._sorted_peers: tuple[int, list] = (-1, [])  # (table version, sorted peer ids)
        self._unsaved_peers: dict[bytes, P.PeerInfo] = {}  # peer cache changes, saved each round
        self._unsaved_forgets: set[bytes] = set()
        self._digest_key: tuple | None = None
        self._digest = b""
        self._republish_heads: dict[bytes, bytes] = {}  # head hash in flight -> its agent
        self._maybe_unpublished = True  # no need to ask the store until something commits
        self._failures: Counter = Counter()  # peer -> consecutive unreachable requests
        self._strikes = Strikes(MAX_MALFORMED, MALFORMED_WINDOW_S, MALFORMED_BACKOFF_S, MAX_PEERS)
        self._dropped: dict[bytes, P.PeerInfo] = {}  # peer -> its info when it was dropped
        self._announced_at = -float("inf")  # when _back() last re-signed our info
        self._probing: set[bytes] = set()
        self._gossip_quiet = 0
        self._membership_changed_at = 0.0
        self.bootstrap: tuple = ()
        self._fetch_limit = trio.Semaphore(MAX_PARALLEL_FETCHES)
        self._publish_kick = trio.Event()
        self._limbo_kick = trio.Event()
        self.publisher_idle = trio.Event()  # set while nothing is left to publish or retry
        self._change = trio.Event()
        self.on_change = None
        # request type -> its handler, which gets the typed request protocol.py parsed
        self._handlers = {
            "dna": self._on_dna,
            "hello": self._on_hello,
            "peers": self._on_peers,
            "publish": self._on_publish,
            "chain": self._on_chain,
            "record": self._on_record,
            "summary": self._on_summary,
            "warrants": self._on_warrants,
            "grant": self._on_grant,
        }
        assert self._handlers.keys() == P.REQUESTS.keys()
        for cell in self.cells.values():
            self._wire_cell(cell)
        for author in self.dht.foreign_authors():
            self.chains[author] = validate_chain(
                self.store.chain(author), self.dna, self.app, self.store.entries_of(author)
            )
        for wire in self.dht.warrants():
            w = warrant.from_wire(wire)
            if w is not None:
                await self._remember_warrant(w)

    def _add_cell(self, cell):
        if hasattr(self, "dht"):
            self._wire_cell(cell)
        return super()._add_cell(cell)

    def _wire_cell(self, cell) -> None:
        cell.on_commit = self._on_local_commit
        self._maybe_unpublished = True  # its genesis was written before it was wired
        if hasattr(self, "_publish_kick"):
            self._wake_publisher()
        cell.warrant = self.warranted.get(cell.key.public) if hasattr(self, "warranted") else None

    async def new_agent(self):
        agent = await super().new_agent()
        self._spawn(self._announce, agent._cell.key.public)  # peers learn where the agent lives
        return agent

    async def _announce(self, pub: bytes) -> None:
        """Tell the agent's authorities and a few others at once; the rest learn the newer peer
        info from peer exchanges (an epidemic, not a broadcast to every peer)."""
        targets = [p for p in self._nearest(pub) if p != self.id]
        others = sorted(set(self.peers) - set(targets))
        targets += self.rng.sample(others, min(ANNOUNCE_FANOUT, len(others)))
        for peer in targets:
            try:
                await self._hello(peer)
            except BudgetError:
                pass

    def _on_local_commit(self, s: Signed) -> None:
        self._gossip_quiet = 0
        self._maybe_unpublished = True
        self._changed()
        self._wake_publisher()

    def _changed(self) -> None:
        self._change.set()
        self._change = trio.Event()
        if self.on_change is not None:
            self.on_change()

    async def wait_changed(self) -> None:
        await self._change.wait()

    # -- peers
    def _my_info(self) -> dict:
        """This node's signed peer info, re-signed only when what it says changes (a new agent,
        a new address) or on a restart: every re-sign costs each peer a verify."""
        content = (tuple(self.transport.listen_addrs()), tuple(self.cells))
        if getattr(self, "_info_content", None) != content:
            # Strictly increasing, even on a frozen or skewed clock, so peers never take a
            # fresh info for a replay.
            self._info_ts = max(self.now_us(), getattr(self, "_info_ts", 0) + 1)
            self._info = dht.peer_info(
                self.node_key, self.dna.hash, list(content[0]), list(content[1]), self._info_ts
            )
            self._info_content = content
        return self._info

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

    def _add_peer(self, info: P.PeerInfo) -> bytes | None:
        peer = info.peer
        if (
            info.dna != self.dna.hash
            or peer == self.id
            or peer in self.warranted
            or self._backed_off(peer)
        ):
            return None
        old = self.peers.get(peer)
        if old is not None and old.ts >= info.ts:
            return peer  # a replayed or older info changes nothing: not worth a verify
        if peer in self._dropped and self._dropped[peer].ts >= info.ts:
            return None  # the info of a peer found dead: only a fresher one (it is back) counts
        if old is None and len(self.peers) >= MAX_PEERS:
            # Full: the peers known stay (Kademlia's rule). Identities cost nothing, so making
            # room for new ones would let anyone flush the table; a dead peer leaves by _drop.
            self.metrics["peers_full"] += 1
            return None
        if dht.check_peer_info(info.to_wire(), self.dna.hash) is None:
            return None
        self._dropped.pop(peer, None)
        self.peers[peer] = info
        self._table_version += 1
        self._unsaved_peers[peer] = info
        if len(self._unsaved_peers) >= MAX_PEERS:
            self._save_peer_cache()
        if old is None:
            self._peer_set_changed(peer, True)
        else:
            self._changed()  # a peer's fresher info (it restarted, or its agents changed)
        self.transport.add_peer_addrs(peer, list(info.addrs))
        self._host_agents(peer, info.agents, () if old is None else old.agents)
        if old is None:
            self._wake_publisher()  # a new peer may be an authority for pending ops
        return peer

    def _host_agents(self, peer: bytes, agents, before) -> None:
        """Where each agent lives, as its host's newest info says: a hint (the agent's
        authorities serve its chain too), so past MAX_AGENT_HOSTS new hints are not kept
        rather than evicting others; a peer's agents its newer info no longer names are
        forgotten, so one peer holds at most one info's worth."""
        for agent in set(before) - set(agents):
            if self.agent_hosts.get(agent) == peer:
                del self.agent_hosts[agent]
        for agent in agents:
            if agent in self.agent_hosts or len(self.agent_hosts) < MAX_AGENT_HOSTS:
                self.agent_hosts[agent] = peer
            else:
                self.metrics["agent_hosts_full"] += 1

    async def join(self, addr: str) -> bytes | None:
        """Dial a peer, exchange signed peer infos, and learn its peers."""
        try:
            peer = await self.transport.connect(addr)
            await self._hello(peer)
            await self._refresh_peers(peer)
            # Two more exchanges with peers just learnt: the newcomer is known beyond its
            # bootstrap node at once, and learns what that node had not heard of yet.
            others = sorted(set(self.peers) - {peer})
            for other in self.rng.sample(others, min(2, len(others))):
                try:
                    await self._refresh_peers(other)
                except BudgetError:
                    pass
            return peer
        except (PeerUnreachable, BudgetError) as e:
            self.metrics["join_failures"] += 1
            self.last_join_error = str(e)
            return None

    async def _hello(self, peer: bytes, dropped: bool = False) -> None:
        """`dropped`: this node had dropped the peer as dead (it answers again)."""
        fields = {"dropped": True} if dropped else {}
        rep = await self._request(peer, "hello", info=self._my_info(), **fields)
        self._add_peer(rep.info)

    async def _refresh_peers(self, peer: bytes) -> int:
        """Swap peer infos with `peer`: it sends what this node lacks (ours goes with the
        request), and names what it holds, so this node sends back what it lacks in turn
        (push and pull: news spreads both ways). Returns how many peers were new to us."""
        before = len(self.peers)
        digest, have = self._table_digest()
        rep = await self._request(peer, "peers", info=self._my_info(), digest=digest, have=have)
        for info in rep.infos:
            self._add_peer(info)
        if rep.have is not None:
            push = self._lacking(rep.have, peer)
            if push:
                await self._request(peer, "peers", push=push)
        return len(self.peers) - before

    def _lacking(self, have: bytes, peer: bytes) -> list:
        """The infos a peer holding `have` lacks or holds older, newest first (joins and
        restarts are the news), at most one message's worth."""
        known = {
            have[i : i + 8]: int.from_bytes(have[i + 8 : i + 16], "big")
            for i in range(0, len(have), 16)
        }
        infos = sorted(
            (i for p, i in self.peers.items() if p != peer and known.get(p[:8], -1) < i.ts),
            key=lambda i: i.ts,
            reverse=True,
        )
        return [i.to_wire() for i in infos[: P.MAX_PEERS_PER_MESSAGE]]

    def _table_digest(self) -> tuple[bytes, bytes]:
        """Which peer-info versions this node holds, itself included: a hash (two nodes with
        equal hashes have nothing to swap, so a settled network's exchanges are a few bytes)
        and the list itself, 16 bytes a peer (an id prefix, the info's timestamp), from which
        the other side sends exactly the infos this node lacks or holds older."""
        me = self._my_info()["body"]["ts"]
        if self._digest_key != (self._table_version, me):
            h = hashlib.blake2b(digest_size=16)
            have = []
            for p, ts in sorted([(self.id, me)] + [(p, i.ts) for p, i in self.peers.items()]):
                h.update(p)
                h.update(b"%d;" % ts)
                have.append(p[:8] + min(max(ts, 0), (1 << 63) - 1).to_bytes(8, "big"))
            self._digest_key = (self._table_version, me)
            self._digest = (h.digest(), b"".join(have))
        return self._digest

    def _nearest(self, basis: bytes) -> tuple:
        """The R nodes nearest `basis` among this node and its peers: its authorities as this
        node sees them."""
        return self._near.nearest(basis, lambda: [self.id, *self.peers], len(self.peers) + 1)

    def _load_peer_cache(self) -> list[bytes]:
        """Start from the peers known before a restart, not just the bootstrap node: a node
        whose bootstrap peer is away (or restarted too) still finds the network. Dead ones are
        dropped after their first failed requests, as any peer is."""
        loaded = []
        for raw in self.dht.load_peers(MAX_PEERS):
            try:
                peer = self._add_peer(P.PeerInfo.parse(decode(raw)))
            except BudgetError:
                continue
            if peer is not None:
                loaded.append(peer)
        self._unsaved_peers.clear()
        return loaded

    async def _greet_cached(self, cached: list[bytes]) -> None:
        """Swap peers with a few cached peers, so the network hears this node is back (and
        with which info) without waiting for anyone's gossip round."""
        for peer in self.rng.sample(sorted(cached), min(GREET_CACHED, len(cached))):
            if peer in self.peers:
                try:
                    await self._refresh_peers(peer)
                except BudgetError:
                    pass

    def _save_peer_cache(self) -> None:
        if self._unsaved_peers or self._unsaved_forgets:
            # infos this node signed or took in through a strict decode: plain data already
            if not self.dht.save_peers(
                {p: encode_trusted(i.to_wire()) for p, i in self._unsaved_peers.items()},
                self._unsaved_forgets,
            ):
                return  # the store is busy: kept for the next flush
            self._unsaved_peers.clear()
            self._unsaved_forgets.clear()
            self._changed()

    def _back(self) -> None:
        """A dropped peer answered: a cut between us may have healed, and the nodes beyond it
        dropped this node as well. They take a dropped peer back only on a fresher info (an old
        one replayed must not bring a dead node back), and greeting them one by one outlasted
        the liveness deadline at 200 nodes after a 20-minute 50/50 partition. So this node
        re-signs its info, at most once a gossip interval; peer swaps spread it, and every node
        that dropped it takes it back."""
        now = trio.current_time()
        if now - self._announced_at >= self.gossip_interval:
            self._announced_at = now
            self._info_content = None  # _my_info signs a fresh one
            self._changed()

    def _forget_peer(self, peer: bytes) -> None:
        if self.peers.pop(peer, None) is not None:
            self._table_version += 1
            self._peer_set_changed(peer, False)

    def _peer_set_changed(self, peer: bytes, came: bool) -> None:
        """New authorities may now be nearer to our agents than the ones that stored their
        heads: queue each head for the publisher, which sends it to the authorities that hold
        no receipt for it (they fetch the history before it from us)."""
        self._near.changed(peer, came)
        self._peer_epoch += 1
        self._changed()
        self._gossip_quiet = 0
        self._membership_changed_at = trio.current_time()
        self._republish.update(p for p in self.cells if p not in self.warranted)
        self._recheck_from, self._recheck_short, self._recheck_passes = -1, False, 0
        self._recheck_not_before = 0.0
        self._wake_publisher()

    def peer_ids(self) -> list[bytes]:
        return list(self.peers)

    async def _request(self, peer: bytes, t: str, **fields):
        """One exchange; the typed reply (protocol.REPLIES[t]). A peer that does not answer, or
        answers with a malformed reply (P.MalformedReply), has failed the exchange: it is
        dropped after DEAD_AFTER_FAILURES in a row, and a malformed reply counts against it
        besides (`_strike`). Raises P.ProtocolError if the peer refused the request."""
        self.metrics["messages_sent"] += 1
        self.metrics["sent_" + t] += 1
        refused = None
        try:
            raw = await self.transport.request(
                peer, P.request(t, self.dna.hash, **fields), self.request_timeout
            )
            try:
                rep = P.parse_reply(t, raw)
            except P.ProtocolError as e:
                refused = e  # it answered: alive, if unwilling
            except BudgetError as e:  # MalformedInput, TooLarge: the messenger's garbage
                self.metrics["malformed_replies"] += 1
                self._strike(peer)
                raise P.MalformedReply(f"malformed {t} reply from {peer.hex()[:12]}: {e}") from None
        except PeerUnreachable:
            self._failures[peer] += 1
            if self._failures[peer] >= DEAD_AFTER_FAILURES and peer in self.peers:
                self._drop(peer)
            raise
        self._failures.pop(peer, None)
        # a backed-off peer that answers is still paying for its garbage: not taken back yet
        was = None if self._backed_off(peer) else self._dropped.pop(peer, None)
        if was is not None:
            self._back()
        if was is not None and peer not in self.peers:
            # It answered, so it is back: routed to again at once (not just un-dropped, which
            # would leave it known nowhere), and greeted for the info it has now.
            self._add_peer(was)
            if t not in ("hello", "peers"):  # those bring its info already
                self._spawn(self._hello_quietly, peer, True)
        if refused is not None:
            raise refused
        return rep

    def _drop(self, peer: bytes) -> None:
        """Route around a peer found dead (or hostile): its ops go to the next-nearest
        authorities, and it comes back when a fresher peer info (it restarted or re-announced)
        reaches us, or it answers a request."""
        self._failures.pop(peer, None)
        if peer not in self.peers:
            return
        self._dropped[peer] = self.peers[peer]
        if len(self._dropped) > MAX_PEERS:
            self._dropped.pop(next(iter(self._dropped)))
        self.metrics["peers_dropped"] += 1
        self._forget_peer(peer)

    def _strike(self, peer: bytes) -> None:
        """A malformed request or reply from `peer`: it costs the sender. Past MAX_MALFORMED in
        MALFORMED_WINDOW_S it is dropped like a dead peer and backed off: its requests are
        refused unread and its peer infos ignored for MALFORMED_BACKOFF_S."""
        self.metrics["malformed_from_peers"] += 1
        if self._strikes.strike(peer, trio.current_time()):
            self.metrics["peers_backed_off"] += 1
            self._drop(peer)

    def _backed_off(self, peer: bytes) -> bool:
        return self._strikes.backed_off(peer, trio.current_time())

    def malformed_count(self, peer: bytes) -> int:
        """Malformed messages from `peer` in its current window (diagnostics, tests)."""
        return self._strikes.count(peer)

    async def _hello_quietly(self, peer: bytes, dropped: bool = False) -> None:
        try:
            await self._hello(peer, dropped)
        except BudgetError:
            pass
        finally:
            self._greeting.discard(peer)

    # -- serving requests
    async def _handle(self, peer: bytes, raw: bytes) -> bytes:
        self.metrics["messages_received"] += 1
        try:
            if peer in self.warranted:
                raise Warranted("this node's operator is warranted; requests are refused")
            if self._backed_off(peer):
                self.metrics["requests_backed_off"] += 1
                raise P.ProtocolError("too many malformed messages: backed off")
            if peer in self._dropped:  # it reached us, so it is back: greet it in return
                self._spawn(self._probe_dropped, peer)
            t, msg = P.parse_request(raw, self.dna.hash)
            if (
                peer not in self.peers
                and t not in ("hello", "peers", "dna")
                and peer not in self._greeting
                and peer not in self._dropped
                and len(self._greeting) < MAX_GREETING
            ):
                # It knows us and we do not know it (we restarted, or lost our peers): learn its
                # info, so the link works both ways. (hello and peers bring the info along.)
                self._greeting.add(peer)
                self._spawn(self._hello_quietly, peer)
            return await self._handlers[t](peer, msg)
        except (MalformedInput, TooLarge) as e:  # the sender's garbage costs the sender
            self.metrics["messages_refused"] += 1
            self.metrics["malformed_requests"] += 1
            self._strike(peer)
            return P.error_reply(e)
        except BudgetError as e:
            self.metrics["messages_refused"] += 1
            return P.error_reply(e)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            self.metrics["messages_refused"] += 1
            return P.error_reply(MalformedInput(f"malformed request ({type(e).__name__})"))
        except Exception as e:  # a bug in one handler must not take the node down
            self.metrics["handler_errors"] += 1
            self.last_handler_error = repr(e)
            return P.error_reply(P.InternalError(type(e).__name__))

    async def _on_dna(self, peer, msg):
        return P.reply(dna=self.dna.encoded())

    async def _on_hello(self, peer, msg: P.HelloRequest):
        info = msg.info
        if info.peer != peer or dht.check_peer_info(info.to_wire(), self.dna.hash) is None:
            raise MalformedInput("peer info is not signed by the sending peer")
        if msg.dropped:
            # It had dropped this node (a cut), and so may every node beyond it: a fresh info
            # lets them all take this node back (rate-limited, so a liar gains nothing).
            self._back()
        self._add_peer(info)
        return P.reply(info=self._my_info())

    async def _on_peers(self, peer, msg: P.PeersRequest):
        if msg.info is not None:
            if msg.info.peer != peer or msg.info.dna != self.dna.hash:
                raise MalformedInput("peer info is not the sending peer's")
            self._add_peer(msg.info)
        if msg.push is not None:  # the second leg: infos we lacked, by the asker's reckoning
            for i in msg.push:
                self._add_peer(i)
            return P.reply(ok=True)
        digest, mine = self._table_digest()
        if msg.digest == digest:
            return P.reply(infos=[self._my_info()])  # same table, same versions: nothing to swap
        return P.reply(infos=[self._my_info(), *self._lacking(msg.have, peer)], have=mine)

    async def _on_publish(self, peer, msg: P.PublishRequest):
        if msg.batch.to != self.id:
            raise MalformedInput("publish batch is not for this node or does not match its ops")
        batch = msg.batch.to_wire()  # evidence in a peer warrant, if it carries a forgery
        signed = [op.action for op in msg.ops]
        # The batch signature is evidence against the sender, needed only if an action it
        # carries is forged (the peer warrant quotes it); the transport already says who sent
        # it. So it is checked then, before anything is stored, and a valid publish costs one
        # verify less (a third of a publish's crypto).
        if not all(
            isinstance(s.action.get("author"), bytes) and verify(s.action["author"], s.sig, s.body)
            for s in signed
        ) and not warrant.batch_ok(batch, peer):
            raise MalformedInput("publish batch is not signed by the sending peer")
        results = []
        for op in msg.ops:
            s, entry, told = op.action, op.entry, op.told
            self.metrics["ops_received"] += 1
            # Sent here as an author-key authority: if this node knows authorities the sender
            # did not name (its view of the ring lags), pass the action on, whether or not this
            # node itself turns out to be one.
            fresh = told is not None and self.id in told and not self.dht.has_action(s.hash)
            status = await self._accept(s, entry, peer, prev=op.prev, op=True, vouch=op.vouch)
            if fresh and status == "valid":
                self._forward(s, entry, peer, told)
            if status == "forged":  # the sender signed the batch that carried it: its doing
                await self._issue("peer", peer, "bad_signature", -1, [s], batch=batch)
                status = "invalid"
            # a receipt vouches for the op to the other authorities only if an author-key
            # authority signed it, so only one the publisher counts as such signs one
            receipt = (
                dht.sign_receipt(s.hash, self.node_key)
                if status == "valid" and told is not None and self.id in told
                else None
            )
            results.append([s.hash, status, receipt])
        return P.reply(results=results)

    async def _on_chain(self, peer, msg: P.ChainRequest):
        return P.reply(records=self.dht.records(msg.author, msg.start, msg.limit))

    async def _on_record(self, peer, msg: P.RecordRequest):
        found = self._record(msg.hash)
        if found is None:
            return P.reply(record=None)
        s, entry = found
        return P.reply(record=[s.body, s.sig, entry])

    async def _on_grant(self, peer, msg: P.GrantRequest):
        grant, sig = msg.grant.to_wire(), msg.sig
        cell = self.cells.get(msg.grant.grantee)
        if cell is None:
            raise UnknownAgent("the grantee is not an agent of this node")
        try:
            return P.reply(granted=await cell.claim(grant, sig))
        except GrantAlreadyClaimed:  # the published record got here first and was claimed
            return P.reply(granted=self._claimed_amount(cell, grant_hash(grant)))

    def _claimed_amount(self, cell, gh: bytes) -> int | None:
        for s in reversed(self.store.chain(cell.key.public)):
            if s.action.get("type") == "claim" and grant_hash(s.action["grant"]) == gh:
                return s.action["budget"]["granted"]
        return None

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
                await self._issue("fork", author, "fork", seq, [existing, s])
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
            await self._issue("fork", author, "fork", seq, [twin, s])
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
        self._gossip_quiet = 0
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
        await self._issue(
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
            await self._issue("fork", s.author, "fork", s.seq, [twin, s])
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
        near = self._nearest(s.author)
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
            for peer in self._nearest(s.author):
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
            if all(p in skip for p in self._nearest(s.author)):
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
        return self.id in self._nearest(pub)

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
