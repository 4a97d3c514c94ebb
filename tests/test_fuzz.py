"""Fuzzing the wire: every request type, with arbitrary CBOR in its fields and with near-valid
mutations of real messages, fed to a live node's request handler; and a peer whose replies are
garbage while an honest node publishes, gossips, fetches chains and records.

Real messages come from one 3-node cluster run (node 2 over-spends, so a warrant is among them);
each example opens nodes 0 and 1 again from copies of those stores (on /dev/shm where there is
one: a store on disk costs its syncs), on the in-memory transport and trio's virtual clock, with
trio's scheduling made deterministic.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from node.core.crypto import to_text
from node.core.encoding import decode, encode_trusted
from node.core.errors import BudgetError
from node.net import protocol as P
from node.net.cluster import LocalCluster
from node.net.transport import MAX_FRAME
from sims.byzantine import REPLY_FIELDS, REQUEST_FIELDS
from sims.sim import memory_backed_dir, deterministic_trio

from conftest import START

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TYPES = sorted(P.REQUESTS)


def _now():
    return float(START)


# -- real messages, captured once
@functools.lru_cache(maxsize=1)
def captured() -> tuple[str, dict, dict]:
    """(the stores' directory, {t: [request bytes]}, {t: [reply bytes]}) from a 3-node cluster
    run in which every request type was sent at least once."""
    root = tempfile.mkdtemp(prefix="budgetnode-fuzz-", dir=memory_backed_dir())
    requests: dict[str, list] = {t: [] for t in TYPES}
    replies: dict[str, list] = {t: [] for t in TYPES}

    async def main():
        paths = [os.path.join(root, f"n{i}") for i in range(3)]
        async with LocalCluster.open(
            n=3, transport="memory", clock=_now, paths=paths, rogue={2: "skip_preflight"}
        ) as c:
            for node in c.nodes:
                inner = c.network.handlers[node.id]

                async def recording(peer, raw, inner=inner):
                    reply = await inner(peer, raw)
                    t = decode(raw, MAX_FRAME, canonical=False)["t"]
                    if len(requests[t]) < 16:
                        requests[t].append(raw)
                        replies[t].append(reply)
                    return reply

                c.network.handlers[node.id] = recording
            n0, n1, n2 = c.nodes
            alice, bob, rogue = [await n.new_agent() for n in c.nodes]
            await alice.add_knowledge("river")
            await bob.transmit_understanding("river", "carries", "silt")
            for _ in range(4):  # 132 RU of writes on a 100 RU budget: node 2 skips its pre-flight
                await rogue.add_knowledge("fog")
            await c.await_consistency(timeout=60)
            await n0.steward.allocate_budget(bob.agent_id, 50)
            h = bob._cell.state.hash
            await n0._request(n1.id, "record", hash=h)
            await n0._request(n1.id, "chain", author=bob._cell.key.public, **{"from": 0}, limit=8)
            await n0.transport.request(n1.id, P.request("dna", b""))
            # witness requests, to the steward's node: one for a window, one with an invite
            await n1._request(n0.id, "witness", agent=bob._cell.key.public, prev=h, invite=None)
            await n1.new_agent(invite=await n0.steward.invite(note="fuzz"))
            # an offer: a budget minted on node 0 for node 1's agent
            await n0.steward.mint_budget({"ru": 10}, holder=bob.agent_id)
            with trio.fail_after(600):  # virtual time: gossip rounds bring summaries and warrants
                while not all(requests.values()):
                    await c.wait_changed()

    with deterministic_trio(1):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    missing = [t for t in TYPES if not requests[t]]
    assert not missing, f"the capture run sent no {missing}"
    return root, requests, replies


@contextlib.asynccontextmanager
async def two_nodes():
    """Nodes 0 and 1 of the capture run, from fresh copies of their stores."""
    root, _, _ = captured()
    tmp = tempfile.mkdtemp(prefix="budgetnode-fuzz-ex-", dir=memory_backed_dir())
    try:
        paths = []
        for i in (0, 1):
            shutil.copytree(
                os.path.join(root, f"n{i}"),
                os.path.join(tmp, f"n{i}"),
                ignore=shutil.ignore_patterns("node.lock"),
            )
            paths.append(os.path.join(tmp, f"n{i}"))
        async with LocalCluster.open(n=2, transport="memory", clock=_now, paths=paths) as c:
            yield c
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_trio(fn, *, autojump: bool) -> None:
    """One example in its own deterministic trio run. Without autojump, virtual time stands
    still: the nodes' timers (gossip, publishing) never fire, so nothing but the fuzzed input
    can change a node's state."""
    captured()  # its own trio run, so not from inside this one
    clock = trio.testing.MockClock(autojump_threshold=0) if autojump else trio.testing.MockClock()
    with deterministic_trio(0):
        trio.run(fn, clock=clock)


# -- strategies
cbor = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 64), max_value=1 << 64)
    | st.text(max_size=16)
    | st.binary(max_size=40)
    | st.just(b"\0" * 32),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated(draw, value, depth=0):
    """`value` with one thing somewhere inside replaced by arbitrary CBOR, a list cut short, a
    list item repeated past the protocol's bounds, or a map entry dropped."""
    if isinstance(value, (list, dict)) and value and depth < 5 and draw(st.integers(0, 3)):
        if isinstance(value, list):
            i = draw(st.integers(0, len(value) - 1))
            how = draw(st.sampled_from(("into", "into", "cut", "grow")))
            if how == "cut":
                return value[:i]
            if how == "grow":
                return value + [value[i]] * draw(
                    st.sampled_from((P.MAX_OPS_PER_MESSAGE, P.MAX_SUMMARY_AUTHORS))
                )
            return value[:i] + [draw(mutated(value[i], depth + 1))] + value[i + 1 :]
        k = draw(st.sampled_from(sorted(value, key=repr)))
        if draw(st.integers(0, 4)) == 0:
            return {x: v for x, v in value.items() if x != k}
        return {**value, k: draw(mutated(value[k], depth + 1))}
    return draw(cbor)


