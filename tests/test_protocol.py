"""The typed wire protocol: every request and reply is parsed once, at the edge, or refused with
MalformedInput; and a peer's malformed reply or request costs that peer, never the node that
received it."""

import copy

import pytest
import trio
import trio.testing

from node.core import dht
from node.core import warrant as W
from node.core.action import Signed, grant_body
from node.core.crypto import SigningKey, from_text
from node.core.encoding import decode, encode, encode_trusted
from node.core.errors import BudgetError, InviteUsed, MalformedInput
from node.core.witness import make_invite
from node.net import protocol as P
from node.net.messages import MAX_OPS_PER_MESSAGE
from node.net.node import fetch_dna
from node.net.peer_table import MALFORMED_BACKOFF_S, MAX_MALFORMED
from node.sdk import LocalCluster

DNA = b"\xd0" * 32
KEY = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)


def info(key=KEY, agents=(), addrs=("mem://x",), ts=5):
    return dht.peer_info(key, DNA, list(addrs), list(agents), ts)


def action(seq=0, key=KEY, ts=1):
    return Signed.sign({"author": key.public, "seq": seq, "ts": ts}, key)


def a_warrant(kind="fork"):
    twins = [action(0, OTHER, t) for t in (1, 2)]
    return W.make(kind, OTHER.public, "fork", 0, twins, KEY, 10).to_wire()


def publish_fields(n=2):
    ops = [
        [s.body, s.sig, b"entry" if i else None, None, [KEY.public], None]
        for i, s in enumerate(action(i) for i in range(n))
    ]
    return {"ops": ops, "batch": W.sign_batch(ops, OTHER.public, 7, KEY)}


# A good example of every request, as this node builds it, keyed by type.
REQUESTS = {
    "dna": {},
    "hello": {"info": info(), "dropped": True},
    "peers": {"info": info(), "digest": b"d" * 16, "have": b"h" * 32},
    "publish": publish_fields(),
    "chain": {"author": KEY.public, "from": 0, "limit": 3},
    "record": {"hash": b"r" * 32},
    "summary": {"heads": [[KEY.public, 3, b"h" * 32]], "warranted": [OTHER.public]},
    "warrants": {"warrants": [a_warrant()]},
    "grant": {
        "grant": grant_body(DNA, KEY.public, OTHER.public, 5000, 9, b"n" * 16),
        "sig": b"s" * 64,
    },
    "witness": {
        "agent": OTHER.public,
        "prev": None,
        "invite": make_invite(KEY, DNA, b"n" * 16, "for bob", 7),
    },
    "offer": {"offer": [action().body, action().sig]},
}

# ...and of every reply.
REPLIES = {
    "dna": {"dna": encode({"name": "x"})},
    "hello": {"info": info()},
    "peers": {"infos": [info(), info(OTHER)], "have": b"h" * 16},
    "publish": {"results": [[b"a" * 32, "valid", b"r" * 64], [b"b" * 32, "pending", None]]},
    "chain": {
        "records": [[action().body, action().sig, None], [action(1).body, action(1).sig, b"entry"]]
    },
    "record": {"record": [action().body, action().sig, b"entry"]},
    "summary": {
        "heads": [[KEY.public, 0, b"h" * 32]],
        "warrants": [a_warrant()],
        "warranted": [OTHER.public],
    },
    "warrants": {"ok": True},
    "grant": {"granted": 5000},
    "witness": {"by": KEY.public, "at": 9, "sig": b"s" * 64},
    "offer": {"taken": True},
}


def test_the_examples_cover_every_request_type():
    assert REQUESTS.keys() == REPLIES.keys() == P.REQUESTS.keys() == P.REPLIES.keys()


@pytest.mark.parametrize("t", sorted(REQUESTS))
def test_every_request_parses_into_its_typed_immutable_message(t):
    got, msg = P.parse_request(P.request(t, DNA, **REQUESTS[t]), DNA)
    assert got == t
    assert type(msg).__name__.lower() == t + "request"
    with pytest.raises((AttributeError, TypeError)):  # frozen, with slots
        msg.anything = 1


@pytest.mark.parametrize("t", sorted(REPLIES))
def test_every_reply_parses_into_its_typed_message(t):
    rep = P.parse_reply(t, P.reply(**REPLIES[t]))
    assert type(rep).__name__ in (t.capitalize() + "Reply", "OkReply")


