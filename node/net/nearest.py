"""The R nearest members of a changing peer set, per basis: what `dht.nearest` answers, kept
across peer-set changes instead of thrown away at each one."""

from __future__ import annotations

from ..core import dht

MAX_ENTRIES = 1 << 16  # bases remembered; all are forgotten at once past this
MAX_LOG = 1024  # peer-set changes remembered; an entry older than that is recomputed


class NearestCache:
    """Each entry remembers how many peer-set changes it had seen; a lookup replays only the
    changes since. A peer that came is kept if it is nearer than the entry's farthest; a peer
    that went and was in the entry forces a recompute (any member may replace it). A node in a
    network whose membership moves (joins, restarts, drops) used to recompute `dht.nearest` over
    all its peers for every basis it touched after every change."""

    def __init__(self, r: int):
        self.r = r
        self._entries: dict[bytes, tuple[int, tuple]] = {}
        self._log: list[tuple[bytes, bool]] = []  # (peer, came) for each change, oldest first
        self._base = 0  # how many changes came before _log[0]
        self._ring: tuple[int, dht.Ring] | None = None  # (version, the whole set) for rebuilds

    @property
    def version(self) -> int:
        return self._base + len(self._log)

    def changed(self, peer: bytes, came: bool) -> None:
        self._log.append((peer, came))
        if len(self._log) > MAX_LOG:
            cut = len(self._log) // 2
            del self._log[:cut]
            self._base += cut

    def nearest(self, basis: bytes, members, size: int) -> tuple:
        """`members()` lists the whole set (`size` of them); it is called only when an entry
        must be rebuilt, or when replaying the changes since would cost about as much."""
        version = self.version
        entry = self._entries.get(basis)
        if entry is not None:
            seen, near = entry
            if seen == version:
                return near
            if seen >= self._base and 4 * (version - seen) < size:
                replayed = self._replay(basis, near, self._log[seen - self._base :])
                if replayed is not None:
                    self._entries[basis] = (version, replayed)
                    return replayed
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        if self._ring is None or self._ring[0] != version:
            self._ring = (version, dht.Ring(members()))
        near = tuple(self._ring[1].nearest(basis, self.r))
        self._entries[basis] = (version, near)
        return near

    def _replay(self, basis: bytes, near: tuple, changes) -> tuple | None:
        loc = dht.location(basis)
        out = list(near)
        far = dht.location(out[-1]) ^ loc if len(out) >= self.r else None
        for peer, came in changes:
            if not came:
                if peer in out:
                    return None
            elif peer not in out and (far is None or dht.location(peer) ^ loc < far):
                out.append(peer)
                out.sort(key=lambda p: dht.location(p) ^ loc)
                del out[self.r :]
                if len(out) >= self.r:
                    far = dht.location(out[-1]) ^ loc
        return tuple(out)
