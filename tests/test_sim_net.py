"""The simulated transport on its own: latency, loss, duplication, timeouts and cancellation, on
trio's virtual clock, with messages in flight held in the network's event heap and delivered by
the clock."""

import random

import pytest
import trio
import trio.testing

from node.net.transport import PeerUnreachable
from sims.net import SimClock, SimNetwork


@pytest.fixture
def sim_clock():
    return SimClock()  # pytest-trio runs the test on the Clock a fixture provides


async def _net(nursery, handler, **kw):
    clock = trio.lowlevel.current_clock()
    net = SimNetwork(random.Random(1), clock, **kw)
    a = await nursery.start(_open, net, b"\x01" * 32, handler)
    b = await nursery.start(_open, net, b"\x02" * 32, handler)
    return net, a, b


async def _open(net, seed, handler, task_status=trio.TASK_STATUS_IGNORED):
    async with net.transport(seed, handler) as t:
        task_status.started(t)
        await trio.sleep_forever()


async def test_a_reply_takes_a_round_trip_and_a_lost_one_times_out(sim_clock):
    seen = []

    async def echo(peer, raw):
        seen.append((trio.current_time(), raw))
        return raw[::-1]

    async with trio.open_nursery() as n:
        net, a, b = await _net(n, echo, latency=0.05, jitter=0.0)
        t0 = trio.current_time()
        assert await a.request(b.peer_id, b"abc") == b"cba"
        assert trio.current_time() - t0 == pytest.approx(0.1)
        assert seen == [(pytest.approx(t0 + 0.05), b"abc")]
        net.loss = 1.0
        t0 = trio.current_time()
        with pytest.raises(PeerUnreachable):
            await a.request(b.peer_id, b"x", timeout=3.0)
        assert trio.current_time() - t0 == pytest.approx(3.0)
        assert net.stats["lost"] == 1 and len(seen) == 1
        n.cancel_scope.cancel()


async def test_a_duplicated_request_runs_twice_and_is_answered_once(sim_clock):
    calls = []
    release, second_done = trio.Event(), trio.Event()

    async def handler(peer, raw):
        calls.append(raw)
        k = len(calls)
        if k == 2:
            await release.wait()  # the second copy answers only after the first got home
            second_done.set()
        return b"%d" % k

    async with trio.open_nursery() as n:
        net, a, b = await _net(n, handler, latency=0.05, jitter=0.0, dup=1.0)
        assert await a.request(b.peer_id, b"x") == b"1"
        release.set()
        await second_done.wait()
        assert calls == [b"x", b"x"] and net.stats["duplicated"] == 1
        b.handler, net.dup = _fast, 0.0
        assert await a.request(b.peer_id, b"y") == b"fast"  # after the late copy's reply
        # delivered: two copies of x, the first reply, y and its reply; not the late reply
        assert net.stats["replies"] == 3 and net.delivered == 5
        n.cancel_scope.cancel()


async def test_a_cancelled_caller_leaves_the_network_running(sim_clock):
    release, finished = trio.Event(), trio.Event()

    async def slow(peer, raw):
        await release.wait()
        finished.set()
        return b"late"

    async with trio.open_nursery() as n:
        net, a, b = await _net(n, slow, latency=0.05, jitter=0.0)
        with trio.move_on_after(1):
            await a.request(b.peer_id, b"x", timeout=30)
        release.set()
        await finished.wait()  # its late reply is on its way, and nobody waits for it
        b.handler = _fast
        assert await a.request(b.peer_id, b"y") == b"fast"
        assert net.stats["replies"] == 2 and net.delivered == 3  # x, y, y's reply
        n.cancel_scope.cancel()


async def _fast(peer, raw):
    return b"fast"


async def test_a_partition_blocks_and_a_departed_peer_is_unreachable(sim_clock):
    served = []

    async def handler(peer, raw):
        served.append(peer)
        return b"fast"

    async with trio.open_nursery() as n:
        net, a, b = await _net(n, handler, latency=0.05, jitter=0.01)
        net.set_rules([lambda s, d: s == a.peer_id and d == b.peer_id])
        with pytest.raises(PeerUnreachable):
            await a.request(b.peer_id, b"x", timeout=2)
        assert served == []
        with pytest.raises(PeerUnreachable):  # one-way: b's request arrives, the reply does not
            await b.request(a.peer_id, b"x", timeout=2)
        assert served == [b.peer_id]
        net.quiet()
        assert await a.request(b.peer_id, b"x") == b"fast"
        del net.transports[b.peer_id]
        with pytest.raises(PeerUnreachable):
            await a.request(b.peer_id, b"x")
        n.cancel_scope.cancel()