def test_typed_fields_carry_what_was_sent():
    _, pub = P.parse_request(P.request("publish", DNA, **REQUESTS["publish"]), DNA)
    assert [op.action.seq for op in pub.ops] == [0, 1] and pub.ops[1].entry == b"entry"
    assert pub.ops[0].told == (KEY.public,) and pub.ops[0].vouch is None
    assert pub.batch.to == OTHER.public
    assert pub.batch.to_wire() == REQUESTS["publish"]["batch"]
    rep = P.parse_reply("publish", P.reply(**REPLIES["publish"]))
    assert [(r.hash, r.status, r.receipt) for r in rep.results] == [
        (b"a" * 32, "valid", b"r" * 64),
        (b"b" * 32, "pending", None),
    ]
    _, hello = P.parse_request(P.request("hello", DNA, **REQUESTS["hello"]), DNA)
    assert hello.info.to_wire() == REQUESTS["hello"]["info"] and hello.dropped is True
    _, ws = P.parse_request(P.request("warrants", DNA, **REQUESTS["warrants"]), DNA)
    assert ws.warrants[0].to_wire() == REQUESTS["warrants"]["warrants"][0]
    assert W.from_wire(ws.warrants[0].to_wire()) is not None  # re-encodes to what was signed


def _set(m, path, value):
    m = copy.deepcopy(m)
    obj = m
    for k in path[:-1]:
        obj = obj[k]
    if value is DELETE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return m


DELETE = object()
BAD_REQUESTS = [
    ("hello", ("info",), DELETE),  # missing field
    ("hello", ("info",), [1, 2]),  # wrong nesting
    ("hello", ("info", "body", "peer"), b"short"),  # wrong length
    ("hello", ("info", "body", "ts"), "5"),  # wrong type
    ("hello", ("info", "body", "addrs"), ["a"] * 17),  # over-long list
    ("hello", ("info", "body", "extra"), 1),  # unknown field
    ("hello", ("dropped",), "yes"),
    ("peers", ("have",), b"not 16 bytes"),
    ("peers", ("push",), [info()] * (P.MAX_PEERS_PER_MESSAGE + 1)),
    ("peers", ("digest",), 5),
    ("publish", ("ops",), "zzz"),
    ("publish", ("ops",), [[b"x"]]),
    ("publish", ("ops", 0, 0), b"\xff\xfe"),  # an action that does not decode
    ("publish", ("ops", 0, 1), b"sig"),  # a signature of the wrong length
    ("publish", ("ops", 0, 2), 5),  # an entry that is not bytes
    ("publish", ("ops", 0, 3), [b"x"]),  # a prev of the wrong shape
    ("publish", ("ops", 0, 4), [b"k" * 32] * (P.MAX_TOLD + 1)),
    ("publish", ("ops", 0, 5), [[b"k" * 32, b"r" * 64]] * (P.MAX_VOUCHES + 1)),
    ("publish", ("ops", 0, 5), [[b"k" * 32]]),
    ("publish", ("batch",), None),
    ("publish", ("batch", "hashes"), []),  # does not match its ops
    ("chain", ("author",), 5),
    ("chain", ("from",), -1),
    ("chain", ("limit",), 0),
    ("chain", ("limit",), MAX_OPS_PER_MESSAGE + 1),
    ("chain", ("limit",), DELETE),
    ("record", ("hash",), "h"),
    ("summary", ("heads",), 5),
    ("summary", ("heads",), [[KEY.public, "3", b"h" * 32]]),
    ("summary", ("heads",), [[KEY.public, 3]]),
    ("summary", ("warranted",), [b"k"]),
    ("summary", ("heads",), [[KEY.public, 0, b"h" * 32]] * (P.MAX_SUMMARY_AUTHORS + 1)),
    ("warrants", ("warrants",), [a_warrant()] * (P.MAX_WARRANTS_PER_MESSAGE + 1)),
    ("warrants", ("warrants", 0, "body", "kind"), "lie"),
    ("warrants", ("warrants", 0, "body", "evidence"), []),
    ("warrants", ("warrants", 0, "body", "evidence", 0), [b"x", b"y", b"z"]),
    ("grant", ("grant", "amount"), -1),
    ("grant", ("grant", "grantee"), None),
    ("grant", ("sig",), DELETE),
    ("witness", ("agent",), b"short"),
    ("witness", ("prev",), b"p" * 33),
    ("witness", ("prev",), DELETE),
    ("witness", ("invite",), "inv_text"),  # the invite's map, not its text form
    ("witness", ("invite", "body", "note"), "n" * 257),
    ("witness", ("invite", "body", "nonce"), b"n" * 33),
    ("witness", ("invite", "body", "dna"), b"d" * 1000),
    ("witness", ("invite", "body", "extra"), 1),
    ("witness", ("invite", "sig"), b"s"),
    ("witness", ("extra",), 1),
]


