"""Governance on a real node: proposals, votes and their outcome, market weight from stakes,
grants into envelopes, every refusal code, restart, the app socket, the cheats a modified node
might sign, and a proposal approved by votes from three nodes of a libp2p cluster."""

from __future__ import annotations

import copy

import pytest

from node.core import governance as G
from node.core.action import Signed
from node.core.crypto import from_text, to_text
from node.core.errors import (
    AlreadyVoted,
    InsufficientRU,
    InvalidChain,
    InvalidInput,
    NoEvidence,
    NotAuthorized,
    NotFound,
    UnknownBudget,
)
from node.core.validate import validate_chain
from node.local_node import LocalNode

T0 = 1_730_678_400.0
TRIPLE = {"subject": "s", "predicate": "p", "object": "o"}
LLM = "llm_tokens.large"
DNA = {
    "resources": {"ru": {"mint_limit": 10_000_000}, LLM: {"mint_limit": 10_000_000}},
    "governance": {"voters": "agents", "quorum": 2},
}
GOOD = {"evidence": 0.9, "novelty": 0.5, "alignment": 0.8, "community": 0.7}  # 0.74
FAIR = {"evidence": 0.7, "novelty": 0.5, "alignment": 0.8, "community": 0.7}  # 0.67
POOR = {"evidence": 0.1, "novelty": 0.2, "alignment": 0.3, "community": 0.2}  # 0.185


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


async def town(node):
    """alice holds a pool (500 RU, 100,000 large-model tokens); bob wrote a record; carol and
    dave vote."""
    alice, bob, carol, dave = [await node.new_agent() for _ in range(4)]
    pool = await node.steward.mint_budget(
        {"ru": 500, LLM: 100_000},
        holder=alice.agent_id,
        name="pool",
        schema={"ops": ["*"], "can_fund": True},
    )
    rec = await bob.call("memory", "transmit_understanding", TRIPLE)
    return alice, bob, carol, dave, pool, rec


def head(agent):
    return agent._cell.state.seq


async def test_a_quorum_of_approvals_funds_the_envelope_and_every_number_is_derived():
    async with LocalNode.open(clock=Clock(), dna=DNA) as node:
        alice, bob, carol, dave, pool, rec = await town(node)
        pid = await alice.propose_allocation(
            "agent", bob.agent_id, {LLM: 4000, "ru": 50}, "bob links well", [rec], pool
        )
        p = await carol.get_proposal(pid)
        assert (p.state, p.score, p.votes, p.granted) == ("open", None, [], {})
        assert (p.requested, p.evidence, p.proposer) == (
            {LLM: 4000, "ru": 50.0},
            [rec],
            alice.agent_id,
        )
        await carol.vote(pid, "approve", GOOD)
        assert (await dave.get_proposal(pid)).state == "open"  # quorum is 2
        await dave.vote(pid, "approve", FAIR)
        p = await bob.get_proposal(pid)
        # 0.35 evidence + 0.25 novelty + 0.20 alignment + 0.20 community, averaged: (0.74+0.67)/2
        assert p.state == "granted" and p.score == 0.705
        assert [v["score"] for v in p.votes] == [0.74, 0.67]
        assert p.granted == {LLM: 4000, "ru": 50.0}  # no stakes: market weight 0
        env = await carol.get_envelope("agent", bob.agent_id)
        assert (env.priority_score, env.market_weight, env.roi_score) == (0.705, 0.0, None)
        assert [b.balance(LLM).available for b in env.budgets] == [4000]
        assert env.budgets[0].parent == pool and env.holder == bob.agent_id
        left = (await alice.get_budget(pool)).balance(LLM).available
        assert left == 100_000 - 4000
        # the envelope's budgets are spent like any other, and their paid edges count for ROI
        r = await bob.refine(
            instructions=[{"zome": "rose_forest", "fn": "link_edge", "payload": _edge(rec)}],
            budgets=[env.budgets[0].id],
        )
        assert r.authorized_by == env.budgets[0].id
        env = await bob.get_envelope("agent", bob.agent_id)
        assert env.edges == 1 and env.llm_tokens_spent == 0 and env.roi_score is None


