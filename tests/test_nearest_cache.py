"""The nearest-peers cache must answer exactly what recomputing would, through any sequence of
peers coming and going (the simulator's trace hashes depend on it, and so does routing)."""

import random

import pytest

from node.core import dht
from node.net import nearest as N
from node.net.nearest import NearestCache


@pytest.mark.parametrize("replay_limit", [None, 1000])
def test_cache_answers_what_recomputing_would_through_churn(monkeypatch, replay_limit):
    monkeypatch.setattr(N, "MAX_LOG", 16)  # small, so entries also outlive the change log
    rng = random.Random(5)
    me = rng.randbytes(32)
    pool = [rng.randbytes(32) for _ in range(40)]
    bases = [rng.randbytes(32) for _ in range(25)]
    members: set[bytes] = set()
    cache = NearestCache(r=3)
    rebuilt = [0]

    def everyone():
        rebuilt[0] += 1
        return [me, *members]

    replayed = 0
    for step in range(3000):
        p = rng.choice(pool)
        if p in members and rng.random() < 0.5:
            members.discard(p)
            cache.changed(p, False)
        elif p not in members:
            members.add(p)
            cache.changed(p, True)
        for b in rng.sample(bases, 3):
            stale = b in cache._entries and cache._entries[b][0] != cache.version
            n = rebuilt[0]
            got = cache.nearest(b, everyone, replay_limit or len(members) + 1)
            assert got == tuple(dht.nearest(b, [me, *members], 3)), step
            replayed += stale and rebuilt[0] == n
    assert replayed > (100 if replay_limit else 10)  # replays, not only full recomputes, ran


def test_a_peer_that_leaves_an_entry_forces_a_recompute():
    rng = random.Random(1)
    me, *peers = [rng.randbytes(32) for _ in range(10)]
    basis = rng.randbytes(32)
    cache = NearestCache(r=3)
    members = set(peers)
    near = cache.nearest(basis, lambda: [me, *members], 1000)
    gone = near[0] if near[0] != me else near[1]
    members.discard(gone)
    cache.changed(gone, False)
    after = cache.nearest(basis, lambda: [me, *members], 1000)
    assert gone not in after and len(after) == 3
    assert after == tuple(dht.nearest(basis, [me, *members], 3))


def test_nearest_is_the_r_closest_by_xor_distance_on_the_ring():
    """The definition every node routes by, checked against a plain sort: any peer container,
    fewer peers than r, and none."""
    rng = random.Random(9)
    for n in (0, 1, 2, 3, 7, 200):
        peers = [rng.randbytes(32) for _ in range(n)]
        for _ in range(20):
            basis = rng.randbytes(32)
            want = sorted(peers, key=lambda p: dht.location(p) ^ dht.location(basis))[:3]
            assert dht.nearest(basis, peers, 3) == want
            assert dht.nearest(basis, set(peers), 3) == want
            assert dht.nearest(basis, dict.fromkeys(peers), 3) == want


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 9, 64, 300])
def test_a_ring_answers_what_comparing_every_member_would(n):
    rng = random.Random(n)
    members = [rng.randbytes(32) for _ in range(n)]
    ring = dht.Ring(members)
    assert len(ring) == n
    for _ in range(300):
        basis = rng.choice(members) if members and rng.random() < 0.2 else rng.randbytes(32)
        for r in (1, 3, 5):
            assert ring.nearest(basis, r) == dht.nearest(basis, members, r)
