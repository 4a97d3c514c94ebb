"""Resources beyond RU and metered work (issue 18, "Resources and metering"): networks made
with them (in process, as a cluster, from `budgetnode init --dna`), ops priced in them, the
two-phase spend settling what an LLM call used, the insufficiency naming its resource, and the
usage rows derived from an agent's chain."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from node.core.crypto import from_text
from node.core.dna import Dna
from node.core.errors import BudgetExceeded, InvalidChain, InvalidInput
from node.core.validate import validate_chain
from node.local_node import LocalNode
from sims.ledger_audit import check_books

from test_budgets import T0, TRIPLE, Clock, _chain, _next

LARGE = "llm_tokens.large"
RESOURCES = {
    LARGE: {"mint_limit": 10_000_000},
    "llm_tokens.small": {"mint_limit": 50_000_000},
    "storage_gb_hours": {"mint_limit": 1_000},
}
# add_knowledge also costs 2 storage_gb_hours: only a budget holding them pays for it
PRICED = {"resources": RESOURCES, "resource_costs": {"add_knowledge": {"storage_gb_hours": 2}}}
KNOWLEDGE = {"zome": "rose_forest", "fn": "add_knowledge", "payload": {"content": "c"}}


# -- the stub of an LLM client (an Anthropic-style `client.messages.create`): no network
class StubMessages:
    def __init__(self, output_tokens: int):
        self.output_tokens = output_tokens
        self.calls: list[dict] = []

    async def create(self, *, model: str, max_tokens: int, messages: list) -> SimpleNamespace:
        self.calls.append({"model": model, "max_tokens": max_tokens, "messages": messages})
        used = min(self.output_tokens, max_tokens)
        return SimpleNamespace(
            content=[SimpleNamespace(type="text", text="an answer")],
            usage=SimpleNamespace(input_tokens=12, output_tokens=used),
        )


class StubClient:
    def __init__(self, output_tokens: int):
        self.messages = StubMessages(output_tokens)


async def ask(agent, client, budget: str, prompt: str, max_tokens: int = 4000):
    """The wrapper docs/SDK.md ("Metering") shows: reserve the most the call may use, run it,
    settle what it reports (the rest goes back; an error cancels the reservation)."""
    async with agent.spend(budget, {LARGE: max_tokens}) as h:
        msg = await client.messages.create(
            model="large-model",
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": prompt}],
        )
        h.use({LARGE: msg.usage.output_tokens})
    return msg, h.hold


def books(node):
    """The simulator's own replay of every chain of `node` (sims/ledger_audit.py)."""
    chains = {p: (node.store.chain(p), c.ledger) for p, c in node.cells.items()}
    return check_books(chains, node.dna.stewards, int(T0 * 1e6), dna=node.dna)


def units(view, resource: str, field: str = "available"):
    return getattr(view.balance(resource), field)


async def metered(node, tokens=10_000, ru=100):
    st = node.steward
    alice, carol = await node.new_agent(), await node.new_agent()
    b = await st.mint_budget({"ru": ru, LARGE: tokens}, holder=alice.agent_id, name="llm")
    return st, alice, carol, b


# -- 1. networks made with resources beyond RU
async def test_resources_beyond_ru_are_part_of_the_network_made_in_process(tmp_path):
    async with LocalNode.open(path=str(tmp_path), clock=Clock(), dna=PRICED) as node:
        dna = node.dna
        assert dna.resources == {"ru": {"mint_limit": 10_000 * 1000}, **RESOURCES}
        assert dna.resource_costs == {"add_knowledge": {"storage_gb_hours": 2}}
        assert dna.to_dict()["resource_costs"] == {"add_knowledge": {"storage_gb_hours": 2}}
        h = dna.hash
        # every rule is in the hash: a resource or a cost less or other is another network
        others = (
            {"resources": RESOURCES},
            {**PRICED, "resource_costs": {"add_knowledge": {"storage_gb_hours": 3}}},
            {**PRICED, "resources": {**RESOURCES, "api_calls": {"mint_limit": 1}}},
        )
        for other in others:
            d = Dna.for_app(node.app, stewards=dna.stewards, **Dna.rules(other))
            assert d.hash != h
        assert Dna.from_dict(dna.to_dict()).hash == h
    async with LocalNode.open(path=str(tmp_path), clock=Clock()) as again:
        assert again.dna.hash == h and again.dna.resource_costs == dna.resource_costs


