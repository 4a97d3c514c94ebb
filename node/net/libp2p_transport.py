"""The libp2p implementation of the Transport seam (py-libp2p 0.8.1: TCP + Noise + Yamux).

One request = one new stream on `protocol`: the requester writes one frame, the
responder writes one frame back, both close. A frame is a 4-byte big-endian length
followed by that many bytes; a declared length above MAX_FRAME is refused before the
body is read. Peer ids are raw 32-byte Ed25519 public keys, the same key that signs the
node's records; the libp2p peer id inlines that key (identity multihash), and Noise
proves the remote owns it, so the key handed to the handler is authenticated.

Only this module and libp2p_reach.py (mDNS discovery, circuit relay v2) import libp2p. See
docs/LIBP2P-NOTES.md for the traps the choices below avoid (numbers refer to it).
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from typing import cast
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator, Sequence

import trio

from ..core.errors import AddressUnusable
from .transport import MAX_FRAME, Handler, PeerUnreachable

import multiaddr  # noqa: E402  (libp2p dependency)
from libp2p import new_host  # noqa: E402
from libp2p.abc import INotifee  # noqa: E402
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair  # noqa: E402
from libp2p.crypto.keys import KeyType  # noqa: E402
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.identity.identify import identify as _identify  # noqa: E402
from libp2p.network.config import ConnectionConfig, RetryConfig  # noqa: E402
from libp2p.network.swarm import Swarm  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr  # noqa: E402
from libp2p.security.noise.transport import (  # noqa: E402
    PROTOCOL_ID as NOISE_PROTOCOL_ID,
    Transport as NoiseTransport,
)
from libp2p.stream_muxer.yamux.yamux import (  # noqa: E402
    PROTOCOL_ID as YAMUX_PROTOCOL_ID,
    Yamux,
)
from libp2p.tools.anyio_service import background_trio_service  # noqa: E402

from .libp2p_reach import MAX_FOUND, Relaying, is_circuit, join_address, mdns_discovery  # noqa: E402

# Trap 7: libp2p logs a lot (and at ERROR for ordinary refused streams); keep it quiet.
logging.getLogger("libp2p").setLevel(logging.CRITICAL)
logging.getLogger("multiaddr").setLevel(logging.ERROR)

_HEADER = struct.Struct(">I")
ADDR_TTL = 3600  # seconds a learnt address stays in the peerstore
MAX_WAITING = 256  # inbound streams queued for a handler slot; past it a new one is reset


class _FrameError(Exception):
    """The remote sent an oversized, truncated or otherwise bad frame."""


async def _read_exactly(stream, n: int) -> bytes:
    """Read exactly n bytes: streams do not keep message boundaries (trap 2)."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = await stream.read(n - len(buf))
        except Exception as e:  # StreamEOF / StreamReset / StreamError
            raise _FrameError(
                f"stream ended after {len(buf)} of {n} bytes ({type(e).__name__})"
            ) from e
        if not chunk:
            raise _FrameError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def _read_frame(stream) -> bytes:
    (length,) = _HEADER.unpack(await _read_exactly(stream, _HEADER.size))
    if length > MAX_FRAME:
        raise _FrameError(f"declared frame of {length} bytes exceeds MAX_FRAME ({MAX_FRAME})")
    return await _read_exactly(stream, length) if length else b""


def _frame(payload: bytes) -> bytes:
    # One write per frame: per-write cost dominates (trap 3).
    return _HEADER.pack(len(payload)) + payload


def _key_of(pid: ID) -> bytes | None:
    """The raw Ed25519 key inlined in a libp2p peer id, or None for other key types."""
    pub = pid.extract_public_key()
    if pub is None or pub.get_type() != KeyType.Ed25519:
        return None
    raw = pub.to_bytes()
    return raw if len(raw) == 32 else None


def _id_of(key: bytes) -> ID:
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(key))


