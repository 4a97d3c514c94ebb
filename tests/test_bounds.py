"""Every table a peer can grow has a limit, and at the limit a policy that a hostile peer cannot
use to evict honest state or to lift a warrant."""

import trio

from node.app.events import EventHub
from node.core import dht
from node.core import warrant as W
from node.core.action import Signed
from node.core.crypto import SigningKey, from_text
from node.net import acceptor as acceptor_module
from node.net import peer_table as peer_table_module
from node.net import protocol as P
from node.net import warrants as warrants_module
from node.net.strikes import Strikes
from node.sdk import LocalCluster


def fork_warrant(offender: SigningKey, issuer: SigningKey, ts: int = 10) -> W.Warrant:
    twins = [Signed.sign({"author": offender.public, "seq": 0, "ts": t}, offender) for t in (1, 2)]
    return W.make("fork", offender.public, "fork", 0, twins, issuer, ts)


async def test_past_max_chains_a_new_author_waits_and_held_chains_stay(
    clock, autojump_clock, monkeypatch
):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory", r=2) as c:
        author, holder = c.nodes
        alice = await author.new_agent()
        await c.await_consistency(timeout=60)
        held = dict(holder.chains)
        monkeypatch.setattr(acceptor_module, "MAX_CHAINS", len(holder.chains))
        bob = await author.new_agent()
        await alice.transmit_understanding("a held chain", "still", "grows")
        with trio.fail_after(60):
            while holder.metrics["chains_full"] == 0 or holder._head(
                from_text("agent", alice.agent_id)
            ) != author._head(from_text("agent", alice.agent_id)):
                await c.wait_changed()
        assert from_text("agent", bob.agent_id) not in holder.chains  # answered busy
        assert held.keys() <= holder.chains.keys()  # nothing evicted
        # room again: the author's publisher, which kept the op, delivers it
        monkeypatch.setattr(acceptor_module, "MAX_CHAINS", len(holder.chains) + 1)
        author._wake_publisher()
        await c.await_consistency(timeout=600)
        assert from_text("agent", bob.agent_id) in holder.chains


async def test_agent_hosts_keep_existing_hints_at_the_bound_and_forget_what_a_peer_dropped(
    clock, autojump_clock, monkeypatch
):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory") as c:
        n0, n1 = c.nodes
        a, b, x = b"a" * 32, b"b" * 32, b"x" * 32
        monkeypatch.setattr(peer_table_module, "MAX_AGENT_HOSTS", len(n0.agent_hosts) + 2)
        n0.peer_table.host_agents(n1.id, (a, b), ())
        n0.peer_table.host_agents(b"p" * 32, (x,), ())  # full: a new hint is not kept...
        assert n0.agent_hosts[a] == n1.id and x not in n0.agent_hosts
        assert n0.metrics["agent_hosts_full"] == 1
        n0.peer_table.host_agents(b"p" * 32, (a,), ())  # ...but a moved agent is re-pointed
        assert n0.agent_hosts[a] == b"p" * 32
        n0.peer_table.host_agents(n1.id, (b,), (a, b))  # n1 no longer names a: not its to drop
        assert n0.agent_hosts[a] == b"p" * 32
        n0.peer_table.host_agents(b"p" * 32, (), (a,))  # p no longer names a: forgotten
        assert a not in n0.agent_hosts and n0.agent_hosts[b] == n1.id


async def test_past_max_warranted_only_offenders_whose_state_is_held_are_kept(
    clock, autojump_clock, monkeypatch
):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory") as c:
        node, other = c.nodes
        issuer = SigningKey(b"\x07" * 32)
        first = fork_warrant(SigningKey(b"\x01" * 32), issuer)
        assert await node.warrant_book.remember(first)
        monkeypatch.setattr(warrants_module, "MAX_WARRANTED", 1)
        stranger = fork_warrant(SigningKey(b"\x02" * 32), issuer)
        assert not await node.warrant_book.remember(stranger)  # made up in bulk: refused
        assert node.metrics["warrants_table_full"] == 1
        assert first.offender in node.warranted  # never evicted
        alice = await other.new_agent()
        await c.await_consistency(timeout=60)
        pub = from_text("agent", alice.agent_id)
        assert pub in node.chains
        cell = other.cells[pub]
        relevant = fork_warrant(cell.key, issuer)  # a chain it holds: kept
        assert await node.warrant_book.remember(relevant) and pub in node.warranted
        peer_w = fork_warrant(other.node_key, issuer)  # a peer it routes to: kept
        assert await node.warrant_book.remember(peer_w) and other.id in node.warranted
        assert len(node.warranted) == 3


