"""Budgets as authorizers on a real node: funding trees, cards, refine's choice, two-phase
spends, lineage, every refusal code, restart, and the cheats a modified node might sign."""

from __future__ import annotations

import copy

import pytest

from node.core.action import Signed
from node.core.errors import (
    AlreadyResolved,
    BudgetExceeded,
    BudgetVoid,
    ExistsDifferent,
    HoldExpired,
    InvalidChain,
    InvalidInput,
    NotAuthorized,
    NotFound,
    NotNarrowing,
    UnknownBudget,
    UnknownFunction,
    UnknownTarget,
    Unsolvable,
)
from node.core.crypto import from_text
from node.core.validate import validate_chain
from node.local_node import LocalNode

T0 = 1_730_678_400.0
TRIPLE = {
    "zome": "memory",
    "fn": "transmit_understanding",
    "payload": {"subject": "s", "predicate": "p", "object": "o"},
}  # 3 RU
LINK = {"zome": "rose_forest", "fn": "link_edge"}


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


async def tree(node):
    """A steward, alice holding a 500 RU root, bob with a 100 RU team budget and a 30 RU card."""
    st = node.steward
    alice, bob, carol = [await node.new_agent() for _ in range(3)]
    root = await st.mint_budget(
        {"ru": 500},
        holder=alice.agent_id,
        name="research",
        schema={"ops": ["*"], "can_fund": True, "can_delegate": True},
    )
    child = await alice.fund_budget(
        root,
        {"ru": 100},
        holder=bob.agent_id,
        name="team",
        schema={"ops": ["memory.*"], "max_per_call": {"ru": 5}, "min_reserve": {"ru": 10}},
    )
    card = await alice.delegate_budget(
        root,
        holder=bob.agent_id,
        max_spend={"ru": 30},
        schema={"ops": ["memory.transmit_understanding"]},
    )
    return st, alice, bob, carol, root, child, card


def ru(view, field="available"):
    return getattr(view.balance("ru"), field)


async def test_a_funding_tree_moves_value_and_refine_pays_from_the_first_budget_that_may():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        r = await bob.refine(instructions=[TRIPLE], budgets=[card, child])
        assert r.authorized_by == card and r.spent == {"ru": 3.0}
        assert ru(await bob.get_budget(card)) == 27.0
        assert ru(await bob.get_budget(card), "spent") == 3.0
        assert ru(await bob.get_budget(card), "funded") == 30.0  # a card shows its limit
        v = await alice.get_budget(root)
        assert (ru(v), ru(v, "reserved"), ru(v, "funded")) == (370.0, 30.0, 500.0)
        assert v.stage == "funded" and v.parent is None and v.holder == alice.agent_id
        # the allowance paid nothing
        assert (await bob.budget_status()).remaining_ru == 100.0
        # a card that does not allow the op is passed over for the next budget
        link = {
            **LINK,
            "payload": {"from_hash": r.outputs[0], "to_hash": r.outputs[0], "relation": "r"},
        }
        with pytest.raises(NotAuthorized) as e:
            await bob.refine(instructions=[link], budgets=[card, child])
        assert [a["code"] for a in e.value.attempts] == ["E_NOT_AUTHORIZED"] * 2
        ambient = await bob.refine(instructions=[link])
        assert ambient.authorized_by == "ambient"
        assert ambient.spent["ru"] > 0
        assert (await bob.budget_status()).remaining_ru == 100.0 - ambient.spent["ru"]


