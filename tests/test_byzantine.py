"""Byzantine peers (sims/byzantine.py): they lie on the wire, and honest nodes must neither crash,
stall, nor warrant an honest agent because of it; in the simulator, on a LocalCluster, and on
a real libp2p stream."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import random
import struct

import cbor2
import pytest

from node.net.memory import MemoryNetwork
import trio
import trio.testing

from node.cli import _parser
from node.core.encoding import decode, encode_trusted
from node.net import protocol as P
from node.net import rogue as adversarial
from node.net.transport import MAX_FRAME
from node.sdk import LocalCluster
from sims import SimConfig, run
from sims.byzantine import (
    REPLY_FIELDS,
    REQUEST_FIELDS,
    Byzantine,
    Garbage,
)
from sims.cli import _configure, config_from_args
from sims.config import load_scenario
from sims.mixed import mixed
from sims.sim import deterministic_trio

SCENARIOS = os.path.join(os.path.dirname(__file__), "..", "sims", "scenarios")


# -- the garbage itself
def test_garbage_is_built_from_the_real_messages_and_bounded():
    g = Garbage(random.Random(7))
    reply = {"results": [[b"\1" * 32, "valid", b"\2" * 64]]}
    seen = set()
    for _ in range(400):
        kind = g.rng.choice(("wrong_type", "deep_wrong_type", "drop_field", "oversize"))
        raw = g.mutate(reply, REPLY_FIELDS["publish"], kind)
        assert len(raw) <= MAX_FRAME
        out = cbor2.loads(raw)  # not the node's strict decode: some garbage is meant to fail it
        assert out != reply  # every kind changes something ...
        seen.add(kind)
        if kind != "drop_field":  # ... and keeps the field a handler reads
            assert set(out) == {"results"}
    assert seen == {"wrong_type", "deep_wrong_type", "drop_field", "oversize"}
    request = {"t": "chain", "dna": b"\3" * 32, "author": b"\4" * 32, "from": 0, "limit": 8}
    other = cbor2.loads(g.mutate(request, REQUEST_FIELDS["chain"], "other_dna", ("t",)))
    assert other["t"] == "chain" and other["dna"] != request["dna"] and len(other["dna"]) == 32
    for kind in ("truncate", "garbage", "wrong_shape"):
        assert g.raw(kind, encode_trusted(reply)) != encode_trusted(reply)
    assert set(REQUEST_FIELDS) == set(P.REQUESTS)


async def test_a_byzantine_transport_lies_as_its_seed_says(autojump_clock):
    """Same seed, same lies: a replayed simulation meets the same Byzantine behaviour."""

    async def honest(peer, raw):
        return P.reply(records=[[b"b", b"s", None]])

    async def lies(seed: int) -> list[bytes]:
        byz = Byzantine(random.Random(seed), rate=0.5)
        handle = byz.wrap_handler(honest)
        req = P.request("chain", b"\0" * 32, author=b"\1" * 32, **{"from": 0}, limit=4)
        out = []
        for _ in range(40):
            with trio.move_on_after(5):  # a "hang" outlasts any requester's timeout
                out.append(await handle(b"\2" * 32, req))
        return out

    a, b = await lies(1), await lies(1)
    assert a == b and a != await lies(2)
    assert len(set(a)) > 5  # many different lies, honest answers among them
    assert P.reply(records=[[b"b", b"s", None]]) in a


# -- the simulator
def test_simulation_with_byzantine_nodes_has_no_honest_crash_and_converges():
    r = run(SimConfig(seed=3, nodes=8, agents=16, hours=0.25, warmup=60, byzantine=2))
    assert r["byzantine_nodes"] == 2
    assert r["honest_node_crashes"] == 0, r["invariant_violations"]
    assert r["converged"] and not r["invariant_violations"] and r["ok"]
    assert r["honest_writes"] > 0


def test_an_honest_node_crash_is_counted_reported_and_fails_the_run(monkeypatch):
    """The simulator catches a node's crash per node: the run goes on, reports it and fails."""
    # (a gossip round or a background task that fails is counted by the node itself and the
    # node goes on; the publisher's loop is one whose failure still ends the node)
    from node.net.publishing import Publisher

    original = Publisher._publish_round
    left = [1]

    async def crash_once(self, *args):
        if left[0]:
            left[0] -= 1
            raise RuntimeError("boom in a publish round")
        return await original(self, *args)

    monkeypatch.setattr(Publisher, "_publish_round", crash_once)
    r = run(SimConfig(seed=5, nodes=5, agents=10, hours=0.1, warmup=60))
    assert r["honest_node_crashes"] == 1 and not r["ok"]
    assert any(
        "crashed: RuntimeError: boom in a publish round" in v for v in r["invariant_violations"]
    )
    assert r["converged"]  # the crashed node was restarted for the liveness phase


