"""Circuit relay v2 through the libp2p transport, over real loopback sockets in one process: a
node that holds a reservation at a relay advertises only its address through it, and a third
host reaches it there, authenticated end to end, with replies both ways on the one relayed
connection. (Between network namespaces, with real processes: tests/test_reach.py.)

No fixed sleeps: every wait is on a condition, bounded by trio.fail_after. Hosts are entered
outside any fail_after (LIBP2P-NOTES trap 6)."""

from __future__ import annotations

import hashlib

import pytest
import trio

pytest.importorskip("libp2p")

import multiaddr  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402

from node.net.libp2p_reach import join_address  # noqa: E402
from node.net.libp2p_transport import open_libp2p_transport  # noqa: E402
from node.net.transport import PeerUnreachable  # noqa: E402


def seed(i: int) -> bytes:
    return hashlib.sha256(b"budgetnode-reach-peer-%d" % i).digest()


async def wait_until(transport, cond, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await transport.wait_changed()


def echo(name: bytes):
    async def handler(peer: bytes, payload: bytes) -> bytes:
        return name + b":" + peer[:4] + b":" + payload

    return handler


async def test_a_node_behind_a_relay_is_reached_only_through_it():
    async with open_libp2p_transport(seed(0), echo(b"R"), relay_service=True) as relay:
        via = relay.listen_addrs()[0]
        async with (
            open_libp2p_transport(seed(1), echo(b"N"), relay=via) as behind,
            open_libp2p_transport(seed(2), echo(b"C")) as third,
        ):
            assert behind.relaying is not None
            await wait_until(behind, lambda: behind.relaying.reserved)
            pid = behind.host.get_id()
            assert behind.listen_addrs() == [f"{via}/p2p-circuit/p2p/{pid}"]
            assert behind.metrics["relay_reservations"] == 1

            # the third host knows only the circuit address: it dials through the relay, and
            # Noise proves the key at the far end is the node's
            key = await third.connect(behind.listen_addrs()[0])
            assert key == behind.peer_id
            assert await third.request(key, b"hi") == b"N:" + third.peer_id[:4] + b":hi"
            assert third.metrics["relayed_dials"] == 1
            conns = third.host.get_network().get_connections(pid)
            assert conns and all("/p2p-circuit" in str(a) for a in _addrs(conns[0]))
            # the node behind the relay answers back over the connection the third host opened
            assert await behind.request(third.peer_id, b"yo") == b"C:" + behind.peer_id[:4] + b":yo"


async def test_py_libp2p_s_own_dial_skips_circuit_addresses_so_the_transport_dials_them():
    """Why `Libp2pTransport._dial` routes circuits itself: py-libp2p 0.8.1's swarm drops every
    `/p2p-circuit` address (`Swarm.dial_peer`), even with a circuit transport on the host. If
    this starts failing, py-libp2p dials circuits itself and `_dial` may hand them back."""
    from libp2p.peer.peerinfo import PeerInfo

    async with open_libp2p_transport(seed(6), echo(b"R"), relay_service=True) as relay:
        via = relay.listen_addrs()[0]
        async with (
            open_libp2p_transport(seed(7), echo(b"N"), relay=via) as behind,
            open_libp2p_transport(seed(8), echo(b"C")) as third,
        ):
            await wait_until(behind, lambda: behind.relaying.reserved)
            pid = behind.host.get_id()
            circuit = multiaddr.Multiaddr(f"{via}/p2p-circuit")
            with pytest.raises(Exception, match="relay-only"):
                await third.host.connect(PeerInfo(pid, [circuit]))
            assert await third.connect(behind.listen_addrs()[0]) == behind.peer_id


async def test_without_a_reservation_the_relay_refuses_the_circuit():
    async with open_libp2p_transport(seed(3), echo(b"R"), relay_service=True) as relay:
        via = relay.listen_addrs()[0]
        async with open_libp2p_transport(seed(4), echo(b"X")) as nobody:
            async with open_libp2p_transport(seed(5), echo(b"C")) as third:
                circuit = f"{via}/p2p-circuit/p2p/{nobody.host.get_id()}"
                with pytest.raises(PeerUnreachable):
                    await third.connect(circuit)
                assert third.metrics["relayed_dial_failures"] == 1


def _addrs(conn) -> list:
    try:
        return list(conn.get_transport_addresses())
    except Exception:  # noqa: BLE001 - older connections name no transport addresses
        return []


def test_a_found_peer_is_joined_at_its_lan_address_not_at_loopback_nor_through_a_relay():
    pid = ID.from_base58("12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp")
    m = multiaddr.Multiaddr
    lan, lo = m("/ip4/192.168.1.20/tcp/4001"), m("/ip4/127.0.0.1/tcp/4001")
    assert join_address(pid, [lo, lan]) == f"/ip4/192.168.1.20/tcp/4001/p2p/{pid}"
    assert join_address(pid, [lo]) == f"/ip4/127.0.0.1/tcp/4001/p2p/{pid}"
    circuit = m(f"/ip4/10.0.0.1/tcp/1/p2p/{pid}/p2p-circuit")
    assert join_address(pid, [circuit]) is None
    assert join_address(pid, [m("/ip4/192.168.1.20/udp/4001")]) is None


async def test_a_new_store_that_finds_no_node_of_its_network_on_the_lan_says_what_to_do():
    """`up --mdns` on a new store takes the network of a node found on the LAN; with none of the
    pinned network answering (any found here are of other networks) it stops, naming the fix."""
    from node.net.cluster import libp2p_factory
    from node.net.node import find_dna

    look = libp2p_factory(mdns=True, announce=False)
    with pytest.raises(PeerUnreachable, match="budgetnode init --path DIR") as e:
        await find_dna(look, b"\x07" * 32, timeout=1.0)
    assert "no node of that network answered on the LAN within 1 s" in str(e.value)