async def test_refine_reports_the_budget_that_got_furthest_with_every_attempt():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        tight = await alice.fund_budget(
            root,
            {"ru": 12},
            holder=bob.agent_id,
            schema={"ops": ["memory.*"], "min_reserve": {"ru": 10}},
        )
        small = await alice.delegate_budget(
            root, holder=bob.agent_id, max_spend={"ru": 2}, schema={"ops": ["memory.*"]}
        )
        with pytest.raises(Unsolvable) as e:  # authority < balance < solvability
            await bob.refine(instructions=[TRIPLE], budgets=[small, tight])
        assert e.value.shortfall == {"ru": 1.0}
        assert [(a["budget"], a["code"]) for a in e.value.attempts] == [
            (small, "E_BUDGET_EXCEEDED"),
            (tight, "E_UNSOLVABLE"),
        ]
        with pytest.raises(BudgetExceeded) as e2:
            await bob.refine(instructions=[TRIPLE], budgets=[small])
        assert str(e2.value) == f"E_BUDGET_EXCEEDED: need 3.00 RU, have 2.00 RU in budget {small}"
        assert (e2.value.need, e2.value.have, e2.value.budget, e2.value.resource) == (
            3.0,
            2.0,
            small,
            "ru",
        )
        # max_per_call bounds the whole call's summed cost: 2 triples = 6 RU > 5
        with pytest.raises(BudgetExceeded, match="max_per_call"):
            await bob.refine(instructions=[TRIPLE, TRIPLE], budgets=[child])
        assert ru(await bob.get_budget(child)) == 100.0


async def test_the_instructions_of_one_refine_commit_together_or_not_at_all():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        seq = bob._cell.state.seq
        bad = {
            "zome": "memory",
            "fn": "transmit_understanding",
            "payload": {"subject": "s", "predicate": "p", "object": "o" * 2000},
        }
        with pytest.raises(InvalidInput):
            await bob.refine(instructions=[TRIPLE, bad], budgets=[card])
        assert bob._cell.state.seq == seq and node.store.head(bob._cell.key.public)[0] == seq
        assert ru(await bob.get_budget(card)) == 30.0
        r = await bob.refine(instructions=[TRIPLE, TRIPLE, TRIPLE], budgets=[card])
        assert len(r.outputs) == 3 and r.spent == {"ru": 9.0}
        assert node.store.head(bob._cell.key.public)[0] == seq + 3


async def test_refusal_codes_of_the_ledger():
    clock = Clock()
    async with LocalNode.open(clock=clock) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        with pytest.raises(NotAuthorized):  # only a steward mints
            await alice.mint_budget({"ru": 5}, holder=alice.agent_id)
        with pytest.raises(BudgetExceeded, match="mint_limit"):
            await st.mint_budget({"ru": 20_000}, holder=alice.agent_id)
        with pytest.raises(UnknownBudget):  # alice funded it; bob holds it
            await alice.fund_budget(child, {"ru": 1}, holder=carol.agent_id)
        with pytest.raises(NotAuthorized):  # the team budget cannot fund
            await bob.fund_budget(child, {"ru": 1}, holder=carol.agent_id)
        own = await alice.fund_budget(
            root, {"ru": 10}, holder=alice.agent_id, schema={"ops": ["memory.*"], "can_fund": True}
        )
        with pytest.raises(NotNarrowing):  # wider than memory.*
            await alice.fund_budget(own, {"ru": 1}, holder=carol.agent_id, schema={"ops": ["*"]})
        with pytest.raises(NotNarrowing):  # a child cannot delegate what its parent cannot
            await alice.fund_budget(
                own,
                {"ru": 1},
                holder=carol.agent_id,
                schema={"ops": ["memory.*"], "can_delegate": True},
            )
        assert ru(await alice.get_budget(own)) == 10.0
        with pytest.raises(NotAuthorized):  # carol neither holds nor funded the card
            await carol.revoke_budget(card)
        with pytest.raises(UnknownTarget):
            await bob.refine(targets=["ac" + "A" * 43], instructions=[TRIPLE], budgets=[card])
        with pytest.raises(UnknownFunction):
            await bob.refine(instructions=[{"zome": "budget", "fn": "mint_budget"}])
        with pytest.raises(InvalidInput):
            await bob.commit_spend(child, {"ru": 0.0001}, task_id="x")
        with pytest.raises(InvalidInput):
            await bob.commit_spend(child, {"gold": 1}, task_id="x")
        h = await bob.commit_spend(child, {"ru": 20}, task_id="t1", timeout_s=60)
        assert h.state == "pending" and ru(await bob.get_budget(child), "pending") == 20.0
        assert (await bob.commit_spend(child, {"ru": 20}, task_id="t1")).id == h.id  # a retry
        with pytest.raises(ExistsDifferent):
            await bob.commit_spend(child, {"ru": 21}, task_id="t1")
        with pytest.raises(BudgetExceeded):  # the hold may settle at most what it holds
            await bob.settle_spend("t1", {"ru": 21}, payee=carol.agent_id)
        done = await bob.settle_spend("t1", {"ru": 12}, payee=carol.agent_id)
        assert done.state == "settled" and done.credit is not None
        with pytest.raises(AlreadyResolved):
            await bob.settle_spend("t1", {"ru": 1}, payee=carol.agent_id)
        with pytest.raises(AlreadyResolved):
            await bob.cancel_spend("t1")
        again = await bob.commit_spend(child, {"ru": 20}, task_id="t1")
        assert again.state == "settled"  # a retry after it resolved moves nothing
        assert ru(await bob.get_budget(child)) == 88.0
        await bob.commit_spend(child, {"ru": 5}, task_id="t2", timeout_s=60)
        clock.t += 61
        with pytest.raises(HoldExpired):
            await bob.settle_spend("t2", {"ru": 5}, payee=carol.agent_id)
        assert ru(await bob.get_budget(child)) == 88.0  # expiry gave it back
        with pytest.raises(NotFound):
            await bob.cancel_spend("nope")
        await alice.revoke_budget(card)
        with pytest.raises(BudgetVoid):
            await bob.refine(instructions=[TRIPLE], budgets=[card])
        with pytest.raises(BudgetVoid):
            await alice.revoke_budget(card)