@pytest.mark.parametrize("t,path,value", BAD_REQUESTS)
def test_a_malformed_request_is_refused_with_malformed_input(t, path, value):
    raw = encode_trusted({"t": t, "dna": DNA, **_set(REQUESTS[t], path, value)})
    with pytest.raises(MalformedInput):
        P.parse_request(raw, DNA)


def test_frames_that_are_not_requests_are_malformed_and_other_networks_are_refused():
    for raw in (b"", b"\xff\xfe", encode([1]), encode({"t": 5})):
        with pytest.raises(MalformedInput):
            P.parse_request(raw, DNA)
    with pytest.raises(P.ProtocolError, match="another network"):
        P.parse_request(P.request("chain", b"x" * 32, **REQUESTS["chain"]), DNA)
    with pytest.raises(P.ProtocolError, match="unknown request"):
        P.parse_request(P.request("nope", DNA), DNA)


BAD_REPLIES = [
    ("dna", ("dna",), 5),
    ("hello", ("info",), None),
    ("peers", ("infos",), [info()] * (P.MAX_PEERS_PER_MESSAGE + 2)),
    ("peers", ("have",), b"odd"),
    ("publish", ("results",), [[b"x"]]),  # crash 1 of issue 14
    ("publish", ("results",), [[b"a" * 32, "forged", None]]),  # not a status anyone sends
    ("publish", ("results",), [[b"a" * 32, "valid", b"short"]]),
    ("publish", ("results",), [[b"a" * 32, "valid", None]] * (MAX_OPS_PER_MESSAGE + 1)),
    ("chain", ("records",), [[b"x", b"y"]]),
    ("chain", ("records",), 7),
    ("record", ("record",), [action().body]),
    ("summary", ("heads",), 5),  # crash 2 of issue 14
    ("summary", ("warrants",), [{"body": {}, "sig": b""}]),
    ("summary", ("warranted",), DELETE),
    ("warrants", ("ok",), False),
    ("grant", ("granted",), "lots"),
    ("grant", ("granted",), DELETE),
    ("witness", ("at",), -1),
    ("witness", ("by",), b"k" * 31),
    ("witness", ("sig",), DELETE),
]


@pytest.mark.parametrize("t,path,value", BAD_REPLIES)
def test_a_malformed_reply_is_refused_with_malformed_input(t, path, value):
    with pytest.raises(MalformedInput):
        P.parse_reply(t, encode_trusted(_set(REPLIES[t], path, value)))


def test_a_refusal_is_a_protocol_error_not_a_malformed_reply():
    with pytest.raises(P.ProtocolError, match="peer refused"):
        P.parse_reply("chain", P.error_reply(P.ProtocolError("no")))
    with pytest.raises(MalformedInput):
        P.parse_reply("chain", encode([1, 2]))


def test_a_refusal_carries_the_peers_code_and_message():
    with pytest.raises(P.ProtocolError) as e:
        P.parse_reply("witness", P.error_reply(InviteUsed("this invite already admitted x")))
    assert e.value.peer_code == "E_INVITE_USED"
    assert e.value.peer_message == "this invite already admitted x"
    with pytest.raises(P.ProtocolError) as e:  # whatever a hostile peer says stays text, bounded
        P.parse_reply("witness", encode({"err": ["x"] * 100, "msg": 5}))
    assert e.value.peer_code.startswith("['x'") and len(e.value.peer_code) <= 64


def test_a_witness_request_carries_the_invite_as_signed():
    _, w = P.parse_request(P.request("witness", DNA, **REQUESTS["witness"]), DNA)
    assert w.agent == OTHER.public and w.prev is None
    assert w.invite.to_wire() == REQUESTS["witness"]["invite"]  # re-encodes to what was signed
    rep = P.parse_reply("witness", P.reply(**REPLIES["witness"]))
    assert rep.to_wire() == REPLIES["witness"]


# -- on a two-node in-memory cluster, under virtual time


async def until(cond, cluster, timeout=3000):
    with trio.fail_after(timeout):
        while not cond():
            await cluster.wait_changed()


