"""Admission: caps and limits are refusals (a grant that adds nothing, one past the DNA's
max_grants_per_window), kept across a restart and re-derived by validation."""

import os
import re
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from node.agent_api import refusals
from node.core import budget
from node.core.admission import PRECEDENCE, rank
from node.core.crypto import from_text, to_text
from node.core.dna import Dna
from node.core.encoding import decode
from node.core.errors import (
    BudgetError,
    BudgetExceeded,
    InvalidInput,
    NotAuthorized,
    UnknownFunction,
    error_class,
)
from node.core.validate import validate_chain
from node.sdk import LocalCluster, LocalNode
from zomes import APP

from conftest import START

DAY = 86_400


def chain_len(node, who) -> int:
    return len(node.store.chain(from_text("agent", who.agent_id)))


async def test_a_grant_to_an_agent_at_the_cap_is_refused_and_writes_nothing(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice, steward = await node.new_agent(), node.steward
        g = await steward.allocate_budget(alice.agent_id, 150)  # fits partly: 100 of 150
        assert (g.requested_ru, g.granted_ru) == (150, 100)
        before = (chain_len(node, alice), chain_len(node, steward))
        with pytest.raises(BudgetExceeded) as e:
            await steward.allocate_budget(alice.agent_id, 10)
        assert (e.value.need, e.value.have, e.value.budget) == (10, 0, None)
        assert f"cap 200.00 RU reached; resets at {START + DAY}" in str(e.value)
        assert (chain_len(node, alice), chain_len(node, steward)) == before
        assert (await alice.budget_status()).remaining_ru == 200


async def test_grants_past_max_grants_per_window_are_refused_until_the_window_rolls(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice, steward = await node.new_agent(), node.steward
        assert node.dna.max_grants_per_window == 3
        for _ in range(3):
            await steward.allocate_budget(alice.agent_id, 1)
        before = (chain_len(node, alice), chain_len(node, steward))
        with pytest.raises(BudgetExceeded) as e:
            await steward.allocate_budget(alice.agent_id, 1)
        assert "max_grants_per_window 3" in str(e.value)
        assert (chain_len(node, alice), chain_len(node, steward)) == before
        assert (await alice.budget_status()).remaining_ru == 103
        clock[0] += DAY  # the next window (this node's steward witnesses it)
        g = await steward.allocate_budget(alice.agent_id, 1)
        assert g.granted_ru == 1


async def test_the_grant_count_survives_a_restart(clock, tmp_path):
    path = str(tmp_path / "n")
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        for _ in range(3):
            await node.steward.allocate_budget(alice.agent_id, 1)
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        cell = node.cells[from_text("agent", alice.agent_id)]
        assert cell.state.window_claims == 3  # from the checkpoint, not from the chain
        with pytest.raises(BudgetExceeded):
            await node.steward.allocate_budget(alice.agent_id, 1)


async def test_validation_refuses_a_fourth_grant_in_one_window(clock, monkeypatch):
    """A node whose pre-flight let a fourth claim through would still not write it: the cell
    self-validates, and every authority re-derives the count from the chain."""
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice, steward = await node.new_agent(), node.steward
        for _ in range(3):
            await steward.allocate_budget(alice.agent_id, 1)
        pub = from_text("agent", alice.agent_id)
        length = chain_len(node, alice)
        monkeypatch.setattr(budget, "admit_grant", lambda *a: 1)  # a pre-flight that lets all in
        with pytest.raises(NotAuthorized, match="too_many_grants"):
            await steward.allocate_budget(alice.agent_id, 1)
        assert chain_len(node, alice) == length
        cs = validate_chain(node.store.chain(pub), node.dna, APP, node.store.entries_of(pub))
        assert cs.window_claims == 3


def test_max_grants_per_window_is_a_dna_rule_in_its_hash():
    assert Dna.rules({"max_grants_per_window": 5}) == {"max_grants_per_window": 5}
    with pytest.raises(InvalidInput):
        Dna.rules({"max_grants_per_window": "5"})
    with pytest.raises(InvalidInput):
        Dna(max_grants_per_window=0)
    a, b = Dna(), Dna(max_grants_per_window=4)
    assert a.hash != b.hash
    assert Dna.from_dict(decode(b.encoded())) == b
    # a network made before the rule names no limit: its DNA, and so its hash, are unchanged
    legacy = {k: v for k, v in a.to_dict().items() if k != "max_grants_per_window"}
    old = Dna.from_dict(legacy)
    assert old.max_grants_per_window is None and old.to_dict() == legacy


# ---------------------------------------------------------------- one precedence, one code

WARRANT = SimpleNamespace(reason="over_spend", body={"seq": 1})  # as the network sets it


def unknown_agent() -> str:
    return to_text("agent", bytes(range(32)))


async def spend_to_one_ru(agent):
    for _ in range(3):
        await agent.add_knowledge("a thought")  # 3 x 33 RU: 1 RU left


async def refused_with(node, agent, zome, fn, payload, codes):
    """The call is refused with the code the table ranks first of `codes` (those of the checks
    that fail), `check` says the same code beforehand, and neither writes anything."""
    expected = min(codes, key=rank)
    lengths = {p: len(node.store.chain(p)) for p in node.cells}
    seen = await agent.check(zome, fn, payload)
    assert (seen.ok, seen.code) == (False, expected), seen
    with pytest.raises(BudgetError) as e:
        await agent.call(zome, fn, payload)
    assert e.value.code == expected
    assert {p: len(node.store.chain(p)) for p in node.cells} == lengths
    return seen


async def test_the_precedence_table_is_in_order_and_names_each_code_once():
    codes = [code for c in PRECEDENCE for code in c.codes]
    assert len(codes) == len(set(codes))
    assert [c.name for c in PRECEDENCE] == [
        "function", "input", "target", "warrant", "authority", "void", "balance", "solvency",
        "deferral",
    ]  # fmt: skip
    assert {c for c in codes if error_class(c) is None} == set()  # every code is the node's
    assert rank("E_WARRANTED") < rank("E_INSUFFICIENT_RU") < rank("E_DEFER_QUEUE_FULL")


async def test_each_conflicting_pair_gets_the_code_of_the_first_check(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice, bob, steward = await node.new_agent(), await node.new_agent(), node.steward
        await steward.allocate_budget(bob.agent_id, 100)  # bob at the cap
        await spend_to_one_ru(alice)  # alice is broke for anything but a read
        a = node.cells[from_text("agent", alice.agent_id)]
        # function + input
        await refused_with(
            node, alice, "memory", "nope", {"x": 1}, ["E_UNKNOWN_FUNCTION", "E_INVALID_INPUT"]
        )
        # input + balance
        await refused_with(
            node, alice, "rose_forest", "add_knowledge", {"content": 5},
            ["E_INVALID_INPUT", "E_INSUFFICIENT_RU"],
        )  # fmt: skip
        # input + target (a steward's grant of a bad amount to an unknown agent)
        await refused_with(
            node, steward, "budget", "allocate_budget", {"agent_id": unknown_agent(), "ru": -1},
            ["E_INVALID_INPUT", "E_UNKNOWN_AGENT"],
        )  # fmt: skip
        # input + authority
        await refused_with(
            node, alice, "budget", "allocate_budget", {"agent_id": bob.agent_id, "ru": "x"},
            ["E_INVALID_INPUT", "E_NOT_AUTHORIZED"],
        )  # fmt: skip
        # target + authority
        await refused_with(
            node, alice, "budget", "allocate_budget", {"agent_id": unknown_agent(), "ru": 1},
            ["E_UNKNOWN_AGENT", "E_NOT_AUTHORIZED"],
        )  # fmt: skip
        # target + balance
        await refused_with(
            node, alice, "memory", "compose_memories", {"other_agent_id": unknown_agent()},
            ["E_UNKNOWN_AGENT", "E_INSUFFICIENT_RU"],
        )  # fmt: skip
        # authority + balance (the grantee is at the cap)
        await refused_with(
            node, alice, "budget", "allocate_budget", {"agent_id": bob.agent_id, "ru": 1},
            ["E_NOT_AUTHORIZED", "E_BUDGET_EXCEEDED"],
        )  # fmt: skip
        a.warrant = WARRANT
        # warrant + balance
        await refused_with(
            node, alice, "rose_forest", "add_knowledge", {"content": "c"},
            ["E_WARRANTED", "E_INSUFFICIENT_RU"],
        )  # fmt: skip
        # warrant + authority
        await refused_with(
            node, alice, "budget", "allocate_budget", {"agent_id": bob.agent_id, "ru": 1},
            ["E_WARRANTED", "E_NOT_AUTHORIZED", "E_BUDGET_EXCEEDED"],
        )  # fmt: skip
        # target + warrant
        await refused_with(
            node, alice, "memory", "compose_memories", {"other_agent_id": unknown_agent()},
            ["E_UNKNOWN_AGENT", "E_WARRANTED", "E_INSUFFICIENT_RU"],
        )  # fmt: skip
        # input + warrant
        await refused_with(
            node, alice, "rose_forest", "add_knowledge", {"content": 5},
            ["E_INVALID_INPUT", "E_WARRANTED"],
        )  # fmt: skip


async def test_check_writes_nothing_costs_nothing_and_emits_no_event(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        events = []
        node.admissions.listen(events.append)
        before = (
            len(node.store.chain(from_text("agent", alice.agent_id))),
            len(node.admissions.audit),
        )
        ok = await alice.check("rose_forest", "add_knowledge", {"content": "x"})
        assert (ok.ok, ok.code, ok.need, ok.have, ok.resets_at) == (
            True,
            None,
            33,
            100,
            START + DAY,
        )
        read = await alice.check(
            "rose_forest", "get_edges", {"from_hash": to_text("action", bytes(32))}
        )
        assert (read.ok, read.need) == (True, 0)
        await spend_to_one_ru(alice)
        before = (
            len(node.store.chain(from_text("agent", alice.agent_id))),
            len(node.admissions.audit),
        )
        no = await alice.check("rose_forest", "add_knowledge", {"content": "x"})
        assert (no.ok, no.code, no.need, no.have) == (False, "E_INSUFFICIENT_RU", 33, 1)
        assert (no.resets_at, no.retry_after_s) == (START + DAY, DAY)
        after = (
            len(node.store.chain(from_text("agent", alice.agent_id))),
            len(node.admissions.audit),
        )
        assert after == before and events == []
        assert refusals(node)["E_INSUFFICIENT_RU"] == 0
        with pytest.raises(InvalidInput):
            await alice.check("rose_forest", "add_knowledge", {"content": "x"}, budgets=["b"])


async def test_has_budget_names_an_op_or_a_zome_function(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        assert await alice.has_budget("add_knowledge")
        assert await alice.has_budget("rose_forest.add_knowledge")
        await spend_to_one_ru(alice)
        assert not await alice.has_budget("add_knowledge")
        assert await alice.has_budget("memory.recall_understandings", count=10)  # 1.0 RU
        assert not await alice.has_budget("recall_understandings", count=11)
        with pytest.raises(UnknownFunction):
            await alice.has_budget("nope")
        with pytest.raises(InvalidInput):
            await alice.has_budget("add_knowledge", count=2)  # not charged per result
        node.cells[from_text("agent", alice.agent_id)].warrant = WARRANT
        assert not await alice.has_budget("recall_understandings")


def test_docs_sdk_prints_the_precedence_table_as_the_code_has_it():
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "SDK.md")) as f:
        text = f.read()
    table = text[text.index("<!-- precedence") : text.index("<!-- /precedence -->")]
    rows = [r for r in table.splitlines() if re.match(r"\| \d+ \|", r)]
    assert rows == [
        f"| {i} | {c.name} | {' '.join(f'`{x}`' for x in c.codes)} | {c.what} |"
        for i, c in enumerate(PRECEDENCE, 1)
    ]


async def test_a_low_budget_alert_fires_once_a_window(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        events = []
        node.admissions.listen(events.append)
        await alice.set_alert(remaining_ru=50)
        await alice.add_knowledge("1")  # 67 left
        assert events == []
        await alice.add_knowledge("2")  # 34 left: below 50
        await alice.add_knowledge("3")  # 1 left: the window's alert was given
        assert [(e["type"], e["have"], e["alert_mru"]) for e in events] == [
            ("low_budget", 34, 50_000)
        ]
        clock[0] += DAY
        await alice.add_knowledge("4")
        await alice.add_knowledge("5")
        assert [e["have"] for e in events] == [34, 34]
        await alice.set_alert(remaining_ru=None)
        clock[0] += DAY
        for i in range(3):
            await alice.add_knowledge(f"x{i}")
        assert len(events) == 2
        with pytest.raises(InvalidInput):
            await alice.set_alert(remaining_ru="lots")


async def test_in_process_subscribers_get_their_own_agents_refusals(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice, bob = await node.new_agent(), await node.new_agent()
        got = []

        async def listen(agent):
            async for ev in agent.subscribe():
                got.append((agent.agent_id, ev))

        async with trio.open_nursery() as n:
            n.start_soon(listen, alice)
            await trio.testing.wait_all_tasks_blocked()  # the subscriber is waiting
            with pytest.raises(UnknownFunction):
                await bob.call("rose_forest", "nope", {})
            with pytest.raises(InvalidInput):
                await alice.add_knowledge(content=5)
            await trio.testing.wait_all_tasks_blocked()
            n.cancel_scope.cancel()
        assert [(who, ev["type"], ev["code"]) for who, ev in got] == [
            (alice.agent_id, "refusal", "E_INVALID_INPUT")
        ]
        assert len(node.admissions.audit) == 2  # both are kept in the log


async def test_a_grant_to_another_nodes_agent_at_the_cap_is_refused_before_it_is_recorded(
    clock, autojump_clock
):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory") as c:
        n0, n1 = c.nodes
        bob = await n1.new_agent()
        await c.await_consistency(timeout=60)
        g = await n0.steward.allocate_budget(bob.agent_id, 100)
        assert (g.granted_ru, g.claimed) == (100, True)
        await c.await_consistency(timeout=60)
        steward = n0.dna.stewards[0]
        length = len(n0.store.chain(steward))
        with pytest.raises(BudgetExceeded):
            await n0.steward.allocate_budget(bob.agent_id, 5)
        assert len(n0.store.chain(steward)) == length
        assert (await bob.budget_status()).remaining_ru == 200


async def test_check_refuses_to_dry_run_a_budget_verb_and_writes_nothing(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice, steward = await node.new_agent(), node.steward
        lengths = {p: len(node.store.chain(p)) for p in node.cells}
        with pytest.raises(InvalidInput, match="cannot dry-run"):
            await steward.check(
                "budget", "mint_budget", {"amounts": {"ru": 10}, "holder": alice.agent_id}
            )
        assert {p: len(node.store.chain(p)) for p in node.cells} == lengths