def _real(kind: int, t: str) -> list[bytes]:
    return captured()[kind][t]


@st.composite
def arbitrary_request(draw, t: str, dna: bytes):
    fields = {f: draw(cbor) for f in REQUEST_FIELDS[t] if draw(st.integers(0, 4))}
    return encode_trusted({"t": t, "dna": dna, **fields})


@st.composite
def near_valid_request(draw, t: str):
    raw = draw(st.sampled_from(_real(1, t)))
    msg = decode(raw, MAX_FRAME, canonical=False)
    if draw(st.integers(0, 9)) == 0:  # cut short on the wire
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    out = draw(mutated({k: v for k, v in msg.items() if k != "t"}))
    if isinstance(out, dict):
        out = {**out, "t": t}
    return encode_trusted(out)


def snapshot(node) -> tuple:
    """What a refused request must leave as it was."""
    return (
        node.state_hash(),
        sorted((p, i.ts) for p, i in node.peers.items()),
        sorted(node.warrants_by_hash),
        sorted(node.limbo),
        node.store.db.total_changes,
    )


async def _feed(c, raw: bytes, to: int = 1) -> None:
    """`raw` from the other node to node `to`'s request handler (the function its transport
    calls)."""
    target, sender = c.nodes[to], c.nodes[1 - to]
    handler = c.network.handlers[target.id]
    await trio.testing.wait_all_tasks_blocked()
    before = snapshot(target)
    reply = await handler(sender.id, raw)
    assert isinstance(reply, bytes) and len(reply) <= MAX_FRAME
    answer = decode(reply, MAX_FRAME, canonical=False)
    assert isinstance(answer, dict)
    assert "handler_errors" not in target.metrics, target.handlers.last_handler_error
    if "err" in answer:
        assert snapshot(target) == before, "a refused request changed the node's state"
    # it keeps serving: a well-formed request still gets a good answer
    author = next(iter(sender.cells))
    good = P.request("chain", target.dna.hash, author=author, **{"from": 0}, limit=4)
    rep = P.parse_reply("chain", await handler(sender.id, good))
    assert rep.records and rep.records[0].action


@pytest.mark.parametrize("t", TYPES)
@FUZZ
@given(data=st.data())
def test_requests_with_arbitrary_fields_are_refused_or_answered(t, data):
    async def main():
        async with two_nodes() as c:
            await _feed(c, data.draw(arbitrary_request(t, c.nodes[1].dna.hash)), to=_target(t))

    run_trio(main, autojump=False)


