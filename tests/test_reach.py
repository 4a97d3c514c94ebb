"""Discovery and reachability with libp2p's own parts, between real `budgetnode up` processes in
their own network namespaces (sims/netns.py): nodes on one LAN find each other with `--mdns` and
no bootstrap address, and a node that nobody can dial reaches the network, and is reached,
through a circuit relay (`--relay`, `--relay-service`). Each run needs root and `ip netns`, and is
skipped, saying so, only where they are missing. Waits are conditions polled with a bound."""

import os
import re
import subprocess
import sys
import urllib.request

import pytest
import trio

from node.app.client import connect
from node.core.errors import NotFound
from sims import netns
from sims.nemesis_procs import NodeProc

BOUND_S = 60.0  # every wait for a condition; what is measured is printed (pytest -s)
POLL_S = 0.2


needs_netns = pytest.mark.skipif(netns.unavailable() is not None, reason=f"{netns.unavailable()}")


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - our own node's page
        page = r.read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^budgetnode_(\w+) ([0-9.e+-]+)$", page, re.MULTILINE)
    }


async def metrics(p: NodeProc) -> dict[str, float]:
    return await trio.to_thread.run_sync(_scrape, p.info["metrics_url"])


async def until(what: str, check, bound: float = BOUND_S) -> float:
    """Poll `check()` (async, true when the condition holds) until it holds; seconds taken.
    Fails naming `what` past the bound."""
    t0 = trio.current_time()
    with trio.move_on_after(bound):
        while True:
            if await check():
                return trio.current_time() - t0
            await trio.sleep(POLL_S)  # the poll's pace: the condition is in another process
    pytest.fail(f"{what}: not within {bound:.0f} s")


async def holds(p: NodeProc, h: str) -> bool:
    """Node p holds the record `h` (asked as a fresh agent of its own)."""
    async with connect(p.url, token=p.token, connect_timeout=5) as a:
        try:
            await a.get_record(h)
            return True
        except NotFound:
            return False


async def write(p: NodeProc, tag: str) -> str:
    async with connect(p.url, token=p.token, connect_timeout=5) as a:
        return await a.transmit_understanding(tag, "observed", tag)


def init_store(directory) -> None:
    """The network's first node: a store made by `budgetnode init` (a new store on `--mdns`
    takes the network of the first node that answers on the LAN)."""
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "init", "--path", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


async def stop_all(procs) -> None:
    for p in procs:
        code = await p.stop()
        assert code in (0, None) or not p.serving, f"node {p.host} exited {code}"


@needs_netns
async def test_three_nodes_on_one_lan_find_each_other_with_mdns_and_no_bootstrap(tmp_path):
    """Node 0 runs the network's store; nodes 1 and 2 start with new stores, `--mdns` and no
    bootstrap address (pinned by --dna-hash): each takes the network from a node it found, joins
    it through the same hello as a bootstrap address, and a write on any node reaches the others.
    A node of another network on the same LAN finds them too and is refused by that hello."""
    lan = netns.Lan()
    procs: list[NodeProc] = []
    try:
        for _ in range(4):
            lan.add_host()
        procs = [NodeProc(lan, i, str(tmp_path / f"node{i}")) for i in range(3)]
        other = NodeProc(lan, 3, str(tmp_path / "other"))  # a node of another network
        init_store(procs[0].directory)
        init_store(other.directory)
        await procs[0].start([], ("--mdns",))
        t0 = trio.current_time()
        async with trio.open_nursery() as n:
            for p in procs[1:]:
                n.start_soon(p.start, [], ("--mdns", "--dna-hash", procs[0].info["dna"]))
            n.start_soon(other.start, [], ("--mdns",))
        procs.append(other)
        started = trio.current_time() - t0

        async def all_know_each_other():
            return [(await metrics(p)).get("peers") for p in procs[:3]] == [2, 2, 2]

        found = await until("every node knows the other two", all_know_each_other)
        assert {p.info["dna"] for p in procs[:3]} == {procs[0].info["dna"]}
        for p in procs[1:3]:
            assert (await metrics(p)).get("peers_found_joined_total", 0) >= 1  # mDNS, not luck

        # The other network's node found them too, and the hello (the DNA check) kept it out,
        # on both sides: discovery hands over addresses, it admits no one.
        async def other_was_refused():
            return (await metrics(other)).get("join_failures_total", 0) >= 3

        await until("the other network's node tried all three", other_was_refused)
        assert (await metrics(other)).get("peers") == 0
        assert [(await metrics(p)).get("peers") for p in procs[:3]] == [2, 2, 2]

        h2 = await write(procs[2], "mdns-2")
        seen_0 = await until("node 2's write at node 0", lambda: holds(procs[0], h2))
        h0 = await write(procs[0], "mdns-0")
        await until("node 0's write at node 1", lambda: holds(procs[1], h0))
        print(
            f"\nmdns: nodes 1-2 up in {started:.1f} s, all peers known {found:.1f} s later; "
            f"a write visible at another node in {seen_0:.2f} s"
        )
    finally:
        try:
            await stop_all(procs)
        finally:
            lan.close()


