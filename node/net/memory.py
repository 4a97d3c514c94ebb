"""An in-memory Transport for unit tests: direct calls, with partitions and crashed peers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from ..core.crypto import SigningKey
from .transport import MAX_FRAME, Handler, PeerUnreachable


class MemoryNetwork:
    def __init__(self):
        self.handlers: dict[bytes, Handler] = {}
        self.blocked: set[tuple[bytes, bytes]] = set()
        self.messages = 0
        self.bytes = 0

    def partition(self, *groups) -> None:
        """Cut every link between peers of different groups (lists of peer ids)."""
        for g in groups:
            for h in groups:
                if g is not h:
                    self.blocked.update((a, b) for a in g for b in h)

    def heal(self) -> None:
        self.blocked.clear()

    @asynccontextmanager
    async def transport(self, seed: bytes, handler: Handler) -> AsyncIterator[MemoryTransport]:
        t = MemoryTransport(self, SigningKey(seed).public)
        self.handlers[t.peer_id] = handler
        try:
            yield t
        finally:
            self.handlers.pop(t.peer_id, None)


class MemoryTransport:
    def __init__(self, net: MemoryNetwork, peer_id: bytes):
        self.net = net
        self.peer_id = peer_id

    def listen_addrs(self) -> list[str]:
        return ["mem://" + self.peer_id.hex()]

    def add_peer_addrs(self, peer: bytes, addrs: Sequence[str]) -> None:
        pass

    def peers(self) -> list[bytes]:
        return [p for p in self.net.handlers if p != self.peer_id]

    async def connect(self, addr: str) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            peer = bytes.fromhex(addr.removeprefix("mem://"))
        except ValueError:
            raise PeerUnreachable(f"bad address {addr}") from None
        if peer not in self.net.handlers or (self.peer_id, peer) in self.net.blocked:
            raise PeerUnreachable(f"no peer at {addr}")
        return peer

    async def request(self, peer: bytes, payload: bytes, timeout: float = 5.0) -> bytes:
        await trio.lowlevel.checkpoint()
        handler = self.net.handlers.get(peer)
        if (
            handler is None
            or (self.peer_id, peer) in self.net.blocked
            or (peer, self.peer_id) in self.net.blocked
        ):
            raise PeerUnreachable(f"peer {peer.hex()[:12]} is unreachable")
        if len(payload) > MAX_FRAME:
            raise PeerUnreachable("request larger than a frame")
        self.net.messages += 1
        self.net.bytes += len(payload)
        with trio.move_on_after(timeout) as scope:
            reply = await handler(self.peer_id, payload)
        if scope.cancelled_caught:
            raise PeerUnreachable("request timed out")
        return reply
