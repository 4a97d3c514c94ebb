"""A node left without peers (an existing store, its bootstrap peer unreachable) redials its
bootstrap peers with a bounded backoff, not once a round forever. Virtual time: the gossip
loop's own seeded jitter, trio's MockClock."""

import random
from collections import Counter

import trio

from node.net.gossip import MAX_REDIAL_GAP, Gossiper

INTERVAL = 1.0


class Alone:
    """A peer table with no peers whose joins all fail; it records when each was tried."""

    id = b"me" * 16
    changed_at = float("-inf")

    def __init__(self):
        self.peers: dict = {}
        self.dropped: set = set()
        self.joins: list[float] = []
        self.probes: list[float] = []

    def random_peer(self):
        return next(iter(self.peers))

    async def refresh(self, peer):
        return False

    def save_cache(self):
        pass

    async def join(self, addr):
        self.joins.append(trio.current_time())
        return None

    async def probe_dropped(self, peer):  # a peer it had dropped as dead: still silent
        self.probes.append(trio.current_time())


def _gossiper(table, seed=7):
    def unused(*a, **k):
        raise AssertionError("a node without peers gossips with no one")

    return Gossiper(
        rng=random.Random(seed),
        gossip_interval=INTERVAL,
        peer_table=table,
        warrant_book=type("W", (), {"warranted": set()})(),
        publisher=None,
        request=unused,
        metrics=Counter(),
        changed_elsewhere=lambda: False,
        heads=dict,
        head=unused,
        should_hold=unused,
        fetch=unused,
        task_failed=unused,
    )


async def test_redials_thin_out_to_the_bound_and_stay_there(autojump_clock):
    table = Alone()
    table.dropped.add(b"d" * 32)  # a peer cached before the restart, dropped since
    g = _gossiper(table)
    g.bootstrap = ("/ip4/192.0.2.1/tcp/4001/p2p/dead",)
    with trio.move_on_after(3600):  # an hour alone
        await g.run()
    assert table.probes == table.joins  # the dropped peer is greeted on the same schedule
    gaps = [b - a for a, b in zip(table.joins, table.joins[1:])]
    # doubling at first (each round sleeps 0.5-1.5 intervals: the seeded jitter)...
    assert gaps[0] < 3 * INTERVAL and gaps[4] > 8 * INTERVAL
    # ...then never closer than half the bound, never further than 1.5x it
    late = gaps[6:]
    assert late and all(0.5 * MAX_REDIAL_GAP <= g_ <= 1.5 * MAX_REDIAL_GAP for g_ in late)
    # about once every 32 s for an hour, where it was about once a second
    assert len(table.joins) < 3600 / MAX_REDIAL_GAP + 10


async def test_a_peer_found_resets_the_backoff(autojump_clock):
    """Alone long enough to redial every 32 rounds; a peer comes back for a while and goes:
    the next redial comes within a round or two again."""
    table = Alone()
    g = _gossiper(table, seed=8)
    g.bootstrap = ("/ip4/192.0.2.1/tcp/4001/p2p/dead",)
    rounds_with_peer = []

    async def gossip_with(peer):
        rounds_with_peer.append(trio.current_time())
        table.peers.clear()  # the peer leaves again after one round

    g.gossip_with = gossip_with
    g.gossip_partner = table.random_peer

    async def peer_back_at(t):
        await trio.sleep_until(t)
        table.peers[b"p" * 32] = object()

    async with trio.open_nursery() as n:
        n.start_soon(peer_back_at, 600.0)
        with trio.move_on_after(700):
            await g.run()
        n.cancel_scope.cancel()
    assert len(rounds_with_peer) == 1
    after = [t for t in table.joins if t > rounds_with_peer[0]]
    assert after[0] - rounds_with_peer[0] < 3 * INTERVAL  # the backoff started over
    before = [t for t in table.joins if t < 600]
    assert before[-1] - before[-2] > 0.5 * MAX_REDIAL_GAP  # it had reached the bound
