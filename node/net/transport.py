"""The one seam between node logic and the network.

A transport carries opaque request bytes to a peer and brings back reply bytes; it
authenticates who sent each request. Node logic never imports libp2p: the libp2p
transport, the in-memory transport (unit tests) and the simulator's transport all
implement this.
"""

from __future__ import annotations

from typing import Protocol
from collections.abc import Awaitable, Callable

from ..core.errors import PeerUnreachable  # noqa: F401 (raised by every transport)

MAX_FRAME = 4 << 20  # one request or reply, after which the stream is refused

# handler(peer_id, request_bytes) -> reply_bytes. Peer ids are the peer's 32-byte Ed25519 key.
Handler = Callable[[bytes, bytes], Awaitable[bytes]]


class Transport(Protocol):
    peer_id: bytes

    def listen_addrs(self) -> list[str]:
        """Addresses other peers can dial (multiaddrs, or mem:// for the in-memory one)."""

    async def connect(self, addr: str) -> bytes:
        """Dial an address; returns the peer id it proved to own. Raises PeerUnreachable."""

    async def request(self, peer: bytes, payload: bytes, timeout: float = 5.0) -> bytes:
        """Send one framed request and await one framed reply. Raises PeerUnreachable."""

    def add_peer_addrs(self, peer: bytes, addrs: list[str]) -> None:
        """Where `peer` can be dialled, as its signed peer info says."""