async def test_revoking_returns_what_is_left_and_voids_the_descendants():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        await bob.refine(instructions=[TRIPLE], budgets=[card])
        await alice.revoke_budget(card)
        v = await alice.get_budget(root)
        assert (ru(v), ru(v, "reserved")) == (397.0, 0.0)  # 27 RU came back, 3 were spent
        assert (await bob.get_budget(card)).void
        # a holder voids its own budget: what is left goes back to its funder
        await bob.revoke_budget(child)
        assert ru(await alice.get_budget(root)) == 497.0
        # revoking a budget revokes what it funded, down the tree
        mid = await alice.fund_budget(
            root, {"ru": 50}, holder=bob.agent_id, schema={"ops": ["*"], "can_delegate": True}
        )
        leaf = await bob.delegate_budget(mid, holder=carol.agent_id, max_spend={"ru": 10})
        await alice.revoke_budget(mid)
        assert (await carol.get_budget(leaf)).void
        assert ru(await alice.get_budget(root)) == 497.0


async def test_settlements_credit_a_wallet_the_payee_spends_and_lineage_reaches_the_mint():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        assert await carol.wallet() is None
        async with bob.spend(child, {"ru": 20}, payee=carol.agent_id) as hold:
            hold.use({"ru": 7})
        assert hold.hold.state == "settled" and hold.hold.settled == {"ru": 7.0}
        wallet = await carol.wallet()
        assert ru(await carol.get_budget(wallet)) == 7.0
        with pytest.raises(RuntimeError):
            async with bob.spend(child, {"ru": 20}) as failed:
                raise RuntimeError("the LLM call failed")
        assert failed.hold.state == "cancelled"
        assert ru(await bob.get_budget(child)) == 93.0
        r = await carol.refine(instructions=[TRIPLE], budgets=wallet)
        steps = await carol.lineage(r.outputs[0])
        assert [s["kind"] for s in steps] == ["refine", "accept", "settle", "fund", "mint"]
        assert steps[0]["budget"] == wallet and steps[0]["amounts"] == {"ru": 3.0}
        assert steps[-1]["signer"] == st.agent_id and steps[-1]["budget"] == root
        out = await bob.refine(instructions=[TRIPLE], budgets=[card])
        assert [s["kind"] for s in await bob.lineage(out.outputs[0])] == ["refine", "card", "mint"]


async def test_budgets_and_holds_survive_a_restart(tmp_path):
    path = str(tmp_path / "n")
    clock = Clock()
    async with LocalNode.open(path, clock=clock) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        await bob.refine(instructions=[TRIPLE], budgets=[card])
        await bob.commit_spend(child, {"ru": 20}, task_id="t1")
        ids = (bob.agent_id, alice.agent_id)
        before = [(await node.agent(a)).agent_id for a in ids]
        views = [await alice.get_budget(b) for b in (root, child, card)]
    async with LocalNode.open(path, clock=clock) as node:
        bob, alice = [await node.agent(a) for a in ids]
        assert [await alice.get_budget(b) for b in (root, child, card)] == views
        assert (await bob.commit_spend(child, {"ru": 20}, task_id="t1")).state == "pending"
        await bob.settle_spend("t1", {"ru": 1}, payee=alice.agent_id)
        assert before