def test_a_network_without_resource_costs_keeps_its_hash():
    from zomes import APP

    plain = Dna.for_app(APP)
    assert "resource_costs" not in plain.to_dict()
    assert Dna.from_dict(plain.to_dict()).hash == plain.hash
    assert plain.resource_cost("add_knowledge") == {}


@pytest.mark.parametrize(
    "rules, says",
    [
        ({"resource_costs": {"add_knowledge": {"storage_gb_hours": 1}}}, "storage_gb_hours"),
        ({**PRICED, "resource_costs": {"no_such_op": {LARGE: 1}}}, "unknown op 'no_such_op'"),
        ({**PRICED, "resource_costs": {"add_knowledge": {"ru": 1}}}, "RU costs are the app's"),
        ({**PRICED, "resource_costs": {"add_knowledge": {LARGE: 0}}}, "whole number of units"),
        ({"resources": {LARGE: {"mint_limit": "lots"}}}, "resources: a map"),
        ({"resource": {}}, "unknown DNA rule(s) ['resource']"),
    ],
)
async def test_bad_resource_rules_are_refused_and_leave_no_network(tmp_path, rules, says):
    with pytest.raises(InvalidInput, match=re.escape(says)):
        async with LocalNode.open(path=str(tmp_path), clock=Clock(), dna=rules):
            pass
    async with LocalNode.open(path=str(tmp_path), clock=Clock()) as node:  # nothing left over
        assert node.dna.resource_costs == {} and len(node.cells) == 1


async def test_a_cluster_made_with_resources_meters_work_on_every_node():
    from node.sdk import LocalCluster

    from test_budgets import held

    t = [T0]
    async with LocalCluster.open(n=2, clock=lambda: t[0], dna=PRICED) as c:
        assert c.nodes[1].dna.hash == c.nodes[0].dna.hash
        assert c.nodes[1].dna.resource_costs == PRICED["resource_costs"]
        st = c.nodes[0].steward
        bob = await c.nodes[1].new_agent()
        await c.await_consistency(timeout=20)
        b = await st.mint_budget(
            {"ru": 50, LARGE: 5000, "storage_gb_hours": 4}, holder=bob.agent_id
        )
        await held(c, bob, b)
        _, hold = await ask(bob, StubClient(1500), b, "why?")
        r = await bob.refine(instructions=[KNOWLEDGE], budgets=b)
        assert r.spent == {"ru": 33.0, "storage_gb_hours": 2}
        await c.await_consistency(timeout=20)
        views = [await n.get_budget(b) for n in c.nodes]
        assert all(v == views[0] for v in views)
        assert (units(views[0], LARGE), units(views[0], LARGE, "spent")) == (3500, 1500)
        assert units(views[0], "storage_gb_hours", "spent") == 2