@needs_netns
async def test_a_node_only_the_relay_can_reach_writes_and_is_reached_through_the_relay(tmp_path):
    """Two LANs. A: the relay R (`--relay-service`) and node C. B: node N, whose only route
    leads to R (R has a foot on both LANs, and N a host route to R's address on A); C has no
    route to N, N none to C. N runs `--relay R`: it joins through R, and C reaches N through R's
    `/p2p-circuit` address. N's write is held by C, C's write by N, and C dialled N through
    the relay; after the relay restarts, N reserves again and C reaches it again."""
    lan_a, lan_b = netns.Lan(), None
    procs: list[NodeProc] = []
    try:
        lan_b = netns.Lan()
        lan_a.add_host()  # R
        lan_a.add_host()  # C
        lan_b.add_host()  # N
        r_on_b = lan_b.attach(lan_a.ns(0))
        lan_b.route(0, lan_a.address(0), lan_b.address(r_on_b))
        relay = NodeProc(lan_a, 0, str(tmp_path / "relay"))
        c = NodeProc(lan_a, 1, str(tmp_path / "c"))
        n = NodeProc(lan_b, 0, str(tmp_path / "n"))
        procs = [relay, c, n]
        init_store(relay.directory)
        await relay.start([], ("--relay-service",))
        await c.start([relay.addr])
        t0 = trio.current_time()
        await n.start([], ("--relay", relay.addr))
        started = trio.current_time() - t0
        assert n.info["listen"] == [f"{relay.addr}/p2p-circuit/p2p/{n.info['peer_id']}"]
        assert await _cannot_dial(lan_a, 1, lan_b.address(0))  # C has no way to N but R

        h = await write(n, "relayed-n")
        seen = await until("N's write at C", lambda: holds(c, h))
        h_c = await write(c, "relayed-c")
        back = await until("C's write at N", lambda: holds(n, h_c))

        async def c_dialled_n_through_the_relay():
            m = await metrics(c)
            return m.get("relayed_dials_total", 0) >= 1 and m.get("peers") == 2

        await until("C dialled N through the relay", c_dialled_n_through_the_relay)

        # The relay restarts (same store, port and id) and forgets N's reservation and every
        # circuit: N reserves again, and C reaches N through it again.
        before = (await metrics(c)).get("relayed_dials_total", 0)
        assert await relay.stop() == 0
        t1 = trio.current_time()
        await relay.start([], ("--relay-service",))
        h_again = await write(c, "relayed-c-again")
        await until("C's write at N after the relay restarted", lambda: holds(n, h_again))

        async def dialled_again():
            return (await metrics(c)).get("relayed_dials_total", 0) > before

        await until("C dialled N through the restarted relay", dialled_again)
        assert (await metrics(n)).get("relay_reservations_total", 0) >= 2  # it reserved again
        again = trio.current_time() - t1
        print(
            f"\nrelay: N up in {started:.1f} s; N's write visible at C in {seen:.2f} s, "
            f"C's at N in {back:.2f} s; after the relay's restart N reached again in {again:.1f} s"
        )
    finally:
        try:
            await stop_all(procs)
        finally:
            lan_a.close()
            if lan_b is not None:
                lan_b.close()


async def _cannot_dial(lan, i: int, address: str) -> bool:
    """Host i has no route to `address` (a TCP connect fails at once: no route)."""
    probe = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(3)\n"
        f"sys.exit(0 if s.connect_ex(({address!r}, {os.getpid() % 1000 + 4000})) in "
        "(101, 113) else 1)\n"  # ENETUNREACH, EHOSTUNREACH
    )
    done = await trio.run_process(
        [*lan.exec_prefix(i), sys.executable, "-c", probe], check=False, capture_stderr=True
    )
    return done.returncode == 0
