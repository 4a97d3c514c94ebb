"""Malformed messages counted per peer over a time window: the sender pays for its garbage.

A peer that sends `limit` malformed requests or replies within `window` seconds is backed off
for `backoff` seconds (the node drops it from its peer table, refuses its requests, ignores its
infos). Pure: the caller passes the time.

The table is bounded (`max_peers`). At the bound, entries whose window and backoff are over go
first, then the one with the fewest strikes that is not backed off; a backed-off peer is never
evicted, so a flood of fresh identities cannot lift a backoff, and if every entry is backed off
the new sender goes uncounted (its messages are still refused one by one). Honest peers send no
malformed messages, so nothing of theirs is here to evict.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    start: float  # when this window opened
    count: int
    until: float  # backed off until then (0: not backed off)


class Strikes:
    def __init__(self, limit: int, window: float, backoff: float, max_peers: int):
        self.limit, self.window, self.backoff, self.max_peers = limit, window, backoff, max_peers
        self._by_peer: dict[bytes, _Entry] = {}
        self.untracked = 0  # strikes not counted: the table was full of backed-off peers

    def __len__(self) -> int:
        return len(self._by_peer)

    def strike(self, peer: bytes, now: float) -> bool:
        """Count one malformed message; True if this one backs the peer off."""
        e = self._by_peer.get(peer)
        if e is None:
            if len(self._by_peer) >= self.max_peers and not self._make_room(now):
                self.untracked += 1
                return False
            e = self._by_peer[peer] = _Entry(now, 0, 0.0)
        elif now - e.start > self.window:
            e.start, e.count = now, 0
        e.count += 1
        if e.count >= self.limit and e.until <= now:
            e.until = now + self.backoff
            return True
        return False

    def count(self, peer: bytes) -> int:
        e = self._by_peer.get(peer)
        return 0 if e is None else e.count

    def backed_off(self, peer: bytes, now: float) -> bool:
        e = self._by_peer.get(peer)
        return e is not None and e.until > now

    def _make_room(self, now: float) -> bool:
        expired = [
            p for p, e in self._by_peer.items() if e.until <= now and now - e.start > self.window
        ]
        for p in expired:
            del self._by_peer[p]
        if expired:
            return True
        free = [(e.count, e.start, p) for p, e in self._by_peer.items() if e.until <= now]
        if not free:
            return False
        del self._by_peer[min(free)[2]]
        return True
