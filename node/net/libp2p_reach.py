"""How a libp2p host is found and reached beyond `--bootstrap`: py-libp2p 0.8.1's own mDNS
discovery and circuit relay v2, adapted to the transport (libp2p_transport.py is the only user).

What is libp2p's here and what is ours (docs/ARCHITECTURE.md, "Discovery and reachability"):
libp2p finds peers on the LAN (`libp2p.discovery.mdns`, zeroconf) and carries bytes through a
relay (`libp2p.relay.circuit_v2`: HOP on the relay, STOP on the node behind it, Noise and Yamux
over the relayed stream as over TCP). Whether a found peer is one of ours, on our network, and
what it holds is decided by our hello exchange and peer table, exactly as for a bootstrap address:
mDNS only hands the node an address to join.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import trio

from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import MDNSDiscovery, create_mdns_discovery
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID, CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport

logging.getLogger("zeroconf").setLevel(logging.CRITICAL)

MAX_FOUND = 64  # discovered peers waiting for the node to join them; past it they are dropped
MDNS_STOP_S = 5.0  # zeroconf's goodbye packets and thread joins, bounded

# What a relay serves (`--relay-service`): py-libp2p's defaults allow 4 reservations; a relay for
# a LAN's worth of undialable nodes needs more. Every figure is a bound.
RELAY_LIMITS = RelayLimits(
    duration=3600,  # a circuit lives an hour, then the next request dials a new one
    data=1 << 30,  # bytes per circuit, both ways together
    max_circuit_conns=16,  # circuits to one reserved node at once
    max_reservations=128,  # nodes reachable through this relay at once
)
RESERVE_RETRY_S = (1.0, 30.0)  # first and longest wait between failed reservation attempts
RESERVE_TIMEOUT_S = 10.0


def is_circuit(addr: multiaddr.Multiaddr) -> bool:
    return "/p2p-circuit" in str(addr)


# ---- mDNS ---------------------------------------------------------------------------------


@asynccontextmanager
async def mdns_discovery(host, on_found, announce: bool = True) -> AsyncIterator[MDNSDiscovery]:
    """Announce `host` on the LAN (unless not `announce`: a throwaway host that only looks) and
    call `on_found(peer_id, addrs)` (in trio) for each libp2p peer announced there. libp2p's
    listener runs in zeroconf's thread and reports through a process-wide event bus
    (`peerDiscovery`), so each report is handed over to trio here; in a process with several
    hosts every host hears every report, which is harmless: joining a peer already known is
    skipped, joining oneself is refused."""
    token = trio.lowlevel.current_trio_token()

    def found(info: PeerInfo) -> None:  # zeroconf's thread
        try:
            token.run_sync_soon(on_found, info.peer_id, list(info.addrs))
        except trio.RunFinishedError:
            pass

    mdns = create_mdns_discovery(host.get_network(), host=host)
    peerDiscovery.register_peer_discovered_handler(found)
    try:
        async with trio.open_nursery() as nursery:
            if announce:
                # Registering probes the LAN for name conflicts (~1.6 s of blocking sends and
                # waits): in a thread, while the node starts and serves (finding others and
                # joining them needs no announcement of our own)
                nursery.start_soon(_in_thread, mdns.broadcaster.register)
            yield mdns
            nursery.cancel_scope.cancel()
    finally:
        peerDiscovery.unregister_peer_discovered_handler(found)
        with trio.CancelScope(shield=True), trio.move_on_after(MDNS_STOP_S):
            await _in_thread(functools.partial(_stop_mdns, mdns, announce))


async def _in_thread(fn) -> None:
    """zeroconf's blocking calls, off the event loop; one that outlives a cancel is left to
    finish in its thread (zeroconf's own timeouts bound it)."""
    await trio.to_thread.run_sync(fn, abandon_on_cancel=True)  # type: ignore[call-arg]


def _stop_mdns(mdns: MDNSDiscovery, announced: bool) -> None:
    # MDNSDiscovery.stop() without its cleanup task, which this module never starts (the
    # listener's peerstore entries are replaced by the node's own; see add_peer_addrs)
    if announced:
        mdns.broadcaster.unregister()
    mdns.listener.stop()
    mdns.zeroconf.close()


def join_address(peer_id: ID, addrs: list) -> str | None:
    """The address to join a discovered peer at: its first TCP address, a non-loopback one
    first (a LAN peer's loopback address is ours, not its)."""
    tcp = [a for a in addrs if "/tcp/" in str(a) and not is_circuit(a)]
    tcp.sort(key=lambda a: str(a).startswith(("/ip4/127.", "/ip6/::1/")))
    return f"{tcp[0]}/p2p/{peer_id}" if tcp else None


# ---- circuit relay v2 ---------------------------------------------------------------------


class Relaying:
    """Circuit relay v2 for one host: it can always dial a `/p2p-circuit` address (py-libp2p's
    swarm skips them: only this transport dials them); with `serve` it relays for others (HOP);
    with `via` (a relay's multiaddr) it holds a reservation there and is reached only through
    it, so its advertised address is `<via>/p2p-circuit/p2p/<self>`."""

    def __init__(self, host, *, serve: bool, via: str | None, changed, wait_changed, count):
        """`changed()` tells the transport's waiters the reservation moved; `wait_changed()`
        returns when a connection opened or closed; `count(name)` adds one to a counter."""
        self.host = host
        self.serve = serve
        self.via = via
        self._changed = changed
        self._wait_changed = wait_changed
        self._count = count
        self.protocol = CircuitV2Protocol(host, limits=RELAY_LIMITS, allow_hop=serve)
        roles = RelayRole.STOP | (RelayRole.HOP if serve else RelayRole(0))
        # no CLIENT role: it would reserve at every relay it dials through (a dialer needs none)
        self.circuit = CircuitV2Transport(host, self.protocol, RelayConfig(roles=roles))
        self.reserved = False
        self.relay_id: ID | None = None
        if via is not None:
            self.relay_id = info_from_p2p_addr(multiaddr.Multiaddr(via)).peer_id

    def advertised(self) -> list[str] | None:
        """The node's addresses when it is reached through a relay (None: its own)."""
        if self.via is None:
            return None
        return [f"{self.via}/p2p-circuit/p2p/{self.host.get_id()}"]

    async def dial(self, pid: ID, circuit: multiaddr.Multiaddr) -> None:
        """A connection to `pid` through the relay `circuit` names (its peerstore form, without
        the trailing /p2p/<pid>); on return it is in the swarm like any other connection."""
        # py-libp2p stores the circuits it dialled with the target's id on the end; ours lack it
        full = multiaddr.Multiaddr(
            str(circuit) if circuit.get_peer_id() == str(pid) else f"{circuit}/p2p/{pid}"
        )
        relay_ma, _ = self.circuit.parse_circuit_ma(full)
        relay = info_from_p2p_addr(relay_ma)
        if not self.host.get_network().get_connections(relay.peer_id):
            await self.host.connect(relay)
        await self.circuit.dial(full)

    async def keep_reservation(self) -> None:
        """Hold a reservation at `via` for as long as the host runs: made at start, renewed by
        py-libp2p before it expires, and made again (with a growing wait between failures)
        after the connection to the relay drops (the relay restarted and forgot it)."""
        assert self.via is not None and self.relay_id is not None
        wait = RESERVE_RETRY_S[0]
        async with trio.open_nursery() as nursery:
            while True:
                ok = False
                try:
                    with trio.fail_after(RESERVE_TIMEOUT_S):
                        if not self.host.get_network().get_connections(self.relay_id):
                            via = info_from_p2p_addr(multiaddr.Multiaddr(self.via))
                            await self.host.connect(via)
                        stream = await self.host.new_stream(self.relay_id, [HOP_PROTOCOL_ID])
                        ok = await self.circuit.reserve(stream, self.relay_id, nursery)
                        await stream.close()
                except Exception:  # unreachable, reset, refused: try again after a wait
                    ok = False
                self.reserved = ok
                self._count("relay_reservations" if ok else "relay_reservation_failures")
                if ok:
                    wait = RESERVE_RETRY_S[0]
                    self._changed()
                    while self.host.get_network().get_connections(self.relay_id):
                        await self._wait_changed()
                    self.reserved = False
                    self._changed()
                    continue
                await trio.sleep(wait)
                wait = min(RESERVE_RETRY_S[1], wait * 2)