# -- cheats: actions a modified node signs, refused by the validator every authority runs
def _chain(node, agent):
    pub = agent._cell.key.public
    return node.store.chain(pub), node.store.entries_of(pub)


def _next(cs_chain, action_edit, key):
    """The chain's last action, edited and re-signed by its author as the next action."""
    last = cs_chain[-1]
    a = copy.deepcopy(last.action)
    a["seq"], a["prev"], a["ts"] = last.seq + 1, last.hash, last.ts + 1
    a.pop("witness", None)
    action_edit(a)
    return Signed.sign(a, key)


def _as_ledger_action(a: dict, chain: list, key, body: dict) -> None:
    """`a` made into the ledger action `body` following `chain`'s head (a cheat's frame)."""
    a.clear()
    a.update(
        type="ledger",
        author=key.public,
        seq=chain[-1].seq + 1,
        prev=chain[-1].hash,
        ts=chain[-1].ts + 1,
        ledger=body,
        budget={
            "op": "ledger",
            "cost": 0,
            **{k: chain[-1].action["budget"][k] for k in ("ws", "rem")},
        },
    )


async def test_cheats_on_the_ledger_are_invalid_chains():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        await bob.refine(instructions=[TRIPLE], budgets=[card])
        chain, entries = _chain(node, bob)
        validate_chain(chain, node.dna, node.app, entries)  # the honest chain is valid
        key = bob._cell.key
        card_b = from_text("budget", card)

        def over(a):  # ten more 3 RU writes: the card has 27 RU left
            a["budget"]["cost"] = 3000
            a["budget"]["call"] = a["seq"]

        spends = []
        for _ in range(10):
            s = _next(chain + spends, over, key)
            spends.append(s)
        with pytest.raises(InvalidChain) as e:
            validate_chain(chain + spends, node.dna, node.app)
        assert e.value.reason == "ledger_budget_exceeded"

        def outside_schema(a):  # the card allows transmit_understanding only
            a["type"], a["count"] = "charge", 1
            a.pop("entry"), a.pop("entry_type")
            a["budget"].update(op="recall_understandings", cost=100, call=a["seq"])

        with pytest.raises(InvalidChain) as e:
            validate_chain(chain + [_next(chain, outside_schema, key)], node.dna, node.app)
        assert e.value.reason == "ledger_not_authorized"

        accept = next(s for s in chain if s.action.get("ledger", {}).get("kind") == "accept")

        def accept_twice(a):
            a.clear()
            a.update(copy.deepcopy(accept.action))
            a["seq"], a["prev"], a["ts"] = chain[-1].seq + 1, chain[-1].hash, chain[-1].ts + 1

        with pytest.raises(InvalidChain) as e:
            validate_chain(chain + [_next(chain, accept_twice, key)], node.dna, node.app)
        assert e.value.reason == "ledger_already_resolved"

        def self_mint(a):  # bob is no steward: no budget from nothing
            mint = {"kind": "mint", "to": key.public, "name": "", "amounts": {"ru": 1}}
            _as_ledger_action(a, chain, key, {**mint, "schema": {}})

        with pytest.raises(InvalidChain) as e:
            validate_chain(chain + [_next(chain, self_mint, key)], node.dna, node.app)
        assert e.value.reason == "ledger_not_authorized"
        await alice.revoke_budget(card)
        chain, entries = _chain(node, bob)

        def spend_void(a):
            a.clear()
            a.update(copy.deepcopy(spends[0].action))
            a["seq"], a["prev"], a["ts"] = chain[-1].seq + 1, chain[-1].hash, chain[-1].ts + 1
            a["budget"].update(cost=3000, call=a["seq"], pay=card_b)

        with pytest.raises(InvalidChain) as e:
            validate_chain(chain + [_next(chain, spend_void, key)], node.dna, node.app)
        assert e.value.reason == "ledger_budget_void"