def test_init_makes_a_network_from_a_dna_file_and_refuses_a_bad_one(tmp_path, capsys):
    from node.cli import main

    good = tmp_path / "net.toml"
    good.write_text(
        'name = "lab"\nmembrane = "invite"\n'
        '[resources."llm_tokens.large"]\nmint_limit = 10_000_000\n'
        "[resources.storage_gb_hours]\nmint_limit = 1000\n"
        "[resource_costs.add_knowledge]\nstorage_gb_hours = 2\n"
    )
    bad = {
        "missing.toml": None,
        "broken.toml": "resources = {",
        "unknown.toml": "windw_s = 60\n",
        "typed.toml": 'window_s = "a day"\n',
        "value.toml": "[resource_costs.add_knowledge]\nllm_tokens.large = 1\n",
    }
    for name, text in bad.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        d = tmp_path / f"store-{name}"
        assert main(["init", "--path", str(d), "--dna", str(tmp_path / name), "--json"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"E_INVALID_INPUT: --dna {tmp_path / name}: "), err
        assert not d.exists()  # refused before anything was made
    assert main(["init", "--path", str(tmp_path / "n"), "--dna", str(good), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    d = ["init", "--path", str(tmp_path / "m"), "--dna", str(good), "--membrane", "open"]
    assert main(d) == 1 and "--membrane open and" in capsys.readouterr().err

    async def opened():
        async with LocalNode.open(path=str(tmp_path / "n"), clock=Clock()) as node:
            return node.dna

    import trio

    dna = trio.run(opened)
    assert out["dna"] == dna.hash_text
    assert (dna.name, dna.membrane) == ("lab", "invite")
    assert dna.resources[LARGE] == {"mint_limit": 10_000_000} and "ru" in dna.resources
    assert dna.resource_costs == {"add_knowledge": {"storage_gb_hours": 2}}


# -- 2. an op priced in another resource
async def test_an_op_priced_in_another_resource_is_paid_only_by_a_budget_holding_it():
    async with LocalNode.open(clock=Clock(), dna=PRICED) as node:
        st = node.steward
        alice = await node.new_agent()
        seq = alice._cell.state.seq
        with pytest.raises(BudgetExceeded) as e:  # the allowance holds only RU
            await alice.add_knowledge("c")
        assert str(e.value) == (
            "E_BUDGET_EXCEEDED: need 2 storage_gb_hours, have 0 storage_gb_hours (the allowance "
            "holds only RU: refine rose_forest.add_knowledge with a budget holding "
            "storage_gb_hours)"
        )
        assert e.value.resource == "storage_gb_hours" and alice._cell.state.seq == seq
        dry = await alice.check("rose_forest", "add_knowledge", {"content": "c"})
        assert (dry.ok, dry.code) == (False, "E_BUDGET_EXCEEDED")
        assert not await alice.has_budget("rose_forest.add_knowledge")
        assert await alice.has_budget("memory.transmit_understanding")
        with pytest.raises(BudgetExceeded):  # a deferral would wait for nothing
            await alice.add_knowledge("c", defer=True)
        await alice.transmit_understanding("s", "p", "o")  # an RU-only op: the allowance pays
        ru_only = await st.mint_budget({"ru": 100}, holder=alice.agent_id)
        priced = await st.mint_budget({"ru": 100, "storage_gb_hours": 3}, holder=alice.agent_id)
        seq = alice._cell.state.seq
        with pytest.raises(BudgetExceeded) as e:
            await alice.refine(instructions=[KNOWLEDGE], budgets=ru_only)
        assert str(e.value) == (
            "E_BUDGET_EXCEEDED: need 2 storage_gb_hours, have 0 storage_gb_hours in budget "
            + ru_only
        )
        assert alice._cell.state.seq == seq
        ok = await alice.check("rose_forest", "add_knowledge", {"content": "c"}, budgets=priced)
        assert ok.ok
        r = await alice.refine(instructions=[KNOWLEDGE], budgets=[ru_only, priced])
        assert (r.authorized_by, r.spent) == (priced, {"ru": 33.0, "storage_gb_hours": 2})
        v = await alice.get_budget(priced)
        assert (units(v, "storage_gb_hours"), units(v, "storage_gb_hours", "spent")) == (1, 2)
        assert units(v, "ru") == 67.0
        assert (await alice.lineage(r.outputs[0]))[0]["amounts"] == {
            "ru": 33.0,
            "storage_gb_hours": 2,
        }
        over = await alice.check("rose_forest", "add_knowledge", {"content": "d"}, budgets=priced)
        assert (over.ok, over.code) == (False, "E_BUDGET_EXCEEDED")
        with pytest.raises(BudgetExceeded, match="need 2 storage_gb_hours, have 1 storage"):
            await alice.refine(instructions=[KNOWLEDGE], budgets=priced)
        chain, entries = _chain(node, alice)
        cs = validate_chain(chain, node.dna, node.app, entries)  # as every authority derives it
        assert cs.ledger is not None
        assert dict(cs.ledger.budgets[from_text("budget", priced)].spent) == {
            "ru": 33_000,
            "storage_gb_hours": 2,
        }
        found = books(node)
        assert found.problems == []


async def test_authorities_re_derive_the_other_resources_of_a_write():
    async with LocalNode.open(clock=Clock(), dna=PRICED) as node:
        alice = await node.new_agent()
        ru_only = await node.steward.mint_budget({"ru": 100}, holder=alice.agent_id)
        await alice.transmit_understanding("s", "p", "o")
        r = await alice.refine(instructions=[TRIPLE], budgets=ru_only)
        chain, entries = _chain(node, alice)
        write = next(s for s in chain if s.hash == from_text("action", r.outputs[0]))
        key = alice._cell.key
        validate_chain(chain, node.dna, node.app, entries)

        def knowledge(a, paid: bool):  # an add_knowledge, as a modified node might sign it
            a.clear()
            a.update(
                {**write.action, "entry_type": "knowledge", "budget": dict(write.action["budget"])}
            )
            a["seq"], a["prev"], a["ts"] = chain[-1].seq + 1, chain[-1].hash, chain[-1].ts + 1
            a["budget"]["op"], a["budget"]["cost"] = "add_knowledge", 33_000
            if paid:  # by a budget that holds no storage_gb_hours
                a["budget"]["call"] = a["seq"]
            else:  # by the allowance, which holds only RU
                a["budget"].pop("pay"), a["budget"].pop("call")
                a["budget"]["rem"] -= 33_000

        for paid, reason in ((True, "ledger_budget_exceeded"), (False, "not_paid")):
            forged = _next(chain, lambda a, p=paid: knowledge(a, p), key)
            with pytest.raises(InvalidChain) as e:
                validate_chain(chain + [forged], node.dna, node.app)
            assert e.value.reason == reason, e.value
            assert "storage_gb_hours" in str(e.value)


# -- 3. the two-phase spend meters external work
async def test_an_llm_call_is_metered_by_reserving_then_settling_what_it_used():
    async with LocalNode.open(clock=Clock(), dna={"resources": RESOURCES}) as node:
        st, alice, carol, b = await metered(node)
        client = StubClient(output_tokens=1234)
        msg, hold = await ask(alice, client, b, "what is a budget?")
        assert client.messages.calls[0]["max_tokens"] == 4000  # the reservation bounds the call
        assert msg.usage.output_tokens == 1234
        assert (hold.state, hold.amounts, hold.settled) == ("settled", {LARGE: 4000}, {LARGE: 1234})
        assert hold.payee is None  # used up, paid to no one
        v = await alice.get_budget(b)
        assert (units(v, LARGE), units(v, LARGE, "pending"), units(v, LARGE, "spent")) == (
            10_000 - 1234,
            0,
            1234,
        )
        assert await alice.wallet() is None and await carol.wallet() is None
        # while the call runs, its reservation is pending
        async with alice.spend(b, {LARGE: 500}) as h:
            mid = await alice.get_budget(b)
            assert (units(mid, LARGE), units(mid, LARGE, "pending")) == (10_000 - 1234 - 500, 500)
            h.use({LARGE: 200})
            h.use({LARGE: 100})  # added up
        assert h.hold.settled == {LARGE: 300}
        # a call that fails returns all of its reservation
        with pytest.raises(RuntimeError):
            async with alice.spend(b, {LARGE: 700}) as failed:
                raise RuntimeError("the model timed out")
        assert failed.hold.state == "cancelled"
        # paying another agent is still a settle with a payee
        async with alice.spend(b, {"ru": 5}, payee=carol.agent_id) as paid:
            paid.use({"ru": 2})
        assert paid.hold.payee == carol.agent_id
        assert units(await carol.get_budget(await carol.wallet()), "ru") == 2.0
        v = await alice.get_budget(b)
        assert (units(v, LARGE), units(v, LARGE, "spent")) == (10_000 - 1534, 1534)
        assert (units(v, "ru"), units(v, "ru", "spent")) == (98.0, 0)
        # the validator and the simulator's own replay agree, and the books balance
        chain, entries = _chain(node, alice)
        validate_chain(chain, node.dna, node.app, entries)
        found = books(node)
        assert found.problems == []
        assert found.totals["minted"] == {"ru": 100_000, LARGE: 10_000}
        assert found.totals["held"] == found.totals["minted"]  # spent counts as held
        assert found.holds == {"settled": 3, "cancelled": 1}


async def test_using_more_than_was_reserved_is_refused_and_the_hold_stays_to_settle():
    async with LocalNode.open(clock=Clock(), dna={"resources": RESOURCES}) as node:
        st, alice, carol, b = await metered(node)
        with pytest.raises(BudgetExceeded) as e:
            async with alice.spend(b, {LARGE: 1000}, task_id="long") as h:
                h.use({LARGE: 1500})
        assert str(e.value) == (
            f"E_BUDGET_EXCEEDED: need 1500 llm_tokens.large, have 1000 llm_tokens.large in "
            f"budget {b} (the hold)"
        )
        v = await alice.get_budget(b)
        assert (units(v, LARGE, "pending"), units(v, LARGE, "spent")) == (1000, 0)
        done = await alice.settle_spend(h.task_id, {LARGE: 1000})  # what it covers
        assert (done.state, done.settled) == ("settled", {LARGE: 1000})
        assert units(await alice.get_budget(b), LARGE, "spent") == 1000


async def test_the_insufficiency_names_its_resource():
    async with LocalNode.open(clock=Clock(), dna={"resources": RESOURCES}) as node:
        st, alice, carol, b = await metered(node, tokens=120, ru=10)
        seq = alice._cell.state.seq
        client = StubClient(10)
        with pytest.raises(BudgetExceeded) as e:
            await ask(alice, client, b, "hi")
        assert client.messages.calls == []  # refused before the model was called
        assert str(e.value) == (
            f"E_BUDGET_EXCEEDED: need 4000 llm_tokens.large, have 120 llm_tokens.large in "
            f"budget {b}"
        )
        assert (e.value.need, e.value.have, e.value.resource) == (4000, 120, LARGE)
        with pytest.raises(BudgetExceeded) as e:
            await alice.commit_spend(b, {"ru": 12.5}, task_id="t")
        assert str(e.value) == f"E_BUDGET_EXCEEDED: need 12.50 RU, have 10.00 RU in budget {b}"
        assert alice._cell.state.seq == seq  # nothing written


# -- 5. usage rows
async def test_usage_rows_are_derived_from_the_chain_and_filtered():
    clock = Clock()
    async with LocalNode.open(clock=clock, dna=PRICED) as node:
        st, alice, carol, b = await metered(node)
        store = await st.mint_budget({"ru": 100, "storage_gb_hours": 5}, holder=alice.agent_id)
        assert await alice.usage() == []
        t1 = int(clock.t)
        ambient = await alice.transmit_understanding("s", "p", "o")
        clock.t += 10
        r = await alice.refine(instructions=[KNOWLEDGE], budgets=store)
        clock.t += 10
        _, hold = await ask(alice, StubClient(1234), b, "q")
        settle = alice._cell.state.hash
        clock.t += 10
        async with alice.spend(b, {"ru": 5}, payee=carol.agent_id, task_id="tip") as h:
            h.use({"ru": 1.5})
        tip = alice._cell.state.hash
        rows = await alice.usage()
        from node.core.crypto import to_text

        def row(resource, amount, op, ts, h, budget):
            return {
                "resource": resource,
                "amount_used": amount,
                "op": op,
                "timestamp": ts,
                "hash": h,
                "budget": budget,
            }

        expected = [
            row("ru", 3.0, "memory.transmit_understanding", t1, ambient, None),
            row("ru", 33.0, "rose_forest.add_knowledge", t1 + 10, r.outputs[0], store),
            row("storage_gb_hours", 2, "rose_forest.add_knowledge", t1 + 10, r.outputs[0], store),
            row(LARGE, 1234, f"spend:{hold.task_id}", t1 + 20, to_text("action", settle), b),
            row("ru", 1.5, "pay:tip", t1 + 30, to_text("action", tip), b),
        ]
        assert rows == expected
        assert await alice.usage(budget=b) == expected[3:]
        assert await alice.usage(budget=store) == expected[1:3]
        assert await alice.usage(since=t1 + 10) == expected[1:]
        assert await alice.usage(since=t1 + 31) == []
        assert await alice.usage(limit=2) == expected[3:]
        assert await alice.usage(budget=b, since=t1 + 25, limit=1) == expected[4:]
        assert await carol.usage() == []  # a credit to a wallet is not usage
        for bad in ({"budget": "nope"}, {"since": -1}, {"limit": 0}, {"since": "yesterday"}):
            with pytest.raises(InvalidInput):
                await alice.usage(**bad)


async def test_usage_pages_back_through_a_long_chain_and_over_the_app_socket():
    import trio

    from node.app.server import AppServer
    from node.local_node import AgentClient
    from node import usage

    clock = Clock()
    dna = {"resources": RESOURCES, "max_ledger_actions_per_window": 1024}
    async with LocalNode.open(clock=clock, dna=dna) as node:
        st, alice, carol, b = await metered(node, tokens=1_000_000)
        for i in range(usage.PAGE + 20):  # more than a page of actions back from the head
            await alice.commit_spend(b, {LARGE: 10}, task_id=f"t{i}")
            await alice.settle_spend(f"t{i}", {LARGE: i % 10 + 1})
            clock.t += 1
        rows = await alice.usage(budget=b, limit=1000)
        assert [r["op"] for r in rows] == [f"spend:t{i}" for i in range(usage.PAGE + 20)]
        assert sum(r["amount_used"] for r in rows) == units(
            await alice.get_budget(b), LARGE, "spent"
        )
        async with trio.open_nursery() as n:
            server = await n.start(AppServer(node).serve, "127.0.0.1", 0)
            async with AgentClient.connect(
                server.app_url, token=server.token, agent=alice.agent_id
            ) as remote:
                assert await remote.usage(budget=b, limit=1000) == rows
                assert await remote.usage(limit=3) == rows[-3:]
                async with remote.spend(b, {LARGE: 50}) as h:
                    h.use({LARGE: 7})
                assert (await remote.usage(limit=1))[0]["amount_used"] == 7
            n.cancel_scope.cancel()
