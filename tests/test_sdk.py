"""The in-process SDK surface, as agent code uses it."""

import pytest

from node.core.crypto import from_text
from node.sdk import (
    BudgetError,
    InsufficientRU,
    InvalidInput,
    LocalNode,
    NotAuthorized,
    NotFound,
    UnknownAgent,
    UnknownFunction,
)

from conftest import START


def chain_len(node, agent):
    return len(node.store.chain(from_text("agent", agent.agent_id)))


async def test_every_zome_function_writes_what_reads_return(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice, bob = await node.new_agent(), await node.new_agent()
        h1 = await alice.add_knowledge(content="soil holds water", tags=["soil"])
        h2 = await alice.add_knowledge(content="roots hold soil")
        edge = await alice.link_edge(from_hash=h2, to_hash=h1, relation="supports")
        cred = await alice.create_thought_credential(title="t", body="b")
        u = await bob.transmit_understanding(
            subject="soil", predicate="holds", object="water", context="field notes"
        )
        comp = await alice.compose_memories(other_agent_id=bob.agent_id)
        tv = await alice.validate_triple(subject="soil", predicate="holds", object="water")

        assert node.get_record(h1)["content"] == {"content": "soil holds water", "tags": ["soil"]}
        assert node.get_record(edge)["content"] == {"from": h2, "to": h1, "relation": "supports"}
        assert node.get_record(cred)["content"] == {"title": "t", "body": "b"}
        assert node.get_record(comp)["content"] == {"agent": bob.agent_id, "refs": [u]}
        assert node.get_record(tv)["content"]["known"] == 1
        assert [e["hash"] for e in await alice.get_edges(h2)] == [edge]
        rows = await alice.recall_understandings(subject="soil", limit=10)
        assert rows == [
            {
                "subject": "soil",
                "predicate": "holds",
                "object": "water",
                "context": "field notes",
                "author": bob.agent_id,
                "hash": u,
            }
        ]
        st = await alice.budget_status()
        # 33 + 33 + 3 + 10 + 5 + 2 + 0.1
        assert st.used_ru == pytest.approx(86.1) and st.remaining_mru == 13_900
        assert st.window_start == START and st.resets_at == START + 86_400
        assert st.to_dict()["remaining_ru"] == 13.9


async def test_generic_call_matches_methods_and_rejects_bad_calls(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        a = await node.new_agent()
        h = await a.call(
            "memory", "transmit_understanding", {"subject": "s", "predicate": "p", "object": "o"}
        )
        assert node.get_record(h)["content"]["object"] == "o"
        n = chain_len(node, a)
        with pytest.raises(UnknownFunction) as e:
            await a.call("memory", "forget_everything", {})
        assert e.value.code == "E_UNKNOWN_FUNCTION"
        for bad in (
            {"subject": "s"},
            {"subject": "s", "predicate": "p", "object": "o", "x": 1},
            ["s", "p", "o"],
            {"subject": 5, "predicate": "p", "object": "o"},
        ):
            with pytest.raises(InvalidInput):
                await a.call("memory", "transmit_understanding", bad)
        with pytest.raises(InvalidInput):
            await a.link_edge(from_hash="not-a-hash", to_hash=h, relation="r")
        assert chain_len(node, a) == n
        assert (await a.budget_status()).remaining_mru == 97_000


async def test_refusal_is_exact_and_writes_nothing(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        a = await node.new_agent()
        await a.add_knowledge("one")
        await a.add_knowledge("two")
        for _ in range(9):
            await a.transmit_understanding("s", "p", "o")  # 66 + 27 = 93 used
        await a.validate_triple("s", "p", "o")  # 95 used, 5 left
        clock[0] = START + 3600.5
        n = chain_len(node, a)
        with pytest.raises(InsufficientRU) as e:
            await a.add_knowledge("three")
        err = e.value
        assert (
            str(err)
            == "E_INSUFFICIENT_RU: need 33.00 RU, have 5.00 RU. Budget resets at 1730764800"
        )
        assert (err.code, err.need, err.have, err.resets_at) == (
            "E_INSUFFICIENT_RU",
            33.0,
            5.0,
            1730764800,
        )
        assert err.retry_after_s == 86_400 - 3600
        assert isinstance(err, BudgetError)
        assert chain_len(node, a) == n
        clock[0] = START + 86_400
        await a.add_knowledge("three")
        assert (await a.budget_status()).remaining_ru == 67.0


async def test_recall_charges_per_result_and_refuses_before_returning(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        writer, reader = await node.new_agent(), await node.new_agent()
        for i in range(30):
            await writer.transmit_understanding("topic", "has", f"fact {i}")
        assert len(await reader.recall_understandings(subject="topic", limit=7)) == 7
        assert (await reader.budget_status()).remaining_mru == 100_000 - 700
        assert await reader.recall_understandings(subject="nothing here") == []
        assert (
            await reader.budget_status()
        ).remaining_mru == 99_300  # nothing returned, nothing charged
        # Spend reader down to 2.0 RU: 30 results cost 3.0 RU, so the recall is refused whole.
        for _ in range(2):
            await reader.add_knowledge("x")
        await reader.create_thought_credential("t", "b")
        await reader.create_thought_credential("t", "b")
        for _ in range(3):
            await reader.transmit_understanding("a", "b", "c")
        await reader.validate_triple("a", "b", "c")  # 2.3 RU left
        await reader.recall_understandings(subject="topic", limit=3)
        assert (await reader.budget_status()).remaining_mru == 2_000
        n = chain_len(node, reader)
        with pytest.raises(InsufficientRU) as e:
            await reader.recall_understandings(subject="topic", limit=30)
        assert (e.value.need, e.value.have) == (3.0, 2.0)
        assert chain_len(node, reader) == n
        assert len(await reader.recall_understandings(subject="topic", limit=20)) == 20
        assert (await reader.budget_status()).remaining_mru == 0


async def test_allocation_cap_and_authority(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        steward, alice, bob = node.steward, await node.new_agent(), await node.new_agent()
        await alice.add_knowledge("x")
        g = await steward.allocate_budget(alice.agent_id, 50)
        assert (g.requested_ru, g.granted_ru) == (50.0, 50.0)
        assert (await alice.budget_status()).remaining_ru == 117.0
        g = await steward.allocate_budget(alice.agent_id, 150)
        assert g.granted_ru == 83.0
        assert (await alice.budget_status()).remaining_ru == 200.0
        n = chain_len(node, bob)
        with pytest.raises(NotAuthorized) as e:
            await bob.allocate_budget(alice.agent_id, 10)
        assert e.value.code == "E_NOT_AUTHORIZED" and chain_len(node, bob) == n
        for bad in (0, -5, 201, "lots", "50", True, float("inf"), float("nan"), 1e308):
            with pytest.raises(InvalidInput):
                await steward.allocate_budget(alice.agent_id, bad)
        with pytest.raises(InvalidInput):
            await steward.allocate_budget("agNOPE", 10)
        # Grants do not outlive their window: the next window starts from 100 RU again.
        clock[0] = START + 86_400
        assert (await alice.budget_status()).remaining_ru == 100.0


async def test_reopen_keeps_agents_chains_and_budgets(tmp_path, clock):
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        a = await node.new_agent()
        h = await a.add_knowledge("persist me")
        await node.steward.allocate_budget(a.agent_id, 20)
        agents = node.agents()
        steward_id = node.steward.agent_id
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        assert node.agents() == agents and node.steward.agent_id == steward_id
        a2 = await node.agent(a.agent_id)
        assert (await a2.budget_status()).remaining_ru == 87.0
        assert node.get_record(h)["content"]["content"] == "persist me"
        await a2.transmit_understanding("s", "p", "o")
        assert (await a2.budget_status()).remaining_ru == 84.0
        with pytest.raises(UnknownAgent):
            await node.agent("ag" + "A" * 43)
        with pytest.raises(NotFound):
            node.get_record("ac" + "A" * 43)


async def test_compose_requires_a_known_agent(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        a = await node.new_agent()
        with pytest.raises(UnknownAgent):
            await a.compose_memories(other_agent_id="ag" + "A" * 42 + "E")
        assert (await a.budget_status()).remaining_ru == 100.0