async def _reset(stream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:
            pass


class _ChangeNotifee(INotifee):
    """libp2p calls these after it has updated its connection table."""

    def __init__(self, transport: Libp2pTransport):
        self._t = transport

    async def connected(self, network, conn) -> None:
        self._t._changed()

    async def disconnected(self, network, conn) -> None:
        self._t._changed()

    async def opened_stream(self, network, stream) -> None:
        pass

    async def closed_stream(self, network, stream) -> None:
        pass

    async def listen(self, network, multiaddr) -> None:
        pass

    async def listen_close(self, network, multiaddr) -> None:
        pass


class Libp2pTransport:
    """Satisfies node.net.transport.Transport. Made by open_libp2p_transport."""

    def __init__(
        self,
        host,
        key_pair,
        protocol: str,
        handler: Handler,
        *,
        max_inbound: int,
        inbound_timeout: float,
        max_waiting: int = MAX_WAITING,
    ):
        self.host = host  # the libp2p host; exposed for tests and diagnostics only
        self.peer_id: bytes = key_pair.public_key.to_bytes()
        self.libp2p_id: ID = host.get_id()
        self.protocol = TProtocol(protocol)
        self._handler = handler
        self._limiter = trio.CapacityLimiter(max_inbound)
        self._max_waiting = max_waiting
        self._waiting = 0  # inbound streams queued for the limiter
        self.refused_inbound = 0  # streams reset because too many were queued
        self._inbound_timeout = inbound_timeout
        self._ids: dict[bytes, ID] = {}  # peer key -> libp2p ID (learnt or connected)
        self._closed = False
        self._change = trio.Event()
        # counters (dials through a relay, peers found on the LAN); NetNode shares its own
        self.metrics: Counter[str] = Counter()
        self.relaying: Relaying | None = None  # set by open_libp2p_transport
        # (peer key, address to join it at) for each peer mDNS found: NetNode joins them
        self._found_send, self.discovered = trio.open_memory_channel[tuple[bytes, str]](MAX_FOUND)
        self.discovering = False  # mDNS runs: NetNode reads `discovered`
        host.get_network().register_notifee(_ChangeNotifee(self))

    def _changed(self) -> None:
        self._change.set()
        self._change = trio.Event()

    async def wait_changed(self) -> None:
        """Until a connection opens or closes, or an inbound request queues or starts: what
        callers (tests, diagnostics) wait on instead of polling socket state."""
        await self._change.wait()

    # ---- addresses and peers -------------------------------------------------

    def listen_addrs(self) -> list[str]:
        """Where others dial this node: its own addresses, or, behind a relay (`--relay`), only
        its address through the relay (its own are not reachable from outside, by definition,
        and a dial to an address that drops packets costs the dialer its whole timeout)."""
        relayed = self.relaying.advertised() if self.relaying is not None else None
        return relayed if relayed is not None else [str(a) for a in self.host.get_addrs()]

    def count(self, name: str) -> None:
        self.metrics[name] += 1

    def _found(self, pid: ID, addrs: list) -> None:
        """mDNS found a libp2p peer on the LAN: queue it for the node to join (the node's
        hello decides whether it is one of ours, as for a bootstrap address)."""
        key = _key_of(pid)
        addr = join_address(pid, addrs)
        if key is None or key == self.peer_id or addr is None or self._closed:
            return
        self.metrics["mdns_found"] += 1
        try:
            self._found_send.send_nowait((key, addr))
        except trio.WouldBlock:
            self.metrics["mdns_found_dropped"] += 1  # it announces again when it restarts

    def peers(self) -> list[bytes]:
        out = []
        for pid in self.host.get_connected_peers():
            key = _key_of(pid)
            if key is not None:
                out.append(key)
        return out

    def add_peer_addrs(self, peer: bytes, addrs: Sequence[str]) -> None:
        """The peer's current addresses (from its newest signed info, or one just dialled):
        they replace what was known. py-libp2p dials only the first address of each transport
        kind it holds for a peer, so a node restarted on a new port was unreachable for good
        while its old address stayed first. Bad addresses are skipped; an address may carry
        /p2p/<id>, and one naming a different peer is ignored.
        """
        if len(peer) != 32 or peer == self.peer_id:
            return
        pid = self._ids.get(peer) or _id_of(peer)
        good: list[multiaddr.Multiaddr] = []
        for a in addrs:
            try:
                ma = multiaddr.Multiaddr(a)
                p2p = ma.get_peer_id()
                if p2p is not None:
                    if ID.from_string(p2p) != pid:
                        continue
                    ma = ma.decapsulate(multiaddr.Multiaddr(f"/p2p/{p2p}"))
            except Exception:
                continue
            good.append(ma)
        self._ids[peer] = pid
        if good:
            store = self.host.get_peerstore()
            store.clear_addrs(pid)
            store.add_addrs(pid, good, ADDR_TTL)
            # New addresses: let the next dial try them even if the last one failed.
            self.host.get_network().unblock_peer(pid)

    def _known_addrs(self, pid: ID) -> list:
        try:
            return list(self.host.get_peerstore().addrs(pid))
        except Exception:  # PeerStoreError: never heard of it
            return []

    # ---- outbound -----------------------------------------------------------

    async def _dial(self, pid: ID) -> None:
        """A connection to `pid` from its known addresses: direct ones through the swarm, and
        `/p2p-circuit` ones (which the swarm skips) through the relay they name."""
        known = self._known_addrs(pid)
        relay = self.relaying
        relayed = [a for a in known if is_circuit(a)] if relay is not None else []
        if not relayed or len(relayed) < len(known):  # a direct address, or nothing to relay
            self.host.get_network().unblock_peer(pid)  # retry policy is the caller's
            try:
                await self.host.connect(PeerInfo(pid, []))
                return
            except Exception:
                if not relayed:
                    raise
        assert relay is not None  # relayed is empty without it
        error: Exception = PeerUnreachable("no relay answered")
        for circuit in relayed[:4]:  # a peer names few relays; each try is bounded by the caller
            try:
                await relay.dial(pid, circuit)
                self.metrics["relayed_dials"] += 1
                return
            except Exception as e:
                error = e
        self.metrics["relayed_dial_failures"] += 1
        raise error

    async def connect(self, addr: str, timeout: float = 10.0) -> bytes:
        """Dial a multiaddr ending in /p2p/<id>; return the remote's proven Ed25519 key."""
        if self._closed:
            raise PeerUnreachable("transport is closed")
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as e:
            raise PeerUnreachable(f"bad address {addr!r}: needs /p2p/<peer id> ({e})") from None
        key = _key_of(info.peer_id)
        if key is None:
            raise PeerUnreachable(f"{addr!r}: peer id is not an inlined Ed25519 key")
        if key == self.peer_id:
            raise PeerUnreachable(f"{addr!r} is this node")
        self.add_peer_addrs(key, [addr])
        try:
            with trio.fail_after(timeout):
                await self._dial(info.peer_id)
        except trio.TooSlowError:
            raise PeerUnreachable(f"connect to {addr} timed out after {timeout}s") from None
        except Exception as e:
            raise PeerUnreachable(f"connect to {addr} failed: {_describe(e)}") from None
        # Noise verified the remote's key against the id we dialed (PeerIDMismatchesPubkey
        # otherwise), so `key` is proven.
        return key

    async def request(self, peer: bytes, payload: bytes, timeout: float = 5.0) -> bytes:
        """One framed request, one framed reply, on a fresh stream. PeerUnreachable on any
        failure."""
        if self._closed:
            raise PeerUnreachable("transport is closed")
        if len(payload) > MAX_FRAME:
            raise PeerUnreachable(
                f"request of {len(payload)} bytes exceeds MAX_FRAME ({MAX_FRAME})"
            )
        pid = self._ids.get(peer)
        if pid is None:
            if len(peer) != 32:
                raise PeerUnreachable("peer id must be a 32-byte Ed25519 key")
            pid = _id_of(peer)  # it may be connected to us (an inbound connection)
        who = peer.hex()[:12]
        stream = None
        try:
            with trio.fail_after(timeout):
                if not self.host.get_network().get_connections(pid):
                    if not self._known_addrs(pid):
                        raise PeerUnreachable(f"peer {who}: not connected and no known address")
                    await self._dial(pid)
                stream = await self.host.new_stream(pid, [self.protocol])
                await stream.write(_frame(payload))
                reply = await _read_frame(stream)
        except PeerUnreachable:
            if stream is not None:
                await _reset(stream)
            raise
        except trio.TooSlowError:
            if stream is not None:
                await _reset(stream)
            raise PeerUnreachable(f"request to {who} timed out after {timeout}s") from None
        except BaseException as e:
            if stream is not None:
                await _reset(stream)
            if isinstance(e, Exception):
                raise PeerUnreachable(f"request to {who} failed: {_describe(e)}") from None
            raise  # Cancelled, KeyboardInterrupt
        with trio.CancelScope(shield=True):
            try:
                await stream.close()
            except Exception:
                pass
        return reply

    # ---- inbound ------------------------------------------------------------

    async def _on_stream(self, stream) -> None:
        try:
            remote = _key_of(stream.muxed_conn.peer_id)
        except Exception:
            remote = None
        if remote is None or self._closed:
            await _reset(stream)
            return
        if self._waiting >= self._max_waiting:
            # max_inbound handlers run and max_waiting more are queued: refuse, do not queue
            # without bound (the requester sees a reset stream, PeerUnreachable, and retries)
            self.refused_inbound += 1
            await _reset(stream)
            return
        try:
            self._waiting += 1
            self._changed()  # queued for the limiter
            try:
                await self._limiter.acquire()
            finally:
                self._waiting -= 1
            try:
                try:
                    with trio.fail_after(self._inbound_timeout):
                        payload = await _read_frame(stream)
                except (_FrameError, trio.TooSlowError):
                    await _reset(stream)  # malformed, oversized or too slow: drop it
                    return
                self._changed()  # its handler starts
                try:
                    reply = await self._handler(remote, payload)
                    if not isinstance(reply, (bytes, bytearray)) or len(reply) > MAX_FRAME:
                        raise ValueError("handler reply is not bytes within MAX_FRAME")
                except Exception:
                    # The handler failed: no reply. The requester sees a reset stream
                    # (PeerUnreachable); the host keeps serving.
                    await _reset(stream)
                    return
                await stream.write(_frame(bytes(reply)))
                await stream.close()
            finally:
                self._limiter.release()
        except Exception:
            await _reset(stream)


def _describe(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause) and str(cause) not in msg:
        msg += f" ({str(cause)[:200]})"
    return msg[:400]


def _agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"budgetnode/{version('budgetnode')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "budgetnode/unknown"


# What identify announces, so operators and other implementations can tell what they talk to.
# py-libp2p offers no per-host option: its identify reads this module global on every reply.
AGENT_VERSION = _agent_version()
_identify.AGENT_VERSION = AGENT_VERSION


@asynccontextmanager
async def open_libp2p_transport(
    seed: bytes,
    handler: Handler,
    listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
    protocol: str = "/budgetnode/1.0.0",
    *,
    max_inbound: int = 64,
    max_waiting: int = MAX_WAITING,
    inbound_timeout: float = 30.0,
    dial_timeout: float = 10.0,
    mdns: bool = False,
    announce: bool = True,
    relay: str | None = None,
    relay_service: bool = False,
) -> AsyncIterator[Libp2pTransport]:
    """Run a libp2p host whose identity is the Ed25519 key made from the 32-byte `seed`.

    Every host can dial a peer through a relay (`/p2p-circuit` addresses). `mdns`: announce
    this host on the LAN (unless not `announce`) and queue the peers found there on
    `discovered`; `relay` (a relay's
    multiaddr ending in /p2p/<id>): hold a reservation there and advertise only the address
    through it; `relay_service`: relay for others (libp2p_reach.RELAY_LIMITS bound it).

    Enter it outside any trio.fail_after/move_on_after (trap 6). On exit the host is
    closed explicitly and shielded, so no socket outlives the context (trap 5).
    """
    if len(seed) != 32:
        raise ValueError("seed must be 32 bytes")
    key_pair = create_new_key_pair(seed)
    config = ConnectionConfig(
        max_connections_per_peer=1,  # trap 1: otherwise every connect waits 250 ms
        dial_timeout=dial_timeout,
    )
    host = new_host(
        key_pair=key_pair,
        # Noise only. The default also offers TLS, SECIO and *plaintext*, where the
        # peer's identity is merely claimed; a dialer could then impersonate any key.
        sec_opt={
            NOISE_PROTOCOL_ID: NoiseTransport(
                key_pair, noise_privkey=create_x25519_key_pair().private_key
            )
        },
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[multiaddr.Multiaddr(a) for a in listen],
        connection_config=config,
    )
    # new_host's network is a Swarm; its interface type (INetworkService) omits the two
    # attributes set below
    swarm = cast(Swarm, host.get_network())
    # One quick retry; the node decides its own retry policy above this seam.
    swarm.retry_config = RetryConfig(max_retries=1, initial_delay=0.05, max_delay=0.5)
    # Trap 8: the swarm's AutoConnector dials every peer in the peerstore until it has
    # ~200 connections. Keep it from starting: the node decides whom to dial.
    swarm.auto_connector.start = _no_autoconnect  # type: ignore[method-assign]

    t = Libp2pTransport(
        host,
        key_pair,
        protocol,
        handler,
        max_inbound=max_inbound,
        inbound_timeout=inbound_timeout,
        max_waiting=max_waiting,
    )
    host.set_stream_handler(t.protocol, t._on_stream)
    relaying = Relaying(
        host,
        serve=relay_service,
        via=relay,
        changed=t._changed,
        wait_changed=t.wait_changed,
        count=t.count,
    )
    async with host.run(listen_addrs=[multiaddr.Multiaddr(a) for a in listen]):
        try:
            if listen and not host.get_addrs():  # the library logs a failed bind and goes on
                raise AddressUnusable(
                    f"cannot listen on {', '.join(listen)} (in use, or not this machine's)"
                )
            # trap 6: entered here, outside any fail_after
            async with background_trio_service(relaying.protocol), trio.open_nursery() as nursery:
                t.relaying = relaying
                if relay is not None:
                    nursery.start_soon(relaying.keep_reservation)
                try:
                    if mdns:
                        async with mdns_discovery(host, t._found, announce):
                            t.discovering = True
                            yield t
                    else:
                        yield t
                finally:
                    t._closed = True
                    nursery.cancel_scope.cancel()
        finally:
            t._closed = True
            with trio.CancelScope(shield=True):
                with trio.move_on_after(10):
                    await host.close()


async def _no_autoconnect() -> None:
    return None
