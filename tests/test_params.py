"""Every zome function's parameters are checked by one mechanism (types and ranges declared with
the function, `zomes.hdk`), before the function runs: a bad value is E_INVALID_INPUT, in process
and over the app socket alike, and nothing is written."""

from typing import Annotated

import pytest
import trio

from node.app.server import AppServer
from node.sdk import AgentClient, InvalidInput, LocalNode
from zomes.hdk import Text, zome_fn

HASH = "placeholder: a real action hash, set by the test"

BAD = [  # (zome, fn, payload); HASH is replaced with an existing action's hash
    ("rose_forest", "get_edges", {"from_hash": HASH, "limit": "10"}),
    ("rose_forest", "get_edges", {"from_hash": HASH, "limit": -1}),
    ("rose_forest", "get_edges", {"from_hash": HASH, "limit": 0}),
    ("rose_forest", "get_edges", {"from_hash": HASH, "limit": 1_000_001}),
    ("rose_forest", "get_edges", {"from_hash": HASH, "limit": True}),
    ("rose_forest", "get_edges", {"from_hash": HASH, "limit": 2.5}),
    ("rose_forest", "get_edges", {"from_hash": 7}),
    ("rose_forest", "get_edges", {"from_hash": "ac-not-a-hash"}),
    ("rose_forest", "add_knowledge", {"content": 5}),
    ("rose_forest", "add_knowledge", {"content": "x", "tags": "one"}),
    ("rose_forest", "add_knowledge", {"content": "x", "tags": [1]}),
    ("rose_forest", "add_knowledge", {"content": "x" * 20_000}),
    ("rose_forest", "link_edge", {"from_hash": HASH, "to_hash": None, "relation": "r"}),
    ("rose_forest", "link_edge", {"from_hash": HASH, "to_hash": HASH, "relation": ["r"]}),
    ("rose_forest", "create_thought_credential", {"title": {}, "body": "b"}),
    ("memory", "recall_understandings", {"limit": "all"}),
    ("memory", "recall_understandings", {"subject": 3}),
    ("memory", "transmit_understanding", {"subject": "s", "predicate": "p", "object": 1}),
    (
        "memory",
        "transmit_understanding",
        {"subject": "s", "predicate": "p", "object": "o", "context": 4},
    ),
    ("memory", "validate_triple", {"subject": "", "predicate": "p", "object": "o"}),
    ("memory", "compose_memories", {"other_agent_id": HASH}),
    ("budget", "allocate_budget", {"agent_id": "ag-nope", "ru": 1}),
    ("budget", "allocate_budget", {"agent_id": None, "ru": 1}),
    ("budget", "invite", {"note": 12}),
    ("rose_forest", "get_edges", ["not", "a", "map"]),
    ("rose_forest", "get_edges", {"from_hash": HASH, "limits": 3}),
]
STEWARD_BAD = [  # ranges that depend on the DNA (cap_mru), called by the steward
    {"ru": "10"},
    {"ru": True},
    {"ru": 0},
    {"ru": -5},
    {"ru": 10_000},
    {"ru": None},
]


def _fill(payload, h):
    if isinstance(payload, dict):
        return {k: h if v == HASH else v for k, v in payload.items()}
    return payload


async def _setup(node):
    alice = await node.new_agent()
    h = await alice.add_knowledge("something", ["t"])
    return alice, h


async def _refused(agent, zome, fn, payload):
    with pytest.raises(InvalidInput) as info:
        await agent.call(zome, fn, payload)
    assert info.value.code == "E_INVALID_INPUT", info.value
    return str(info.value)


async def test_bad_parameters_are_refused_in_process_and_nothing_is_written(tmp_path, clock):
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        alice, h = await _setup(node)
        before = node.status()
        for zome, fn, payload in BAD:
            msg = await _refused(alice, zome, fn, _fill(payload, h))
            assert "\n" not in msg
        for payload in STEWARD_BAD:
            await _refused(
                node.steward, "budget", "allocate_budget", {"agent_id": alice.agent_id, **payload}
            )
        assert node.status() == before
        # the same functions with good values still work
        assert await alice.get_edges(h, limit=1) == []
        r = await node.steward.allocate_budget(alice.agent_id, 1)
        assert r.requested_ru == 1.0


async def test_bad_parameters_are_refused_over_the_app_socket(tmp_path, clock):
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        alice, h = await _setup(node)
        before = node.status()
        async with trio.open_nursery() as n:
            server = await n.start(AppServer(node).serve, "127.0.0.1", 0)
            async with AgentClient.connect(
                server.app_url, token=server.token, agent=alice.agent_id
            ) as remote:
                for zome, fn, payload in BAD:
                    await _refused(remote, zome, fn, _fill(payload, h))
            steward = node.steward.agent_id
            async with AgentClient.connect(server.app_url, token=server.token, agent=steward) as s:
                for payload in STEWARD_BAD:
                    await _refused(
                        s, "budget", "allocate_budget", {"agent_id": alice.agent_id, **payload}
                    )
            n.cancel_scope.cancel()
        assert node.status() == before


def test_a_zome_function_must_declare_every_parameter():
    with pytest.raises(TypeError, match=r"declare a Param .*\['limit'\]"):

        @zome_fn("notes")
        async def list_notes(ctx, text: Annotated[str, Text()], limit=10):
            return []