def hostile(cluster, node, answers):
    """Make `node` answer requests of the types in `answers` with those (malformed) replies,
    until the returned switch is turned off. It serves everything else honestly."""
    real = cluster.network.handlers[node.id]
    switch = {"on": True}

    async def handler(peer, raw):
        t = decode(raw, canonical=False)["t"]
        if switch["on"] and t in answers:
            return encode_trusted(answers[t])
        return await real(peer, raw)

    cluster.network.handlers[node.id] = handler
    return switch


@pytest.mark.parametrize(
    "t,answer",
    [
        ("publish", {"results": [[b"x"]]}),
        ("summary", {"heads": 5, "warrants": [], "warranted": []}),
    ],
)
async def test_a_malformed_reply_costs_its_sender_not_the_honest_node(
    clock, autojump_clock, t, answer
):
    """Issue 14: one such reply made the honest node's nursery fail, and NetNode.open exit."""
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory", r=2) as c:
        honest, liar = c.nodes
        alice = await honest.new_agent()
        await c.await_consistency(timeout=60)
        switch = hostile(c, liar, {t: answer})
        for i in range(3):
            await alice.transmit_understanding("written", "while the peer lies", str(i))
        # the honest node keeps running: its malformed-reply count rises and, past the bound,
        # it drops and backs off the liar
        await until(lambda: honest.peer_table.backed_off(liar.id), c)
        assert liar.id not in honest.peers
        assert honest.metrics["malformed_replies"] >= MAX_MALFORMED
        assert honest.peer_table.malformed_count(liar.id) >= MAX_MALFORMED
        assert honest.metrics["peers_backed_off"] == 1
        with pytest.raises(P.ProtocolError, match="backed off"):  # its requests are refused
            await liar._request(honest.id, "chain", author=liar.id, **{"from": 0}, limit=1)
        # ...and keeps serving: its own agents, and anyone else who asks
        await alice.transmit_understanding("still", "writing", "on")
        pub = from_text("agent", alice.agent_id)

        async def silent(peer, raw):
            return P.error_reply(P.ProtocolError("not serving"))

        async with c.network.transport(b"\x33" * 32, silent) as other:
            raw = await other.request(
                honest.id, P.request("chain", honest.dna.hash, author=pub, **{"from": 0}, limit=8)
            )
        head = honest._head(pub)
        assert [r.action.seq for r in P.parse_reply("chain", raw).records] == list(
            range(head[0] + 1)
        )
        assert honest.warranted == {} and liar.warranted == {}  # garbage proves nothing
        # Once the peer behaves (and its backoff is over) the cluster converges.
        switch["on"] = False
        await until(lambda: liar.id in honest.peers and not c.lagging(), c)
        assert len(set(c.state_hashes())) == 1
        assert liar._head(pub) == honest._head(pub)


async def test_malformed_requests_cost_their_sender_and_back_it_off(clock, autojump_clock):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory") as c:
        honest, liar = c.nodes
        await until(lambda: liar.id in honest.peers, c)
        bad = encode_trusted(
            {"t": "chain", "dna": honest.dna.hash, "author": 5, "from": 0, "limit": 1}
        )
        for i in range(MAX_MALFORMED):
            out = await liar.transport.request(honest.id, bad)
            assert b"E_MALFORMED" in out
            assert honest.peer_table.malformed_count(liar.id) == i + 1
        assert honest.metrics["malformed_requests"] == MAX_MALFORMED
        assert liar.id not in honest.peers and honest.peer_table.backed_off(liar.id)
        # backed off: even a good request is refused unread, and its infos are not taken back
        good = P.request("chain", honest.dna.hash, author=liar.id, **{"from": 0}, limit=1)
        assert b"backed off" in await liar.transport.request(honest.id, good)
        assert honest.peer_table.add(P.PeerInfo.parse(liar.peer_table.my_info())) is None
        # ...until the backoff is over
        await trio.sleep(MALFORMED_BACKOFF_S)
        assert P.parse_reply(
            "chain", await liar.transport.request(honest.id, good)
        ) == P.ChainReply(records=())  # served, not refused
        await until(lambda: liar.id in honest.peers, c)