def _edge(rec):
    return {"from_hash": rec, "to_hash": rec, "relation": "supports"}


async def test_stakes_move_the_grant_within_bounds_but_never_past_the_threshold():
    async with LocalNode.open(clock=Clock(), dna=DNA) as node:
        alice, bob, carol, dave, pool, rec = await town(node)
        before = (await carol.budget_status()).remaining_ru
        await carol.endorse("agent", bob.agent_id, 5)  # a real spend from the allowance
        assert (await carol.budget_status()).remaining_ru == before - 5
        env = await alice.get_envelope("agent", bob.agent_id)
        # 0.5 x 5 / (5 + 10 damping)
        assert env.market_weight == 0.166 and env.stakes == {"for": 5.0, "against": 0.0}
        pid = await alice.propose_allocation("agent", bob.agent_id, {LLM: 3000}, "j", [rec], pool)
        await carol.vote(pid, "approve", GOOD)
        await dave.vote(pid, "approve", GOOD)
        assert (await alice.get_proposal(pid)).granted == {LLM: 3000 * 1166 // 1000}
        # enthusiasm never bypasses evidence: approvals with a score below 0.5 grant nothing
        for _ in range(3):
            await dave.endorse("agent", carol.agent_id, 10)
        assert (await alice.get_envelope("agent", carol.agent_id)).market_weight == 0.375
        low = await alice.propose_allocation("agent", carol.agent_id, {LLM: 10}, "j", [rec], pool)
        await bob.vote(low, "approve", POOR)
        await dave.vote(low, "approve", POOR)
        p = await alice.get_proposal(low)
        assert (p.state, p.granted) == ("rejected", {})
        assert (await alice.get_envelope("agent", carol.agent_id)).budgets == []
        # opposing stakes lower the weight, never below -0.5
        await bob.endorse("agent", dave.agent_id, 10, direction=-1)
        assert (await alice.get_envelope("agent", dave.agent_id)).market_weight == -0.25
        # a stake is paid before it is written: past the allowance, or above 10 RU, nothing is
        with pytest.raises(InvalidInput):
            await dave.endorse("record", rec, 10.5)
        for _ in range(7):  # dave had 100 RU and staked 30
            await dave.endorse("record", rec, 10)
        n = head(dave)
        with pytest.raises(InsufficientRU):
            await dave.endorse("record", rec, 1)
        assert head(dave) == n
        assert (await bob.get_envelope("record", rec)).stakes == {"for": 70.0, "against": 0.0}


async def test_reject_and_defer_change_nothing_and_a_grant_is_capped_at_what_the_budget_gives():
    async with LocalNode.open(clock=Clock(), dna=DNA) as node:
        alice, bob, carol, dave, pool, rec = await town(node)
        rej = await alice.propose_allocation("agent", bob.agent_id, {"ru": 10}, "j", [rec], pool)
        await carol.vote(rej, "reject", GOOD)
        await dave.vote(rej, "approve", GOOD)  # a tie is no majority
        dfr = await alice.propose_allocation("agent", bob.agent_id, {"ru": 10}, "j", [rec], pool)
        await carol.vote(dfr, "defer", GOOD)
        await dave.vote(dfr, "defer", GOOD)
        assert [(await alice.get_proposal(x)).state for x in (rej, dfr)] == ["rejected", "deferred"]
        assert (await alice.get_budget(pool)).balance("ru").available == 500.0
        assert (await alice.get_envelope("agent", bob.agent_id)).budgets == []
        big = await alice.propose_allocation("agent", bob.agent_id, {"ru": 900}, "j", [rec], pool)
        await carol.vote(big, "approve", GOOD)
        await dave.vote(big, "approve", GOOD)
        assert (await alice.get_proposal(big)).granted == {"ru": 500.0}
        assert (await alice.get_budget(pool)).balance("ru").available == 0.0
        # approved with nothing left to give: it stays approved, nothing is written
        late = await alice.propose_allocation("agent", bob.agent_id, {"ru": 5}, "j", [rec], pool)
        await carol.vote(late, "approve", GOOD)
        n = head(alice)
        await dave.vote(late, "approve", GOOD)
        assert head(alice) == n + 1  # the vote's accept, and no grant
        assert ((await alice.get_proposal(late)).state, node.governance.grants_failed) == (
            "approved",
            1,
        )


async def test_refusals_name_their_code_and_write_nothing():
    async with LocalNode.open(clock=Clock(), dna=DNA) as node:
        alice, bob, carol, dave, pool, rec = await town(node)
        team = await alice.fund_budget(pool, {"ru": 5}, holder=bob.agent_id)
        n = head(alice)
        with pytest.raises(NoEvidence):
            await alice.propose_allocation("agent", bob.agent_id, {"ru": 1}, "j", [], pool)
        nothing = to_text("action", bytes(range(32)))
        with pytest.raises(NoEvidence):  # a well-formed hash of no record
            await alice.propose_allocation("agent", bob.agent_id, {"ru": 1}, "j", [nothing], pool)
        with pytest.raises(InvalidInput):
            await alice.propose_allocation("team", bob.agent_id, {"ru": 1}, "j", [rec], pool)
        with pytest.raises(InvalidInput):
            await alice.propose_allocation("agent", bob.agent_id, {}, "j", [rec], pool)
        with pytest.raises(UnknownBudget):  # bob holds no such budget
            await bob.propose_allocation("agent", bob.agent_id, {"ru": 1}, "j", [rec], pool)
        with pytest.raises(NotAuthorized):  # it cannot fund, so it could never be granted
            await bob.propose_allocation("agent", bob.agent_id, {"ru": 1}, "j", [rec], team)
        assert head(alice) == n
        pid = await alice.propose_allocation("record", rec, {"ru": 5}, "j", [rec], pool)
        n = head(carol)
        for bad in (
            {**GOOD, "evidence": 1.5},
            {**GOOD, "novelty": -0.1},
            {k: v for k, v in GOOD.items() if k != "community"},
            {**GOOD, "extra": 0.5},
        ):
            with pytest.raises(InvalidInput):
                await carol.vote(pid, "approve", bad)
        with pytest.raises(InvalidInput):
            await carol.vote(pid, "maybe", GOOD)
        with pytest.raises(NotFound):
            await carol.vote(rec, "approve", GOOD)  # a record, not a proposal
        assert head(carol) == n
        await carol.vote(pid, "approve", GOOD)
        with pytest.raises(AlreadyVoted):
            await carol.vote(pid, "reject", GOOD)
        await dave.vote(pid, "approve", GOOD)
        p = await alice.get_proposal(pid)
        assert p.state == "granted"
        env = await alice.get_envelope("record", rec)
        assert env.holder == bob.agent_id and env.budgets[0].holder == bob.agent_id
        with pytest.raises(AlreadyVoted):  # also after it resolved
            await dave.vote(pid, "approve", GOOD)
        with pytest.raises(InvalidInput):
            await carol.endorse("agent", bob.agent_id, 5, direction=0)


async def test_only_the_dnas_voters_vote_and_the_default_is_its_stewards():
    async with LocalNode.open(clock=Clock()) as node:
        alice, bob = await node.new_agent(), await node.new_agent()
        pool = await node.steward.mint_budget(
            {"ru": 100}, holder=alice.agent_id, schema={"can_fund": True}
        )
        rec = await bob.call("memory", "transmit_understanding", TRIPLE)
        pid = await alice.propose_allocation("agent", bob.agent_id, {"ru": 10}, "j", [rec], pool)
        n = head(bob)
        with pytest.raises(NotAuthorized):
            await bob.vote(pid, "approve", GOOD)
        assert head(bob) == n
        await node.steward.vote(pid, "approve", GOOD)  # quorum 1
        assert (await alice.get_proposal(pid)).granted == {"ru": 10.0}


async def test_proposals_and_tallies_survive_a_restart(tmp_path):
    clock = Clock()
    async with LocalNode.open(str(tmp_path), clock=clock, dna=DNA) as node:
        alice, bob, carol, dave, pool, rec = await town(node)
        await carol.endorse("agent", bob.agent_id, 2)
        pid = await alice.propose_allocation("agent", bob.agent_id, {"ru": 10}, "j", [rec], pool)
        await carol.vote(pid, "approve", GOOD)
        ids = (alice.agent_id, bob.agent_id, dave.agent_id)
        before = await alice.get_proposal(pid)
    async with LocalNode.open(str(tmp_path), clock=clock) as node:
        alice, bob, dave = [await node.agent(i) for i in ids]
        assert await alice.get_proposal(pid) == before
        assert (await alice.get_envelope("agent", bob.agent_id)).stakes["for"] == 2.0
        with pytest.raises(AlreadyVoted):
            await (await node.agent(before.votes[0]["voter"])).vote(pid, "approve", GOOD)
        await dave.vote(pid, "approve", GOOD)
        assert (await alice.get_proposal(pid)).granted == {"ru": 10.83}


# -- what a modified node might sign
def _chain(node, agent):
    return node.store.chain(agent._cell.key.public)


def _resign(chain, edit, key):
    """The chain's last action, edited and re-signed by its author in its place."""
    a = copy.deepcopy(chain[-1].action)
    edit(a)
    return Signed.sign(a, key)


def _after(chain, body, key, cost=0):
    last = chain[-1]
    a = {
        "type": "ledger",
        "author": key.public,
        "seq": last.seq + 1,
        "prev": last.hash,
        "ts": last.ts + 1,
        "ledger": body,
        "budget": {
            "op": "ledger",
            "cost": cost,
            **{k: last.action["budget"][k] for k in ("ws", "rem")},
        },
    }
    return Signed.sign(a, key)


def _reason(node, chain):
    with pytest.raises(InvalidChain) as e:
        validate_chain(chain, node.dna, node.app)
    return e.value.reason


async def test_governance_cheats_are_invalid_chains():
    async with LocalNode.open(clock=Clock(), dna=DNA) as node:
        alice, bob, carol, dave, pool, rec = await town(node)
        pid = await alice.propose_allocation("agent", bob.agent_id, {"ru": 40}, "j", [rec], pool)
        opid = from_text("action", pid)
        await carol.vote(pid, "approve", GOOD)
        ck, ak = carol._cell.key, alice._cell.key
        # a second vote on the same proposal
        cchain = _chain(node, carol)
        validate_chain(cchain, node.dna, node.app)
        vote = dict(cchain[-1].action["ledger"], decision="reject")
        assert _reason(node, cchain + [_after(cchain, vote, ck)]) == "ledger_already_voted"
        # a grant before the quorum (one vote of two)
        achain = _chain(node, alice)
        grant = {
            "kind": "fund",
            "parent": from_text("budget", pool),
            "to": bob._cell.key.public,
            "name": "",
            "amounts": {"ru": 40_000},
            "schema": {},
            "entity": ["agent", bob._cell.key.public],
            "proposal": opid,
            "score": 740,
            "market_weight": 0,
            "endorsements": [],
        }
        assert _reason(node, achain + [_after(achain, grant, ak)]) == "ledger_not_authorized"
        await dave.vote(pid, "approve", GOOD)
        achain = _chain(node, alice)
        assert achain[-1].action["ledger"]["proposal"] == opid  # the honest grant
        validate_chain(achain, node.dna, node.app)

        def more(a):
            a["ledger"]["amounts"] = {"ru": 40_001}

        assert _reason(node, achain[:-1] + [_resign(achain, more, ak)]) == "ledger_budget_exceeded"

        def weightier(a):  # a market weight no cited endorsement gives
            a["ledger"]["market_weight"] = 500
            a["ledger"]["amounts"] = {"ru": 60_000}

        assert _reason(node, achain[:-1] + [_resign(achain, weightier, ak)]) == "malformed"
        assert _reason(node, achain + [_after(achain, grant, ak)]) == "malformed"  # twice
        # an endorsement that does not pay its stake
        bchain = _chain(node, bob)
        endorse = {
            "kind": "endorse",
            "entity": ["agent", ck.public],
            "stake": 5000,
            "direction": 1,
            "to": ck.public,
        }
        bk = bob._cell.key
        assert _reason(node, bchain + [_after(bchain, endorse, bk)]) == "wrong_cost"


async def test_a_vote_by_a_non_voter_is_an_invalid_chain():
    async with LocalNode.open(clock=Clock()) as node:
        alice, bob = await node.new_agent(), await node.new_agent()
        pool = await node.steward.mint_budget(
            {"ru": 100}, holder=alice.agent_id, schema={"can_fund": True}
        )
        rec = await bob.call("memory", "transmit_understanding", TRIPLE)
        pid = await alice.propose_allocation("agent", bob.agent_id, {"ru": 10}, "j", [rec], pool)
        chain = _chain(node, bob)
        body = {
            "kind": "vote",
            "proposal": from_text("action", pid),
            "decision": "approve",
            "scores": {n: 900 for n, _ in G.SCORE_WEIGHTS},
            "to": alice._cell.key.public,
        }
        assert (
            _reason(node, chain + [_after(chain, body, bob._cell.key)]) == "ledger_not_authorized"
        )


async def test_the_same_surface_over_the_app_socket():
    import trio

    from node.agent_api import EnvelopeView, ProposalView
    from node.app.server import AppServer
    from node.local_node import AgentClient

    async with LocalNode.open(clock=Clock(), dna=DNA) as node:
        alice, bob, carol, dave, pool, rec = await town(node)
        async with trio.open_nursery() as n:
            server = await n.start(AppServer(node).serve, "127.0.0.1", 0)
            url, token = server.app_url, server.token
            async with (
                AgentClient.connect(url, token=token, agent=alice.agent_id) as ralice,
                AgentClient.connect(url, token=token, agent=carol.agent_id) as rcarol,
            ):
                pid = await ralice.propose_allocation(
                    "record", rec, {"ru": 20}, "over the socket", [rec], pool
                )
                await rcarol.endorse("record", rec, 3, direction=-1)
                await rcarol.vote(pid, "approve", GOOD)
                with pytest.raises(AlreadyVoted) as e:
                    await rcarol.vote(pid, "approve", GOOD)
                assert e.value.code == "E_ALREADY_VOTED"
                with pytest.raises(NoEvidence):
                    await ralice.propose_allocation("record", rec, {"ru": 1}, "j", [], pool)
                await dave.vote(pid, "approve", FAIR)
                p = await rcarol.get_proposal(pid)
                assert isinstance(p, ProposalView) and p == await alice.get_proposal(pid)
                # 0.5 x -3 / (3 + 10) = -0.115
                assert p.granted == {"ru": 20 * 0.885}
                env = await ralice.get_envelope("record", rec)
                assert isinstance(env, EnvelopeView) and env.market_weight == -0.115
                assert env == await bob.get_envelope("record", rec)
                assert [v.id for v in await ralice.list_proposals()] == [pid]
            n.cancel_scope.cancel()


# -- across real libp2p nodes
async def _agreed(c, read, timeout=30):
    """Every node's answer, once they agree: a node that is not an authority of the chain
    catches it up on reading, and an action citing another chain waits for that chain."""
    import trio

    await c.await_consistency(timeout=20)
    with trio.fail_after(timeout):
        while True:
            views = [await read(n) for n in c.nodes]
            if all(v == views[0] for v in views):
                return views
            await c.wait_changed()


async def test_votes_cast_on_three_nodes_approve_a_proposal_filed_on_a_fourth():
    import trio

    from node.sdk import LocalCluster

    dna = {**DNA, "governance": {"voters": "agents", "quorum": 3}}
    async with LocalCluster.open(n=4, clock=Clock(), dna=dna) as c:
        voters = [await c.nodes[i].new_agent() for i in range(3)]
        alice = await c.nodes[3].new_agent()
        bob = await c.nodes[1].new_agent()
        await c.await_consistency(timeout=20)
        pool = await c.nodes[0].steward.mint_budget(
            {"ru": 300, LLM: 50_000}, holder=alice.agent_id, schema={"can_fund": True}
        )
        with trio.fail_after(20):
            while from_text("budget", pool) not in alice._cell.ledger.budgets:
                await c.wait_changed()
        rec = await bob.call("memory", "transmit_understanding", TRIPLE)
        await voters[2].endorse("agent", bob.agent_id, 10)
        await c.await_consistency(timeout=20)
        pid = await alice.propose_allocation(
            "agent", bob.agent_id, {LLM: 10_000}, "bob's graph grows", [rec], pool
        )
        for v, scores in zip(voters, (GOOD, FAIR, GOOD)):
            await v.vote(pid, "approve", scores)
        with trio.fail_after(30):
            while (await alice.get_proposal(pid)).state != "granted":
                await c.wait_changed()
        views = await _agreed(c, lambda n: n.get_proposal(pid))
        assert views[0].score == (740 + 670 + 740) // 3 / 1000
        assert views[0].granted == {LLM: 10_000 * 1250 // 1000}  # 0.5 x 10 / (10 + 10)
        with trio.fail_after(20):
            while not (await bob.get_envelope("agent", bob.agent_id)).budgets:
                await c.wait_changed()
        envs = await _agreed(c, lambda n: n.get_envelope("agent", bob.agent_id))
        assert envs[0].market_weight == 0.25
        assert envs[0].budgets[0].balance(LLM).available == 12_500
        assert all(not n.warrants() for n in c.nodes)


def test_the_cli_lists_proposals_votes_and_sorts_envelopes(tmp_path, capsys):
    import json

    import trio

    from node import cli

    path = str(tmp_path / "n")

    async def build():
        async with LocalNode.open(path, clock=Clock(), dna=DNA) as node:
            alice, bob, carol, dave, pool, rec = await town(node)
            hi = await alice.propose_allocation("agent", bob.agent_id, {"ru": 30}, "a", [rec], pool)
            lo = await alice.propose_allocation("record", rec, {"ru": 20}, "b", [rec], pool)
            for p, s in ((hi, GOOD), (lo, FAIR)):
                await carol.vote(p, "approve", s)
            await carol.endorse("agent", dave.agent_id, 1)
            return hi, lo, dave.agent_id, bob.agent_id, alice.agent_id

    hi, lo, dave, bob, alice = trio.run(build)
    assert cli.main(["proposals", "--path", path, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["id"], r["state"], len(r["votes"])) for r in rows) == sorted(
        [(hi, "open", 1), (lo, "open", 1)]
    )
    for p, s in ((hi, GOOD), (lo, FAIR)):
        argv = ["vote", "--path", path, "--agent", dave, p, "approve", "--scores", json.dumps(s)]
        assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["proposals", "--path", path, "--state", "granted", "--json"]) == 0
    granted = {r["id"]: r["granted"] for r in json.loads(capsys.readouterr().out)}
    assert granted == {hi: {"ru": 30.0}, lo: {"ru": 20.0}}
    assert cli.main(["envelopes", "--path", path, "--sort", "priority", "--json"]) == 0
    envs = json.loads(capsys.readouterr().out)
    # by priority: bob's (0.74), the record's (0.67), then dave's (endorsed, never granted)
    assert [(e["entity_type"], e["priority_score"]) for e in envs] == [
        ("agent", 0.74),
        ("record", 0.67),
        ("agent", None),
    ]
    assert envs[0]["entity_id"] == bob and envs[2]["entity_id"] == dave
    assert envs[2]["market_weight"] == 0.045  # 0.5 x 1 / 11
    assert cli.main(["envelopes", "--path", path, "--sort", "market"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].startswith(f"agent:{dave}") and len(table) == 4
    png = tmp_path / "roi.png"
    assert cli.main(["envelopes", "--path", path, "--plot", str(png)]) == 0
    assert (
        png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in capsys.readouterr().out
    )
    # alice funded two envelopes, neither idle nor measurable yet: nothing to move
    argv = ["rebalance", "--path", path, "--agent", alice, "--dry-run", "--json"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == []


async def test_rebalancing_moves_an_idle_envelope_to_the_best_roi_and_conserves_every_unit():
    clock = Clock()
    dna = {**DNA, "governance": {"voters": "stewards", "quorum": 1}}
    async with LocalNode.open(clock=clock, dna=dna) as node:
        st = node.steward
        alice, bob, carol, dave = [await node.new_agent() for _ in range(4)]
        pool = await st.mint_budget(
            {"ru": 1000, LLM: 1_000_000}, holder=alice.agent_id, schema={"can_fund": True}
        )
        rec = await bob.call("memory", "transmit_understanding", TRIPLE)

        async def grant(agent, amounts):
            pid = await alice.propose_allocation("agent", agent.agent_id, amounts, "j", [rec], pool)
            await st.vote(pid, "approve", GOOD)
            return (await agent.get_envelope("agent", agent.agent_id)).budgets[-1].id

        idle = await grant(dave, {"ru": 30, LLM: 50_000})
        clock.t += 8 * 86_400  # dave's envelope spends nothing for eight windows
        work = {}
        for agent, edges in ((bob, 3), (carol, 1)):
            b = await grant(agent, {"ru": 20, LLM: 20_000})
            async with agent.spend(b, {LLM: 12_000}) as h:
                h.use({LLM: 10_000})  # a metered LLM call: consumed
            for _ in range(edges):
                await agent.refine(
                    instructions=[
                        {"zome": "rose_forest", "fn": "link_edge", "payload": _edge(rec)}
                    ],
                    budgets=[b],
                )
            work[agent.agent_id] = b
        env = await alice.get_envelope("agent", bob.agent_id)
        assert (env.edges, env.llm_tokens_spent, env.roi_score) == (3, 10_000, 3 / 10_000)

        async def total():
            envs = [await alice.get_envelope("agent", a.agent_id) for a in (bob, carol, dave)]
            avail = [b.balances for e in envs for b in e.budgets if not b.void]
            pool_v = (await alice.get_budget(pool)).balances
            return {
                r: pool_v[r]["available"] + sum(b[r]["available"] for b in avail if r in b)
                for r in ("ru", LLM)
            }

        before = await total()
        plan = await alice.rebalance(dry_run=True)
        # carol's ROI (1 edge per 10,000 tokens) is the network's half, so she neither gives
        # nor receives; dave's idle envelope gives all it has to bob's
        assert plan == [
            {
                "from": idle,
                "to": f"agent:{bob.agent_id}",
                "amounts": {"ru": 30.0, LLM: 50_000},
                "reason": "idle",
            }
        ]
        assert await alice.rebalance(dry_run=True) == plan  # a dry run changes nothing
        done = await alice.rebalance(dry_run=False)
        assert [(m["from"], m["status"]) for m in done] == [(idle, "done")]
        assert (await dave.get_budget(idle)).void
        moved = await bob.get_budget(done[0]["budget"])
        assert moved.balance(LLM).available == 50_000 and moved.parent == pool
        assert await total() == before
        steps = await bob.lineage(to_text("action", from_text("budget", done[0]["budget"])))
        assert [s["kind"] for s in steps] == ["fund", "mint"]
        assert await alice.rebalance(dry_run=True) == []  # nothing idle is left