# -- across real libp2p nodes
async def held(cluster, agent, budget_id, timeout=20):
    """Wait (on the cluster's changes, bounded) until `agent`'s chain has accepted the budget."""
    import trio

    bid = from_text("budget", budget_id)
    with trio.fail_after(timeout):
        while bid not in agent._cell.ledger.budgets:
            await cluster.wait_changed()


async def test_a_card_delegated_on_one_node_is_spent_on_another_and_every_node_agrees():
    from node.sdk import LocalCluster

    t = [T0]
    async with LocalCluster.open(n=3, clock=lambda: t[0], rogue={1: "overspend_budget"}) as c:
        st = c.nodes[0].steward
        alice = await c.nodes[0].new_agent()
        mallory = await c.nodes[1].new_agent()
        bob = await c.nodes[2].new_agent()
        await c.await_consistency(timeout=20)
        root = await st.mint_budget(
            {"ru": 500}, holder=alice.agent_id, schema={"ops": ["*"], "can_delegate": True}
        )
        card = await alice.delegate_budget(
            root, holder=bob.agent_id, max_spend={"ru": 30}, schema={"ops": ["memory.*"]}
        )
        await held(c, bob, card)
        r = await bob.refine(instructions=[TRIPLE, TRIPLE], budgets=card)
        assert r.authorized_by == card and r.spent == {"ru": 6.0}
        await c.await_consistency(timeout=20)
        views = [await n.get_budget(card) for n in c.nodes]
        assert all(v == views[0] for v in views) and ru(views[0]) == 24.0
        roots = [await n.get_budget(root) for n in c.nodes]
        assert all(v == roots[0] for v in roots) and ru(roots[0], "reserved") == 30.0
        # a modified node spends past its card: every honest authority refuses and warrants
        mcard = await alice.delegate_budget(
            root, holder=mallory.agent_id, max_spend={"ru": 5}, schema={"ops": ["memory.*"]}
        )
        await held(c, mallory, mcard)
        await mallory.refine(instructions=[TRIPLE], budgets=mcard)
        await mallory.refine(instructions=[TRIPLE], budgets=mcard)  # 6 RU on a 5 RU card
        await c.await_consistency(timeout=20)
        for node in (c.nodes[0], c.nodes[2]):
            assert {(w.agent_id, w.reason) for w in node.warrants()} == {
                (mallory.agent_id, "ledger_budget_exceeded")
            }


