"""The libp2p Transport over real loopback sockets: 3 hosts in one process.

No fixed sleeps: every wait is on a condition, bounded by trio.fail_after. Hosts are
entered outside any fail_after (LIBP2P-NOTES trap 6).
"""

from __future__ import annotations

import hashlib
import os
import struct
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

pytest.importorskip("libp2p")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from node.net.libp2p_transport import open_libp2p_transport  # noqa: E402
from node.net.transport import MAX_FRAME, PeerUnreachable  # noqa: E402


def seed(i: int) -> bytes:
    return hashlib.sha256(b"budgetnode-test-peer-%d" % i).digest()


def public_of(s: bytes) -> bytes:
    return (
        Ed25519PrivateKey.from_private_bytes(s)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


async def wait_until(transport, cond, timeout: float = 5.0) -> None:
    """Re-check `cond` each time the transport reports a change (libp2p's connection events,
    inbound requests queuing or starting)."""
    with trio.fail_after(timeout):
        while not cond():
            await transport.wait_changed()


class Recorder:
    """A handler that echoes, and records which authenticated peer sent what."""

    def __init__(self, name: bytes):
        self.name = name
        self.seen: list[tuple[bytes, bytes]] = []

    async def __call__(self, peer: bytes, payload: bytes) -> bytes:
        self.seen.append((peer, payload[:64]))
        if payload == b"boom":
            raise RuntimeError("handler bug")
        if payload.startswith(b"size:"):
            return b"z" * int(payload[5:])
        if len(payload) > 2 << 20:
            return b"len:%d" % len(payload)
        return self.name + b"|" + payload


@asynccontextmanager
async def hosts(n: int, first: int = 1, **kw):
    async with AsyncExitStack() as stack:
        ts, hs = [], []
        for i in range(first, first + n):
            h = Recorder(b"h%d" % i)
            ts.append(await stack.enter_async_context(open_libp2p_transport(seed(i), h, **kw)))
            hs.append(h)
        yield ts, hs


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_identity_is_the_seed_key_and_addrs_are_dialable():
    async with hosts(1) as ([a], _):
        assert a.peer_id == public_of(seed(1))
        (addr,) = a.listen_addrs()
        assert addr.startswith("/ip4/127.0.0.1/tcp/")
        port = int(addr.split("/")[4])
        assert port > 0
        assert addr.endswith("/p2p/" + str(a.libp2p_id))
    # Deterministic: the same seed gives the same libp2p identity on a new port.
    async with hosts(1) as ([a2], _):
        assert a2.peer_id == public_of(seed(1))
        assert str(a2.libp2p_id) in a2.listen_addrs()[0]


async def test_connect_and_request_both_ways_with_authenticated_keys():
    async with hosts(3) as ([a, b, c], [ha, hb, hc]):
        with trio.fail_after(10):
            assert await b.connect(a.listen_addrs()[0]) == a.peer_id
            assert await c.connect(a.listen_addrs()[0]) == a.peer_id
            # Connecting again is a no-op that still returns the key.
            assert await c.connect(a.listen_addrs()[0]) == a.peer_id

            assert await b.request(a.peer_id, b"hello") == b"h1|hello"
            assert ha.seen[-1] == (b.peer_id, b"hello")
            assert await c.request(a.peer_id, b"from c") == b"h1|from c"
            assert ha.seen[-1] == (c.peer_id, b"from c")
            # a never dialed b: the reply path reuses the inbound connection.
            assert await a.request(b.peer_id, b"back") == b"h2|back"
            assert hb.seen[-1] == (a.peer_id, b"back")
            assert await a.request(c.peer_id, b"") == b"h3|"
            assert hc.seen[-1] == (a.peer_id, b"")

        await wait_until(a, lambda: set(a.peers()) == {b.peer_id, c.peer_id})
        assert b.peers() == [a.peer_id] and c.peers() == [a.peer_id]
        assert hb.seen == [(a.peer_id, b"back")]
        # Trap 8: the swarm's AutoConnector never starts, so b and c (which both know a,
        # and may learn each other via identify) do not dial each other on their own.
        assert not any(t.host.get_network().auto_connector._started for t in (a, b, c))
        assert c.peer_id not in b.peers()

        # b and c are not connected; b learns c's address "from gossip" and requests.
        b.add_peer_addrs(c.peer_id, c.listen_addrs())
        with trio.fail_after(10):
            assert await b.request(c.peer_id, b"learnt") == b"h3|learnt"
        assert hc.seen[-1] == (b.peer_id, b"learnt")
        assert c.peer_id in b.peers()


async def test_connect_refuses_an_address_whose_peer_id_is_someone_else():
    async with hosts(3) as ([a, b, c], [ha, _, _]):
        a_tcp = a.listen_addrs()[0].split("/p2p/")[0]
        lie = f"{a_tcp}/p2p/{c.libp2p_id}"  # a's socket, c's identity
        with trio.fail_after(10):
            with pytest.raises(PeerUnreachable):
                await b.connect(lie)
        assert ha.seen == []
        for bad in ["/ip4/127.0.0.1/tcp/1", "not a multiaddr", a_tcp]:
            with trio.fail_after(5):
                with pytest.raises(PeerUnreachable):
                    await b.connect(bad)


async def test_200_concurrent_requests():
    async with hosts(2) as ([a, b], [ha, _]):
        with trio.fail_after(10):
            await b.connect(a.listen_addrs()[0])
        replies: dict[int, bytes] = {}

        async def one(i: int) -> None:
            replies[i] = await b.request(a.peer_id, b"req-%d" % i, timeout=30)

        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                for i in range(200):
                    n.start_soon(one, i)
        assert replies == {i: b"h1|req-%d" % i for i in range(200)}
        assert len(ha.seen) == 200 and {p for p, _ in ha.seen} == {b.peer_id}


async def test_one_megabyte_round_trip_and_max_frame_boundary():
    async with hosts(2) as ([a, b], _):
        with trio.fail_after(10):
            await b.connect(a.listen_addrs()[0])
        big = os.urandom(1 << 20)
        with trio.fail_after(20):
            assert await b.request(a.peer_id, big, timeout=15) == b"h1|" + big
            # exactly MAX_FRAME is a legal request; a MAX_FRAME reply too
            assert (
                await b.request(a.peer_id, b"\0" * MAX_FRAME, timeout=15) == b"len:%d" % MAX_FRAME
            )
            assert (
                await b.request(a.peer_id, b"size:%d" % MAX_FRAME, timeout=15) == b"z" * MAX_FRAME
            )


async def test_oversized_frames_are_refused_and_the_server_keeps_serving():
    async with hosts(2) as ([a, b], [ha, _]):
        with trio.fail_after(10):
            await b.connect(a.listen_addrs()[0])
            # 1. the requester refuses to send an oversized request
            with pytest.raises(PeerUnreachable, match="MAX_FRAME"):
                await b.request(a.peer_id, b"x" * (MAX_FRAME + 1))
            # 2. the server refuses an oversized reply (its handler's fault): stream reset
            with pytest.raises(PeerUnreachable):
                await b.request(a.peer_id, b"size:%d" % (MAX_FRAME + 1))
            assert await b.request(a.peer_id, b"still there") == b"h1|still there"
        n_seen = len(ha.seen)

        # 3. a raw peer declares an oversized frame: the server resets the stream after
        #    reading only the 4-byte header, and never calls the handler.
        with trio.fail_after(10):
            s = await b.host.new_stream(a.libp2p_id, [b.protocol])
            await s.write(struct.pack(">I", MAX_FRAME + 1) + b"x" * 1000)
            with pytest.raises(Exception):
                while True:  # reset -> StreamReset; or EOF
                    if not await s.read(4096):
                        raise EOFError
            # 4. a truncated frame (header says 100, sends 10, then closes): dropped
            s = await b.host.new_stream(a.libp2p_id, [b.protocol])
            await s.write(struct.pack(">I", 100) + b"y" * 10)
            await s.close_write()
            with pytest.raises(Exception):
                while True:
                    if not await s.read(4096):
                        raise EOFError
            assert len(ha.seen) == n_seen
            assert await b.request(a.peer_id, b"after abuse") == b"h1|after abuse"
            assert ha.seen[-1] == (b.peer_id, b"after abuse")


async def test_requester_refuses_an_oversized_reply_without_reading_it():
    async with hosts(2) as ([evil, b], _):

        async def lying_server(stream):
            await stream.read(4096)
            # declare 1 byte over MAX_FRAME, send only a little, keep the stream open
            await stream.write(struct.pack(">I", MAX_FRAME + 1) + b"q" * 100)
            await trio.sleep_forever()

        evil.host.set_stream_handler(evil.protocol, lying_server)
        with trio.fail_after(10):
            await b.connect(evil.listen_addrs()[0])
            with trio.fail_after(3):  # well before the 5 s request timeout
                with pytest.raises(PeerUnreachable, match="MAX_FRAME"):
                    await b.request(evil.peer_id, b"hi", timeout=5)


async def test_a_raising_handler_does_not_break_the_server():
    async with hosts(2) as ([a, b], [ha, _]):
        with trio.fail_after(10):
            await b.connect(a.listen_addrs()[0])
            for _ in range(3):
                with pytest.raises(PeerUnreachable):
                    await b.request(a.peer_id, b"boom")
                assert await b.request(a.peer_id, b"ok") == b"h1|ok"
        assert a.peers() == [b.peer_id]


async def test_unknown_closed_and_silent_peers_raise_peer_unreachable_in_time():
    async with hosts(2) as ([a, b], _):
        with trio.fail_after(2):
            with pytest.raises(PeerUnreachable, match="no known address"):
                await a.request(public_of(seed(99)), b"?")
            with pytest.raises(PeerUnreachable):
                await a.request(b"short", b"?")

        # A peer that was connected, then shut down.
        async with hosts(1, first=4) as ([d], _):
            with trio.fail_after(10):
                d_addr = d.listen_addrs()[0]
                await a.connect(d_addr)
                assert await a.request(d.peer_id, b"x") == b"h4|x"
        await wait_until(a, lambda: d.peer_id not in a.peers())
        with trio.fail_after(3):
            with pytest.raises(PeerUnreachable):
                await a.request(d.peer_id, b"x", timeout=2)
            with pytest.raises(PeerUnreachable):
                await a.connect(d_addr, timeout=2)

        # A peer whose handler never answers: the request times out on time.
        release = trio.Event()

        async def stuck(peer: bytes, payload: bytes) -> bytes:
            await release.wait()
            return b"late"

        async with open_libp2p_transport(seed(5), stuck) as e:
            with trio.fail_after(10):
                await a.connect(e.listen_addrs()[0])
            t0 = trio.current_time()
            with trio.fail_after(3):
                with pytest.raises(PeerUnreachable, match="timed out"):
                    await a.request(e.peer_id, b"x", timeout=0.5)
            assert trio.current_time() - t0 >= 0.5
            release.set()
            with trio.fail_after(5):
                assert await a.request(e.peer_id, b"x") == b"late"
        # b was never involved and still works
        with trio.fail_after(10):
            await a.connect(b.listen_addrs()[0])
            assert await a.request(b.peer_id, b"fine") == b"h2|fine"


async def test_inbound_handlers_are_bounded():
    inside = 0
    peak = 0
    release = trio.Event()

    async def slow(peer: bytes, payload: bytes) -> bytes:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await release.wait()
        inside -= 1
        return payload

    async with (
        open_libp2p_transport(seed(6), slow, max_inbound=4) as srv,
        open_libp2p_transport(seed(7), slow) as cli,
    ):
        with trio.fail_after(10):
            await cli.connect(srv.listen_addrs()[0])
        results = []

        async def one(i):
            results.append(await cli.request(srv.peer_id, b"%d" % i, timeout=20))

        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                for i in range(10):
                    n.start_soon(one, i)
                await wait_until(
                    srv, lambda: inside == 4 and srv._limiter.statistics().tasks_waiting == 6, 10
                )
                assert peak == 4
                release.set()
        assert sorted(results) == sorted(b"%d" % i for i in range(10))
        assert peak == 4


async def test_inbound_streams_waiting_for_a_handler_are_bounded_too():
    """max_inbound handlers run; max_waiting more streams queue; past that a stream is reset at
    once (the requester sees PeerUnreachable) instead of queueing without bound."""
    inside = 0
    release = trio.Event()

    async def slow(peer: bytes, payload: bytes) -> bytes:
        nonlocal inside
        inside += 1
        await release.wait()
        return payload

    async with (
        open_libp2p_transport(seed(10), slow, max_inbound=2, max_waiting=3) as srv,
        open_libp2p_transport(seed(11), slow) as cli,
    ):
        with trio.fail_after(10):
            await cli.connect(srv.listen_addrs()[0])
        results, refused, three_refused = [], [], trio.Event()

        async def one(i):
            try:
                results.append(await cli.request(srv.peer_id, b"%d" % i, timeout=20))
            except PeerUnreachable:
                refused.append(i)
                if len(refused) == 3:
                    three_refused.set()

        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                for i in range(8):
                    n.start_soon(one, i)
                await wait_until(
                    srv, lambda: inside == 2 and srv._waiting == 3 and srv.refused_inbound == 3, 10
                )
                await three_refused.wait()  # the resets reach the requesters
                release.set()
        assert len(results) == 5 and len(refused) == 3


async def test_no_fd_leak_over_20_start_stop_cycles():
    async def cycle():
        async with hosts(2, first=8) as ([a, b], _):
            with trio.fail_after(10):
                await b.connect(a.listen_addrs()[0])
                assert await b.request(a.peer_id, b"1") == b"h8|1"
                assert await a.request(b.peer_id, b"2") == b"h9|2"

    await cycle()  # warm-up: lazily created process-wide fds (if any) appear here
    before = fd_count()
    for _ in range(20):
        await cycle()
    after = fd_count()
    assert after <= before, f"fds before={before} after={after}"


async def test_unencrypted_dialers_are_refused():
    """py-libp2p's default host also accepts /plaintext/2.0.0, where a dialer merely
    claims a key; ours offers Noise only, so a claimed identity can't get in."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.network.config import ConnectionConfig
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

    async with hosts(1) as ([a], [ha]):
        kp = create_new_key_pair(seed(2))
        evil = new_host(
            key_pair=kp,
            sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(kp)},
            connection_config=ConnectionConfig(max_connections_per_peer=1),
        )
        async with evil.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            try:
                with trio.fail_after(10):
                    with pytest.raises(Exception):
                        await evil.connect(
                            info_from_p2p_addr(multiaddr.Multiaddr(a.listen_addrs()[0]))
                        )
            finally:
                with trio.CancelScope(shield=True):
                    await evil.close()
        assert a.peers() == [] and ha.seen == []


async def test_a_peer_restarted_on_a_new_port_is_reached_at_its_new_address():
    """py-libp2p dials only the first TCP address it holds for a peer: with the dead port of
    the peer's last run still first, a node restarted on a new port stayed unreachable for
    good (the simulator's libp2p cross-check found it). Its newest info's addresses replace the
    old ones."""
    async with hosts(1, first=1) as ([a], _):
        async with hosts(1, first=2) as ([b], _):
            a.add_peer_addrs(b.peer_id, b.listen_addrs())
            with trio.fail_after(10):
                assert await a.request(b.peer_id, b"first run") == b"h2|first run"
        await wait_until(a, lambda: b.peer_id not in a.peers())
        async with hosts(1, first=2) as ([b2], [h2]):  # same key, another port
            assert b2.peer_id == b.peer_id and b2.listen_addrs() != b.listen_addrs()
            a.add_peer_addrs(b2.peer_id, b2.listen_addrs())
            with trio.fail_after(10):
                assert await a.request(b2.peer_id, b"second run") == b"h2|second run"
            assert h2.seen == [(a.peer_id, b"second run")]


async def test_identify_announces_budgetnode_and_its_version():
    """A remote libp2p peer asking identify learns it talks to budgetnode/<version>, not the
    library's default agent."""
    from importlib.metadata import version

    from libp2p.identity.identify.identify import ID as IDENTIFY, parse_identify_response

    async with (
        open_libp2p_transport(seed(40), Recorder(b"a")) as a,
        open_libp2p_transport(seed(41), Recorder(b"b")) as b,
    ):
        with trio.fail_after(10):
            await a.connect(b.listen_addrs()[0])
            stream = await a.host.new_stream(b.libp2p_id, [IDENTIFY])
            data = b""
            while True:
                try:
                    chunk = await stream.read(4096)
                except Exception:  # noqa: BLE001 - the library signals the end by raising
                    break
                if not chunk:
                    break
                data += chunk
            await stream.close()
        assert parse_identify_response(data).agent_version == f"budgetnode/{version('budgetnode')}"