async def test_every_message_a_cluster_sends_parses_with_the_typed_protocol(clock, autojump_clock):
    """What this node builds and what it parses are one set of shapes: every request and reply a
    working cluster exchanges (joins, publishing, gossip, warrants, grants, offers) parses."""
    async with LocalCluster.open(n=3, clock=lambda: clock[0], transport="memory", rogue=(2,)) as c:
        seen, news = set(), [trio.Event()]
        for n in c.nodes:
            real = c.network.handlers[n.id]

            async def checked(peer, raw, real=real, n=n):
                out = await real(peer, raw)
                t, _ = P.parse_request(raw, n.dna.hash)
                if b"err" not in out[:8]:
                    P.parse_reply(t, out)
                seen.add(t)
                news[0].set()
                return out

            c.network.handlers[n.id] = checked
        agents = [await n.new_agent() for n in c.nodes]
        for a in agents:
            await a.transmit_understanding("every", "message", "parses")
        for i in range(8):  # the rogue (node 2) over-spends: a warrant spreads
            try:
                await agents[2].add_knowledge(f"free ride {i}")
            except BudgetError:
                break
        await c.await_consistency(timeout=120)
        granted = await c.nodes[0].steward.allocate_budget(agents[1].agent_id, 50)
        assert granted.claimed  # asked of the grantee's node
        clock[0] += 86_400  # a day on: node 1's agent's next write asks node 0 for a witness
        await agents[1].add_knowledge("a new window")
        await fetch_dna(c.network.transport, c.nodes[1].transport.listen_addrs()[0])
        s = c.nodes[1].store.chain(from_text("agent", agents[1].agent_id))[-1]
        await c.nodes[0]._request(c.nodes[1].id, "record", hash=s.hash)
        # an offer: a budget minted on node 0 for node 1's agent
        await c.nodes[0].steward.mint_budget({"ru": 10}, holder=agents[1].agent_id)
        await c.nodes[0]._request(
            c.nodes[1].id, "chain", author=s.author, **{"from": 0}, limit=P.MAX_OPS_PER_MESSAGE
        )
        with trio.fail_after(600):  # gossip rounds bring summaries and peer swaps
            while not P.REQUESTS.keys() <= seen:
                news[0] = trio.Event()
                await news[0].wait()
        assert any(n.warranted for n in c.nodes[:2])


async def test_a_background_task_that_fails_on_peer_data_does_not_stop_the_node(
    clock, autojump_clock
):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory") as c:
        node = c.nodes[0]

        async def unpack_garbage():
            _h, _status, _receipt = [b"x"]  # what peer data did to the publisher in issue 14

        node._spawn(unpack_garbage)
        await trio.testing.wait_all_tasks_blocked()
        assert node.metrics["task_errors"] == 1 and "ValueError" in node.last_task_error
        alice = await node.new_agent()  # still running, still publishing
        await alice.transmit_understanding("the node", "survived", "its task")
        await c.await_consistency(timeout=60)


async def test_every_fetch_treats_a_malformed_reply_as_no_answer(clock, autojump_clock):
    """The chain, record and prev fetches, warrant proofs, hello, peer swaps and grants each
    unpacked replies as the publisher and gossip did: each now gets no answer instead."""
    async with LocalCluster.open(
        n=2, clock=lambda: clock[0], transport="memory", r=2, gossip_interval=1e6
    ) as c:
        honest, liar = c.nodes
        bob = await liar.new_agent()
        await bob.transmit_understanding("bob", "writes", "twice")
        await c.await_consistency(timeout=60)
        pub = from_text("agent", bob.agent_id)
        s = liar.dht.action_at(pub, 1)
        garbage = {
            "records": [[b"x"]],
            "record": [b"x"],
            "info": 5,
            "infos": [5],
            "granted": "lots",
            "results": 5,
        }
        hostile(c, liar, {t: garbage for t in ("chain", "record", "hello", "peers", "grant")})
        before = honest._head(pub)
        assert await honest.warrant_book.fetch_prefix(pub, 2, liar.id) == []
        await honest.acceptor.fetch_chain(pub, liar.id)
        await honest.acceptor.check_fork_at(pub, liar.id, 0)
        assert liar.id not in honest.peers  # three failed exchanges in a row: dropped
        assert await honest.acceptor.prev_of(s, liar.id, None) is None
        with pytest.raises(BudgetError):
            await honest.peer_table.hello(liar.id)
        with pytest.raises(BudgetError):
            await honest.peer_table.refresh(liar.id)
        g = await honest.steward.allocate_budget(bob.agent_id, 50)
        assert not g.claimed  # no answer from the grantee's node: it claims the record later
        assert honest._head(pub) == before and honest.warranted == {}
        assert honest.metrics["malformed_replies"] == 7
        assert honest.peer_table.malformed_count(liar.id) == 7
        # and the honest node, still running, writes and is served as before
        alice = await honest.new_agent()
        await alice.transmit_understanding("alice", "is", "fine")