def test_the_cli_lists_budgets_as_json_and_as_a_tree_and_traces_lineage(tmp_path, capsys):
    import json

    import trio

    from node import cli

    path = str(tmp_path / "n")

    async def build():
        async with LocalNode.open(path, clock=Clock()) as node:
            st, alice, bob, carol, root, child, card = await tree(node)
            r = await bob.refine(instructions=[TRIPLE], budgets=[card])
            return root, child, card, r.outputs[0]

    root, child, card, out = trio.run(build)
    assert cli.main(["budgets", "--path", path, "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {root, child, card}
    assert set(rows[card]) == {
        "id",
        "name",
        "kind",
        "holder",
        "parent",
        "stage",
        "void",
        "balances",
    }
    assert rows[card]["balances"]["ru"] == {
        "available": 27.0,
        "reserved": 0.0,
        "pending": 0.0,
        "spent": 3.0,
        "funded": 30.0,
    }
    assert rows[root]["balances"]["ru"]["reserved"] == 30.0
    assert cli.main(["budgets", "--path", path, "--tree"]) == 0
    drawn = capsys.readouterr().out.splitlines()
    assert drawn[0].startswith("research ") and "available 370.00 RU" in drawn[0]
    assert [line[:3] for line in drawn[1:]] == ["├─ ", "└─ "]  # the team, then the card
    assert cli.main(["lineage", out, "--path", path, "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)
    assert [s["kind"] for s in steps] == ["refine", "card", "mint"]
    assert cli.main(["lineage", out, "--path", path]) == 0
    assert "mint" in capsys.readouterr().out


async def test_the_same_surface_over_the_app_socket():
    import trio

    from node.agent_api import BudgetView
    from node.app.client import NodeClient
    from node.app.server import AppServer
    from node.local_node import AgentClient

    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        async with trio.open_nursery() as n:
            server = await n.start(AppServer(node).serve, "127.0.0.1", 0)
            url, token = server.app_url, server.token
            async with AgentClient.connect(url, token=token, agent=bob.agent_id) as rbob:
                v = await rbob.get_budget(card)
                assert isinstance(v, BudgetView) and v == await bob.get_budget(card)
                r = await rbob.refine(instructions=[TRIPLE], budgets=[card])
                assert (r.authorized_by, r.spent) == (card, {"ru": 3.0})
                small = await alice.delegate_budget(root, holder=bob.agent_id, max_spend={"ru": 1})
                with pytest.raises(BudgetExceeded) as e:
                    await rbob.refine(instructions=[TRIPLE], budgets=small)
                assert (e.value.need, e.value.have, e.value.budget) == (3.0, 1.0, small)
                assert e.value.attempts == [
                    {"budget": small, "code": "E_BUDGET_EXCEEDED", "message": e.value.message}
                ]
                tight = await alice.fund_budget(
                    root, {"ru": 11}, holder=bob.agent_id, schema={"min_reserve": {"ru": 10}}
                )
                with pytest.raises(Unsolvable) as e2:
                    await rbob.refine(instructions=[TRIPLE], budgets=tight)
                assert e2.value.shortfall == {"ru": 2.0}
                async with rbob.spend(child, {"ru": 5}, payee=carol.agent_id) as hold:
                    hold.use({"ru": 2})
                assert hold.hold.state == "settled"
                assert ru(await carol.get_budget(await carol.wallet())) == 2.0
            async with NodeClient.connect(url, token=token) as op:
                rows = await op.budgets()
                assert {r["id"] for r in rows} >= {root, child, card, small, tight}
                steps = await op.lineage(r.outputs[0])
                assert [s["kind"] for s in steps] == ["refine", "card", "mint"]
            n.cancel_scope.cancel()


async def test_an_offer_delivered_twice_is_taken_once():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        offer = node.store.record(from_text("budget", card))[0]
        before = bob._cell.state
        assert await node.budgets.take_offer(bob._cell, offer) is False  # taken already
        assert bob._cell.state == before
        with pytest.raises(InvalidInput):  # an offer made to someone else
            await node.budgets.take_offer(carol._cell, offer)
        assert carol._cell.ledger.budgets == {}


async def test_a_hold_settled_twice_is_an_invalid_chain():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        await bob.commit_spend(child, {"ru": 20}, task_id="t1")
        await bob.settle_spend("t1", {"ru": 5}, payee=carol.agent_id)
        chain, entries = _chain(node, bob)
        validate_chain(chain, node.dna, node.app, entries)
        key = bob._cell.key

        def again(a):  # the same settle once more: a second payout from one hold
            pass

        with pytest.raises(InvalidChain) as e:
            validate_chain(chain + [_next(chain, again, key)], node.dna, node.app, entries)
        assert e.value.reason == "ledger_already_resolved"


async def test_value_from_an_offer_no_valid_chain_holds_is_never_taken():
    """A Sybil's 'fund' from a budget it never had is signed and well formed; only the
    offer's own chain shows it is invalid, so a holder's accept waits for that chain and is
    refused when it is warranted, and the node never writes the accept at all."""
    from node.core.validate import validate_next

    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        sybil = carol._cell
        forged = Signed.sign(
            {
                "type": "ledger",
                "author": sybil.key.public,
                "seq": sybil.state.seq + 1,
                "prev": sybil.state.hash,
                "ts": sybil.state.ts + 1,
                "ledger": {
                    "kind": "fund",
                    "parent": bytes(32),
                    "to": bob._cell.key.public,
                    "name": "free",
                    "amounts": {"ru": 10**6},
                    "schema": {},
                },
                "budget": {
                    "op": "ledger",
                    "cost": 0,
                    "ws": sybil.state.budget.window_start_us,
                    "rem": sybil.state.budget.remaining_mru,
                },
            },
            sybil.key,
        )
        seq = bob._cell.state.seq
        with pytest.raises(UnknownBudget):  # on no chain this node holds: never accepted
            await node.budgets.take_offer(bob._cell, forged)
        assert bob._cell.state.seq == seq
        # a modified node writes the accept anyway: validators holding other chains refuse it
        chain, entries = _chain(node, bob)
        key = bob._cell.key

        def take(a):
            _as_ledger_action(a, chain, key, {"kind": "accept", "offer": [forged.body, forged.sig]})

        accept = _next(chain, take, key)
        cs = validate_chain(chain, node.dna, node.app, entries)
        for known, reason in ((None, "offer_unverified"), (False, "offer_invalid")):
            with pytest.raises(InvalidChain) as e:
                validate_next(cs, accept, node.dna, node.app, offers=lambda o, k=known: k)
            assert e.value.reason == reason
        real = node.store.record(from_text("budget", card))[0]  # an offer on a chain held
        assert real.hash in bob._cell.ledger.accepted


async def test_stages_and_the_ledger_action_limit_of_the_dna():
    dna = {"max_ledger_actions_per_window": 6}
    async with LocalNode.open(clock=Clock(), dna=dna) as node:
        st = node.steward
        alice = await node.new_agent()
        plan = await st.mint_budget(
            {}, holder=alice.agent_id, name="idea", schema={"funding_target": {"ru": 100}}
        )
        part = await st.mint_budget(
            {"ru": 40}, holder=alice.agent_id, schema={"funding_target": {"ru": 100}}
        )
        full = await st.mint_budget(
            {"ru": 100}, holder=alice.agent_id, schema={"funding_target": {"ru": 100}}
        )
        assert [(await alice.get_budget(b)).stage for b in (plan, part, full)] == [
            "planning",
            "partial",
            "funded",
        ]
        # the steward wrote 3 mints; alice 3 accepts: a 4th mint is the steward's 4th of 6,
        # alice's 4th accept; then both run out
        await st.mint_budget({"ru": 1}, holder=alice.agent_id)
        await st.mint_budget({"ru": 1}, holder=alice.agent_id)
        await st.mint_budget({"ru": 1}, holder=alice.agent_id)
        seq = node.cells[node.dna.stewards[0]].state.seq
        with pytest.raises(BudgetExceeded, match="max_ledger_actions_per_window"):
            await st.mint_budget({"ru": 1}, holder=alice.agent_id)
        assert node.cells[node.dna.stewards[0]].state.seq == seq


def test_a_network_made_before_budgets_keeps_its_identity_and_mints_nothing():
    from node.core.dna import Dna
    from zomes import APP

    new = Dna.for_app(APP)
    assert Dna.from_dict(new.to_dict()).hash == new.hash
    stored = new.to_dict()
    del stored["resources"], stored["max_ledger_actions_per_window"]
    old = Dna.from_dict(stored)
    assert old.to_dict() == stored  # the same hash: the same network as before
    assert old.before_budgets and old.resources == {"ru": {"mint_limit": 0}}


async def test_budget_precedence_each_conflicting_pair_gets_the_first_checks_code():
    """core/admission.py's order, for the explicit budgets' codes: target, warrant,
    authority, void, balance, solvency (each pair: both checks fail, the first one's code)."""
    from types import SimpleNamespace

    from node.core.admission import rank
    from node.core.errors import Warranted

    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        link = {
            **LINK,
            "payload": {"from_hash": "ac" + "A" * 43, "to_hash": "ac" + "A" * 43, "relation": "r"},
        }
        poor = await alice.fund_budget(
            root,
            {"ru": 11},
            holder=bob.agent_id,
            schema={"ops": ["memory.*"], "min_reserve": {"ru": 10}},
        )
        await alice.revoke_budget(poor)  # void, and its schema does not allow link_edge
        cases = []
        # authority + void: a void budget whose schema does not allow the op
        with pytest.raises(NotAuthorized):
            await bob.refine(instructions=[link], budgets=[poor])
        cases.append(("E_NOT_AUTHORIZED", "E_BUDGET_VOID"))
        # void + balance: a void budget too poor for the write
        with pytest.raises(BudgetVoid):
            await bob.refine(instructions=[TRIPLE, TRIPLE, TRIPLE, TRIPLE], budgets=[poor])
        cases.append(("E_BUDGET_VOID", "E_BUDGET_EXCEEDED"))
        # balance + solvency: more than the balance is also below the reserve
        tight = await alice.fund_budget(
            root, {"ru": 2}, holder=bob.agent_id, schema={"min_reserve": {"ru": 1}}
        )
        with pytest.raises(BudgetExceeded):
            await bob.refine(instructions=[TRIPLE], budgets=tight)
        cases.append(("E_BUDGET_EXCEEDED", "E_UNSOLVABLE"))
        # authority + void on a fund: a void parent that cannot fund
        with pytest.raises(NotAuthorized):
            await bob.fund_budget(poor, {"ru": 1}, holder=carol.agent_id)
        # authority + balance: a card narrower than allowed and more than the parent has
        with pytest.raises(NotAuthorized):
            await bob.delegate_budget(child, holder=carol.agent_id, max_spend={"ru": 10**6})
        cases.append(("E_NOT_AUTHORIZED", "E_BUDGET_EXCEEDED"))
        # two budgets failing at the authority stage (unknown, void): the first presented
        with pytest.raises(UnknownBudget) as e:
            await bob.refine(instructions=[TRIPLE], budgets=["bu" + "A" * 43, poor])
        assert [a["code"] for a in e.value.attempts] == ["E_UNKNOWN_BUDGET", "E_BUDGET_VOID"]
        # warrant + void + authority: a warranted agent is refused as such
        bob._cell.warrant = SimpleNamespace(reason="over_spend", body={"seq": 1})
        with pytest.raises(Warranted):
            await bob.refine(instructions=[link], budgets=[poor])
        cases.append(("E_WARRANTED", "E_NOT_AUTHORIZED"))
        with pytest.raises(Warranted):
            await bob.commit_spend(poor, {"ru": 1}, task_id="w")
        cases.append(("E_WARRANTED", "E_BUDGET_VOID"))
        for first, second in cases:
            assert rank(first) < rank(second)


async def test_check_with_budgets_foresees_refine_and_writes_nothing():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        small = await alice.delegate_budget(root, holder=bob.agent_id, max_spend={"ru": 2})
        seq = bob._cell.state.seq
        payload = TRIPLE["payload"]
        ok = await bob.check("memory", "transmit_understanding", payload, budgets=[card])
        assert ok.ok and ok.code is None and ok.need == 3.0 and ok.have == 30.0
        over = await bob.check("memory", "transmit_understanding", payload, budgets=small)
        assert (over.ok, over.code, over.need, over.have) == (False, "E_BUDGET_EXCEEDED", 3.0, 2.0)
        with pytest.raises(BudgetExceeded):  # what the real call meets
            await bob.refine(instructions=[TRIPLE], budgets=small)
        denied = await bob.check("rose_forest", "add_knowledge", {"content": "x"}, budgets=[card])
        assert denied.code == "E_NOT_AUTHORIZED"
        assert bob._cell.state.seq == seq
        assert ru(await bob.get_budget(card)) == 30.0


async def test_an_expired_cards_escrow_returns_to_its_parent():
    clock = Clock()
    async with LocalNode.open(clock=clock) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        short = await alice.delegate_budget(
            root, holder=bob.agent_id, max_spend={"ru": 20}, expires_at=int(clock.t) + 60
        )
        await bob.refine(instructions=[TRIPLE], budgets=short)
        assert ru(await alice.get_budget(root), "reserved") == 50.0
        clock.t += 61
        with pytest.raises(BudgetVoid, match="expired"):  # refused: nothing written
            await bob.refine(instructions=[TRIPLE], budgets=short)
        await bob.refine(instructions=[TRIPLE], budgets=card)  # bob's next budget call
        v = await alice.get_budget(root)
        assert (ru(v, "reserved"), ru(v)) == (30.0, 350.0 + 17.0)  # 17 of 20 came back
        assert (await bob.get_budget(short)).void


async def test_revoking_a_budget_cancels_its_pending_holds_and_returns_them():
    async with LocalNode.open(clock=Clock()) as node:
        st, alice, bob, carol, root, child, card = await tree(node)
        await bob.commit_spend(card, {"ru": 20}, task_id="t")
        await alice.revoke_budget(card)
        v = await alice.get_budget(root)
        assert (ru(v), ru(v, "reserved")) == (400.0, 0.0)  # all 30 came back, the hold's 20 too
        with pytest.raises(AlreadyResolved):
            await bob.settle_spend("t", {"ru": 5}, payee=carol.agent_id)