def test_byzantine_options_reach_config_replay_scenario_and_mixed():
    cfg = SimConfig(seed=9, nodes=6, byzantine=2)
    assert "--byzantine 2" in cfg.replay_command()
    assert "--byzantine" not in SimConfig(seed=9).replay_command()
    parse = _configure(argparse.ArgumentParser()).parse_args
    assert config_from_args(parse(["--nodes", "6", "--byzantine", "2"])).byzantine == 2
    with pytest.raises(SystemExit, match="node 0 honest"):
        config_from_args(parse(["--nodes", "6", "--rogue", "3", "--byzantine", "3"]))
    scenario = load_scenario(f"{SCENARIOS}/byzantine.toml")
    assert (
        scenario["byzantine"] >= 1 and scenario["rogue"] + scenario["byzantine"] < scenario["nodes"]
    )
    for seed in range(730001, 730041):
        off = mixed(seed, 8)
        assert mixed(seed, 8, byzantine=False) == off and off.byzantine == 0
        on = mixed(seed, 8, byzantine=True)
        # the other faults of a seed are the same with Byzantine nodes or without
        assert dataclasses.replace(on, byzantine=0) == off
        assert 1 <= on.byzantine <= 2 and on.rogue + on.byzantine <= 7


# -- LocalCluster and `up`
def test_cluster_with_a_byzantine_node_converges(clock):
    """On virtual time, with trio's scheduling made a function of the seed (as in a simulation),
    so the liar's seeded rng meets the same requests in the same order on every run."""
    with deterministic_trio(4):
        trio.run(_byzantine_cluster, clock, clock=trio.testing.MockClock(autojump_threshold=0))


async def _byzantine_cluster(clock):
    async with LocalCluster.open(
        n=4, clock=lambda: clock[0], transport="memory", rogue={2: "byzantine"}
    ) as c:
        agents = [await c.nodes[i].new_agent() for i in (0, 1, 3)]
        for a in agents:
            await a.add_knowledge("fern")
            await a.transmit_understanding("fern", "needs", "shade")
        liar = await c.nodes[2].new_agent()
        await liar.add_knowledge("lies")
        await c.await_consistency(timeout=600)
        honest = (c.nodes[0], c.nodes[1], c.nodes[3])
        with trio.fail_after(600):  # virtual time: rounds of gossip with the liar among them
            # (a gossip round sets no event; the check is the condition, the sleep is virtual)
            while min(n.metrics["gossip_rounds"] for n in honest) < 60:  # noqa: ASYNC110
                await trio.sleep(c.nodes[0].gossip_interval)
        for a in agents:
            await a.validate_triple("fern", "needs", "shade")
        await c.await_consistency(timeout=600)
        for node in honest:
            assert not set(node.warranted) & {a._cell.key.public for a in agents}
            for a in agents:
                st = await node.get_budget_state(a.agent_id)
                assert st.used_ru == 38.0
        assert c.nodes[2].transport.byzantine.counts  # it did lie