class _Node:
    """What the hub reads of a node: its warrants (append-only) and its cells."""

    def __init__(self):
        self.warrants_by_hash = {}
        self.cells = {}


def test_the_event_hub_pushes_each_warrant_once_and_keeps_no_table_of_them():
    node = _Node()
    hub = EventHub(node)
    sub = hub.subscribe(None)
    issuer = SigningKey(b"\x07" * 32)
    sent = []
    for i in range(3):
        for j in range(5):
            w = fork_warrant(SigningKey(bytes([i * 5 + j + 1]) * 32), issuer)
            node.warrants_by_hash[w.hash] = w
            sent.append(w.agent_id)
        hub.scan()
        hub.scan()  # nothing new: nothing queued
    got = []
    while len(sub.queue):
        got.append(sub.queue._items.popleft()["agent_id"])
    assert got == sent
    assert hub._seen == len(node.warrants_by_hash)
    assert not any(
        isinstance(v, (set, dict, list)) and v for k, v in vars(hub).items() if k != "subscribers"
    )


def test_strikes_count_per_window_back_off_and_never_evict_a_backed_off_peer():
    s = Strikes(limit=3, window=10.0, backoff=100.0, max_peers=2)
    a, b, c, d = b"a", b"b", b"c", b"d"
    assert not s.strike(a, 0) and not s.strike(a, 1)
    assert not s.strike(a, 12)  # the window passed: counting starts over
    assert s.count(a) == 1
    assert not s.strike(a, 13) and s.strike(a, 14) and s.backed_off(a, 14)
    assert not s.strike(a, 15)  # already backed off: it is not backed off again
    assert s.backed_off(a, 113) and not s.backed_off(a, 115)
    s2 = Strikes(limit=2, window=10.0, backoff=100.0, max_peers=2)
    s2.strike(a, 0), s2.strike(a, 0)  # a: backed off
    s2.strike(b, 0)  # b: one strike
    s2.strike(c, 1)  # full: b (not backed off) makes room
    assert s2.count(b) == 0 and s2.count(c) == 1 and s2.backed_off(a, 1)
    s2.strike(c, 1)  # c: backed off too
    s2.strike(d, 2)  # full of backed-off peers: d uncounted
    assert s2.untracked == 1 and s2.backed_off(a, 2) and s2.backed_off(c, 2)
    s2.strike(d, 200)  # both expired: room again
    assert s2.count(d) == 1 and len(s2) == 1


async def test_a_full_peer_table_keeps_the_peers_it_knows(clock, autojump_clock, monkeypatch):
    async with LocalCluster.open(n=3, clock=lambda: clock[0], transport="memory") as c:
        node = c.nodes[0]
        known = set(node.peers)
        monkeypatch.setattr(peer_table_module, "MAX_PEERS", len(known))
        stranger = SigningKey(b"\x0f" * 32)
        fresh = P.PeerInfo.parse(dht.peer_info(stranger, node.dna.hash, ["mem://x"], [], 1 << 60))
        assert node.peer_table.add(fresh) is None and set(node.peers) == known
        assert node.metrics["peers_full"] == 1
        # a dead peer leaving makes room
        node.peer_table.drop(c.nodes[1].id)
        assert node.peer_table.add(fresh) == stranger.public


def test_protocol_and_node_bounds_agree():
    assert peer_table_module.MAX_PEERS == P.MAX_PEERS
    assert P.MAX_HAVE == 16 * (P.MAX_PEERS + 1)
