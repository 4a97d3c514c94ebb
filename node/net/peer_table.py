"""The peer table of a network node: who its peers are (signed peer infos), which it dropped as
dead or backed off for garbage, where agents live, the ring of the R nearest (its authorities as
this node sees them), the peer cache kept across restarts, and every request to a peer, whose
outcome (an answer, silence, garbage) is what moves a peer in or out of the table.

A component of NetNode (node.py wires it). It owns `peers`, `agent_hosts`, `dropped`,
`failures`, the strikes and the nearest cache; it learns of warrants only by reading
`warranted` (the warrant book writes it), and tells the node of a change in membership through
`on_set_changed` (authorities may have moved) and `on_new_peer` (pending ops may now have one).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio

from ..core import dht
from ..core.crypto import SigningKey
from ..core.dna import Dna
from ..core.encoding import decode, encode_trusted
from ..core.errors import BudgetError
from . import protocol as P
from .dht_store import DhtStore
from .nearest import NearestCache
from .strikes import Strikes
from .transport import PeerUnreachable, Transport

MAX_PEERS = P.MAX_PEERS  # full membership: authorities are the R nearest of all known peers
DEAD_AFTER_FAILURES = 3  # consecutive unreachable requests before a peer is dropped
MAX_AGENT_HOSTS = 1 << 16  # agent -> hosting peer hints: new hints past it are not kept
MALFORMED_WINDOW_S = 60.0  # malformed messages from one peer are counted over this window;
MAX_MALFORMED = 8  # this many in one window and the peer is dropped and backed off
MALFORMED_BACKOFF_S = 600.0  # for this long (its requests refused, its infos ignored)
GREET_CACHED = 3  # cached peers a restarted node swaps peers with at once


class PeerTable:
    transport: Transport  # attached once the transport is up (it needs the node's handler)

    def __init__(
        self,
        *,
        node_key: SigningKey,
        dna: Dna,
        r: int,
        rng: random.Random,
        dht_store: DhtStore,
        metrics: Counter,
        now_us: Callable[[], int],
        agents: Mapping[bytes, object],
        warranted: Mapping[bytes, object],
        gossip_interval: float,
        request_timeout: float,
        spawn: Callable[..., None],
        changed: Callable[[], None],
        on_set_changed: Callable[[], None],
        on_new_peer: Callable[[], None],
    ) -> None:
        """`agents`: this node's own agents (its info names them); `warranted`: offenders,
        never taken as peers."""
        self.node_key = node_key
        self.id = node_key.public
        self.dna = dna
        self.rng = rng
        self.dht = dht_store
        self.metrics = metrics
        self.now_us = now_us
        self.cells = agents
        self.warranted = warranted
        self.gossip_interval = gossip_interval
        self.request_timeout = request_timeout
        self.spawn = spawn
        self.changed = changed
        self.on_set_changed = on_set_changed
        self.on_new_peer = on_new_peer
        self.peers: dict[bytes, P.PeerInfo] = {}  # peer id -> signed peer info
        self.agent_hosts: dict[bytes, bytes] = {}  # agent -> peer id hosting it
        self.dropped: dict[bytes, P.PeerInfo] = {}  # peer -> its info when it was dropped
        self.failures: Counter = Counter()  # peer -> consecutive unreachable requests
        self._strikes = Strikes(MAX_MALFORMED, MALFORMED_WINDOW_S, MALFORMED_BACKOFF_S, MAX_PEERS)
        self._near = NearestCache(r)  # basis -> R nearest of self + peers
        self._table_version = 0  # bumps on any change to self.peers
        self.changed_at = 0.0  # when a peer last came or went
        self._sorted_peers: tuple[int, list] = (-1, [])  # (table version, sorted peer ids)
        self.unsaved: dict[bytes, P.PeerInfo] = {}  # peer cache changes, saved each round
        self.unsaved_forgets: set[bytes] = set()
        self._digest_key: tuple | None = None
        self._digest: tuple[bytes, bytes] = (b"", b"")
        self._announced_at = -float("inf")  # when back() last re-signed our info
        self._info_content: tuple | None = None
        self._info_ts = 0
        self._info: dict = {}
        self.greeting: set[bytes] = set()  # unknown requesters being greeted
        self._probing: set[bytes] = set()
        self.last_join_error = ""

    def attach(self, transport: Transport) -> None:
        self.transport = transport

    def my_info(self) -> dict:
        """This node's signed peer info, re-signed only when what it says changes (a new agent,
        a new address) or on a restart: every re-sign costs each peer a verify."""
        # stewards first: an info names at most 1,024 agents, and a steward must be findable (it
        # is the network's time witness and invite issuer)
        stewards = [a for a in self.dna.stewards if a in self.cells]
        agents = stewards + [a for a in self.cells if a not in self.dna.stewards]
        content = (tuple(self.transport.listen_addrs()), tuple(agents))
        if self._info_content != content:
            # Strictly increasing, even on a frozen or skewed clock, so peers never take a
            # fresh info for a replay.
            self._info_ts = max(self.now_us(), self._info_ts + 1)
            self._info = dht.peer_info(
                self.node_key, self.dna.hash, list(content[0]), list(content[1]), self._info_ts
            )
            self._info_content = content
        return self._info

    def add(self, info: P.PeerInfo) -> bytes | None:
        peer = info.peer
        if (
            info.dna != self.dna.hash
            or peer == self.id
            or peer in self.warranted
            or self.backed_off(peer)
        ):
            return None
        old = self.peers.get(peer)
        if old is not None and old.ts >= info.ts:
            return peer  # a replayed or older info changes nothing: not worth a verify
        if peer in self.dropped and self.dropped[peer].ts >= info.ts:
            return None  # the info of a peer found dead: only a fresher one (it is back) counts
        if old is None and len(self.peers) >= MAX_PEERS:
            # Full: the peers known stay (Kademlia's rule). Identities cost nothing, so making
            # room for new ones would let anyone flush the table; a dead peer leaves by _drop.
            self.metrics["peers_full"] += 1
            return None
        if dht.check_peer_info(info.to_wire(), self.dna.hash) is None:
            return None
        self.dropped.pop(peer, None)
        self.peers[peer] = info
        self._table_version += 1
        self.unsaved[peer] = info
        if len(self.unsaved) >= MAX_PEERS:
            self.save_cache()
        if old is None:
            self._set_changed(peer, True)
        else:
            self.changed()  # a peer's fresher info (it restarted, or its agents changed)
        self.transport.add_peer_addrs(peer, list(info.addrs))
        self.host_agents(peer, info.agents, () if old is None else old.agents)
        if old is None:
            self.on_new_peer()  # a new peer may be an authority for pending ops
        return peer

    def host_agents(self, peer: bytes, agents: Iterable[bytes], before: Iterable[bytes]) -> None:
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
            await self.hello(peer)
            await self.refresh(peer)
            # Two more exchanges with peers just learnt: the newcomer is known beyond its
            # bootstrap node at once, and learns what that node had not heard of yet.
            others = sorted(set(self.peers) - {peer})
            for other in self.rng.sample(others, min(2, len(others))):
                try:
                    await self.refresh(other)
                except BudgetError:
                    pass
            return peer
        except (PeerUnreachable, BudgetError) as e:
            self.metrics["join_failures"] += 1
            self.last_join_error = str(e)
            return None

    async def join_found(self, found) -> None:
        """Join each peer the transport found on the LAN (`up --mdns`: `found` yields (peer,
        address)) exactly as a bootstrap address is joined: our hello checks it is a node of
        this network (the DNA hash) and swaps peer infos. A peer already in the table, or one
        this node refuses, is not dialled again; the transport's queue bounds the backlog."""
        async for peer, addr in found:
            if peer in self.peers or peer in self.warranted or self.backed_off(peer):
                continue
            self.metrics["peers_found_joined"] += 1
            await self.join(addr)

    async def hello(self, peer: bytes, dropped: bool = False) -> None:
        """`dropped`: this node had dropped the peer as dead (it answers again)."""
        fields = {"dropped": True} if dropped else {}
        rep = await self.request(peer, "hello", info=self.my_info(), **fields)
        self.add(rep.info)

    async def refresh(self, peer: bytes) -> int:
        """Swap peer infos with `peer`: it sends what this node lacks (ours goes with the
        request), and names what it holds, so this node sends back what it lacks in turn
        (push and pull: news spreads both ways). Returns how many peers were new to us."""
        before = len(self.peers)
        digest, have = self.digest()
        rep = await self.request(peer, "peers", info=self.my_info(), digest=digest, have=have)
        for info in rep.infos:
            self.add(info)
        if rep.have is not None:
            push = self.lacking(rep.have, peer)
            if push:
                await self.request(peer, "peers", push=push)
        return len(self.peers) - before

    def lacking(self, have: bytes, peer: bytes) -> list:
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

    def digest(self) -> tuple[bytes, bytes]:
        """Which peer-info versions this node holds, itself included: a hash (two nodes with
        equal hashes have nothing to swap, so a settled network's exchanges are a few bytes)
        and the list itself, 16 bytes a peer (an id prefix, the info's timestamp), from which
        the other side sends exactly the infos this node lacks or holds older."""
        me = self.my_info()["body"]["ts"]
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

    def nearest(self, basis: bytes) -> tuple:
        """The R nodes nearest `basis` among this node and its peers: its authorities as this
        node sees them."""
        return self._near.nearest(basis, lambda: [self.id, *self.peers], len(self.peers) + 1)

    def load_cache(self) -> list[bytes]:
        """Start from the peers known before a restart, not just the bootstrap node: a node
        whose bootstrap peer is away (or restarted too) still finds the network. Dead ones are
        dropped after their first failed requests, as any peer is."""
        loaded = []
        for raw in self.dht.load_peers(MAX_PEERS):
            try:
                peer = self.add(P.PeerInfo.parse(decode(raw)))
            except BudgetError:
                continue
            if peer is not None:
                loaded.append(peer)
        self.unsaved.clear()
        return loaded

    async def greet_cached(self, cached: list[bytes]) -> None:
        """Swap peers with a few cached peers, so the network hears this node is back (and
        with which info) without waiting for anyone's gossip round."""
        for peer in self.rng.sample(sorted(cached), min(GREET_CACHED, len(cached))):
            if peer in self.peers:
                try:
                    await self.refresh(peer)
                except BudgetError:
                    pass

    def save_cache(self) -> None:
        if self.unsaved or self.unsaved_forgets:
            # infos this node signed or took in through a strict decode: plain data already
            if not self.dht.save_peers(
                {p: encode_trusted(i.to_wire()) for p, i in self.unsaved.items()},
                self.unsaved_forgets,
            ):
                return  # the store is busy: kept for the next flush
            self.unsaved.clear()
            self.unsaved_forgets.clear()
            self.changed()

    def back(self) -> None:
        """A dropped peer answered: a cut between us may have healed, and the nodes beyond it
        dropped this node as well. They take a dropped peer back only on a fresher info (an old
        one replayed must not bring a dead node back), and greeting them one by one outlasted
        the liveness deadline at 200 nodes after a 20-minute 50/50 partition. So this node
        re-signs its info, at most once a gossip interval; peer swaps spread it, and every node
        that dropped it takes it back."""
        now = trio.current_time()
        if now - self._announced_at >= self.gossip_interval:
            self._announced_at = now
            self._info_content = None  # my_info signs a fresh one
            self.changed()

    def forget(self, peer: bytes) -> None:
        if self.peers.pop(peer, None) is not None:
            self._table_version += 1
            self._set_changed(peer, False)

    def forget_for_good(self, peer: bytes) -> None:
        """A warranted peer: out of the table and out of the peer cache."""
        self.forget(peer)
        self.unsaved.pop(peer, None)
        self.unsaved_forgets.add(peer)

    def _set_changed(self, peer: bytes, came: bool) -> None:
        self._near.changed(peer, came)
        self.changed_at = trio.current_time()
        self.on_set_changed()

    async def request(self, peer: bytes, t: str, **fields: Any) -> Any:
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
                self.strike(peer)
                raise P.MalformedReply(f"malformed {t} reply from {peer.hex()[:12]}: {e}") from None
        except PeerUnreachable:
            self.failures[peer] += 1
            if self.failures[peer] >= DEAD_AFTER_FAILURES and peer in self.peers:
                self.drop(peer)
            raise
        self.failures.pop(peer, None)
        # a backed-off peer that answers is still paying for its garbage: not taken back yet
        was = None if self.backed_off(peer) else self.dropped.pop(peer, None)
        if was is not None:
            self.back()
        if was is not None and peer not in self.peers:
            # It answered, so it is back: routed to again at once (not just un-dropped, which
            # would leave it known nowhere), and greeted for the info it has now.
            self.add(was)
            if t not in ("hello", "peers"):  # those bring its info already
                self.spawn(self.hello_quietly, peer, True)
        if refused is not None:
            raise refused
        return rep

    def drop(self, peer: bytes) -> None:
        """Route around a peer found dead (or hostile): its ops go to the next-nearest
        authorities, and it comes back when a fresher peer info (it restarted or re-announced)
        reaches us, or it answers a request."""
        self.failures.pop(peer, None)
        if peer not in self.peers:
            return
        self.dropped[peer] = self.peers[peer]
        if len(self.dropped) > MAX_PEERS:
            self.dropped.pop(next(iter(self.dropped)))
        self.metrics["peers_dropped"] += 1
        self.forget(peer)

    def strike(self, peer: bytes) -> None:
        """A malformed request or reply from `peer`: it costs the sender. Past MAX_MALFORMED in
        MALFORMED_WINDOW_S it is dropped like a dead peer and backed off: its requests are
        refused unread and its peer infos ignored for MALFORMED_BACKOFF_S."""
        self.metrics["malformed_from_peers"] += 1
        if self._strikes.strike(peer, trio.current_time()):
            self.metrics["peers_backed_off"] += 1
            self.drop(peer)

    def backed_off(self, peer: bytes) -> bool:
        return self._strikes.backed_off(peer, trio.current_time())

    def malformed_count(self, peer: bytes) -> int:
        """Malformed messages from `peer` in its current window (diagnostics, tests)."""
        return self._strikes.count(peer)

    async def hello_quietly(self, peer: bytes, dropped: bool = False) -> None:
        try:
            await self.hello(peer, dropped)
        except BudgetError:
            pass
        finally:
            self.greeting.discard(peer)

    async def probe_dropped(self, peer: bytes) -> None:
        """A dropped peer may be back (a healed partition, a restart nobody told us about):
        greet it; its reply brings a fresh info, which re-admits it."""
        if peer not in self.dropped or peer in self._probing or self.backed_off(peer):
            return
        self._probing.add(peer)
        try:
            rep = await self.request(peer, "hello", info=self.my_info(), dropped=True)
        except BudgetError:
            return
        finally:
            self._probing.discard(peer)
        self.dropped.pop(peer, None)
        self.add(rep.info)

    def random_peer(self) -> bytes:
        if self._sorted_peers[0] != self._table_version:  # sorted once a peer-table change
            self._sorted_peers = (self._table_version, sorted(self.peers))
        return self.rng.choice(self._sorted_peers[1])