async def test_unknown_rogue_modes_are_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="known modes: .*byzantine"):
        async with LocalCluster.open(n=2, transport="memory", rogue={1: "nonsense"}):
            pass
    with pytest.raises(ValueError, match="unknown rogue mode"):
        async with LocalCluster.open(n=2, transport="memory", rogue=(1,), rogue_modes=("x",)):
            pass
    # a Byzantine forker: its own code forks, its transport lies
    factory, kwargs = adversarial.plug(MemoryNetwork().transport, ("byzantine", "fork"), 1)
    assert set(kwargs) == {"cell_type", "outgoing"}


def test_up_takes_a_rogue_mode_and_a_bare_rogue_still_skips_preflight():
    p = _parser(["up"])
    assert p.parse_args(["up", "--rogue"]).rogue == "skip_preflight"
    assert p.parse_args(["up", "--rogue", "byzantine"]).rogue == "byzantine"
    assert p.parse_args(["up"]).rogue is None


# -- a real libp2p stream
def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def _read_all(stream) -> bytes:
    """Until EOF or a reset (either ends a refused stream)."""
    buf = b""
    try:
        while chunk := await stream.read(4096):
            buf += chunk
    except Exception:  # noqa: BLE001 - StreamReset / StreamEOF: the node dropped it
        pass
    return buf


async def test_a_libp2p_node_survives_garbage_frames_on_its_protocol_stream():
    pytest.importorskip("libp2p")
    from node.net.cluster import libp2p_factory
    from node.net.libp2p_transport import open_libp2p_transport
    from node.net.node import NetNode

    async def unused(peer, raw):
        return P.error_reply(P.ProtocolError("not serving"))

    seed = hashlib.sha256(b"budgetnode-byzantine-raw-peer").digest()
    async with NetNode.open(libp2p_factory()) as node, open_libp2p_transport(seed, unused) as raw:
        agent = await node.new_agent()
        await agent.add_knowledge("stone")
        with trio.fail_after(20):
            await raw.connect(node.transport.listen_addrs()[0])
            node_pid = node.transport.libp2p_id

            async def send(data: bytes) -> bytes:
                """`data` on a fresh stream of the node's protocol; what comes back."""
                s = await raw.host.new_stream(node_pid, [raw.protocol])
                await s.write(data)
                try:
                    await s.close_write()
                except Exception:  # noqa: BLE001 - the node may have reset it already
                    pass
                return await _read_all(s)

            rng = random.Random(3)
            answers = [
                await send(_frame(rng.randbytes(200))),  # random bytes
                await send(_frame(encode_trusted([1, {"t": 5}, b"x"]))),  # wrong shape
                await send(
                    _frame(
                        encode_trusted(
                            {"t": "summary", "dna": node.dna.hash, "heads": 5, "warranted": 7}
                        )
                    )
                ),
                await send(
                    _frame(
                        encode_trusted(
                            {"t": "publish", "dna": node.dna.hash, "ops": [[b"x"]], "batch": {}}
                        )
                    )
                ),
            ]
            for a in answers:  # each refused with an error reply, in one frame
                (n,) = struct.unpack(">I", a[:4])
                assert n == len(a) - 4 and "err" in decode(a[4:], MAX_FRAME, canonical=False)
            refused = node.metrics["messages_refused"]
            assert refused >= 4
            # a length prefix past the frame limit, and a frame cut short: dropped unread
            assert await send(struct.pack(">I", MAX_FRAME + 1) + b"x" * 1000) == b""
            assert await send(struct.pack(">I", 100) + b"y" * 10) == b""
            # and it keeps serving
            rep = P.parse_reply("dna", await raw.request(node.id, P.request("dna", b"")))
            assert rep.dna == node.dna.encoded()
            rep = P.parse_reply(
                "chain",
                await raw.request(
                    node.id,
                    P.request(
                        "chain",
                        node.dna.hash,
                        author=agent._cell.key.public,
                        **{"from": 0},
                        limit=8,
                    ),
                ),
            )
            assert len(rep.records) == agent._cell.state.seq + 1 >= 2