@pytest.mark.parametrize("t", TYPES)
@FUZZ
@given(data=st.data())
def test_near_valid_mutations_of_real_requests_are_refused_or_answered(t, data):
    raw = data.draw(near_valid_request(t))

    async def main():
        async with two_nodes() as c:
            await _feed(c, raw, to=_target(t))

    run_trio(main, autojump=False)


def _target(t: str) -> int:
    """Node 0 holds the steward: witness requests go there, to reach the witness service."""
    return 0 if t == "witness" else 1


@settings(FUZZ, max_examples=150)
@given(raw=st.binary(max_size=256) | st.builds(encode_trusted, cbor))
def test_garbage_bytes_and_wrong_shapes_are_refused(raw):
    async def main():
        async with two_nodes() as c:
            await _feed(c, raw)

    run_trio(main, autojump=False)


def test_a_refused_peers_request_teaches_the_node_nothing():
    """The case the fuzzer finds when a captured info is newer than the one the node holds: a
    `peers` request whose `have` is malformed is refused, and must not have been half acted on
    (its sender's fresh info taken into the peer table) first."""

    async def main():
        async with two_nodes() as c:
            sender, target = c.nodes
            # a fresh info, newer than the one target holds
            sender.peer_table._info_ts, sender.peer_table._info_content = (
                target.peers[sender.id].ts,
                None,
            )
            raw = P.request(
                "peers", target.dna.hash, info=sender.peer_table.my_info(), digest=b"", have=None
            )
            await trio.testing.wait_all_tasks_blocked()
            before = snapshot(target)
            answer = decode(await c.network.handlers[target.id](sender.id, raw), MAX_FRAME)
            assert answer["err"] == "E_MALFORMED"
            assert snapshot(target) == before

    run_trio(main, autojump=False)


# -- the requesting side
@st.composite
def garbage_reply(draw, t: str):
    how = draw(st.sampled_from(("fields", "mutated", "bytes", "cut")))
    real = draw(st.sampled_from(_real(2, t)))
    if how == "bytes":
        return draw(st.binary(max_size=128))
    if how == "cut":
        return real[: draw(st.integers(0, max(0, len(real) - 1)))]
    if how == "fields":
        return encode_trusted({f: draw(cbor) for f in REPLY_FIELDS[t]})
    return encode_trusted(draw(mutated(decode(real, MAX_FRAME, canonical=False))))


replies_by_type = st.fixed_dictionaries(
    {}, optional={t: st.lists(garbage_reply(t), min_size=1, max_size=3) for t in TYPES}
)


# Without shrinking: an example is a short run of two nodes, and a failure shows the garbage
# that did it as drawn.
@settings(FUZZ, max_examples=100, phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(garbage=replies_by_type)
def test_an_honest_node_survives_a_peer_whose_replies_are_garbage(garbage):
    async def main():
        async with two_nodes() as c:
            honest, liar = c.nodes
            inner = c.network.handlers[liar.id]
            turn = {t: 0 for t in garbage}

            async def lying(peer, raw):
                reply = await inner(peer, raw)
                t = decode(raw, MAX_FRAME, canonical=False).get("t")
                if t in garbage:
                    turn[t] += 1
                    return garbage[t][turn[t] % len(garbage[t])]
                return reply

            c.network.handlers[liar.id] = lying
            me = next(p for p, cell in honest.cells.items() if p not in honest.dna.stewards)
            them = next(p for p, cell in liar.cells.items() if p not in liar.dna.stewards)
            with trio.fail_after(600):  # virtual time: a stalled node fails here
                agent = await honest.new_agent()  # announced with a hello
                await agent.add_knowledge("moss")  # published to the liar
                c.network.partition([honest.id], [liar.id])
                bob = await liar.agent(to_text("agent", them))
                theirs = await bob.transmit_understanding("oak", "drops", "leaf")
                c.network.heal()
                for call, arg in (
                    (honest.fetch_record, theirs),
                    (honest.get_budget_state, to_text("agent", them)),
                    (honest.agent_activity, to_text("agent", them)),
                ):
                    with contextlib.suppress(BudgetError):  # a refusal, not a crash
                        await call(arg)
                with contextlib.suppress(BudgetError):
                    await honest.gossiper.gossip_with(liar.id)  # a summary, whatever the timers do
                await trio.sleep(20)  # the node's own rounds: publisher, gossiper, limbo worker
                alice = await honest.agent(to_text("agent", me))
                assert (await alice.budget_status()).remaining_ru < 100

    run_trio(main, autojump=True)
