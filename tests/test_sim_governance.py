"""Governance in the simulator (`--governance`, sims/governance.py) and in its independent replay
(sims/gov_audit.py): seeded runs that propose, vote, endorse, grant and spend tokens with every
resource conserved; the governance rogues warranted by honest authorities; and each rule the
replay exists to check caught on a hand-made chain."""

from __future__ import annotations

import copy

import trio

from node.core import governance as G
from node.core.crypto import from_text
from node.local_node import LocalNode
from node.sdk import LocalCluster
from sims import SimConfig, run
from sims.config import GOVERNANCE_DNA, TOKENS
from sims.gov_audit import GovRules
from sims.ledger_audit import check_books, replay_ledger
from sims.rogue import grant_now

from conftest import START
from test_budgets import T0, _as_ledger_action, _next
from test_sim_economy import _same
from test_sim_economy import small as economy_small

SCORES = {"evidence": 0.9, "novelty": 0.6, "alignment": 0.8, "community": 0.7}
DNA = {**GOVERNANCE_DNA, "governance": {"voters": "agents", "quorum": 2}}


def small(**kw) -> SimConfig:
    """The economy tests' small network, with governance."""
    return economy_small(governance=True, **kw)


def test_a_governance_run_grants_conserves_every_resource_and_is_reproducible():
    a, b = run(small()), run(small())
    assert _same(a) == _same(b) and a["trace_hash"] == b["trace_hash"]
    assert a["ok"] and a["invariant_violations"] == [] and a["ledger_violations"] == 0
    gov, books = a["economy"]["governance"], a["economy"]["books"]
    for kind in ("pool", "propose", "vote_approve", "endorse", "token_hold", "token_settle"):
        assert gov.get(kind, 0) > 0, kind
    assert books["grants"] >= 1 and books["proposals_granted"] == books["grants"]
    assert books["votes"] > books["proposals"] > books["grants"]
    # both resources were minted, and every unit of each is held or in transit
    assert books["minted"]["ru"] > 0 and books["minted"][TOKENS] > 0
    for k in ("ru", TOKENS):
        assert books["minted"][k] == books["held"][k] + books["in_transit"].get(k, 0)


def test_governance_rogues_are_warranted_everywhere_for_their_own_cheat():
    modes = ("double_vote", "grant_without_quorum", "overgrant")
    # a seed in which an agent of each mode gets to cheat (an overgrant needs an approval)
    r = run(small(seed=2, nodes=6, agents=12, rogue=3, rogue_modes=modes))
    assert r["ok"] and r["ledger_violations"] == 0, r["invariant_violations"]
    cheats = r["economy"]["governance"]["rogue_warrants"]
    assert cheats["double_vote"].get("ledger_already_voted", 0) > 0
    assert cheats["grant_without_quorum"].get("ledger_not_authorized", 0) > 0
    assert cheats["overgrant"].get("ledger_budget_exceeded", 0) > 0
    for reasons in cheats.values():  # an agent that cheated is warranted at every honest node
        assert "not warranted everywhere" not in reasons
    assert r["rogue_agents"] == r["warranted_rogue_agents"] >= 3


def test_the_checks_catch_a_grant_above_its_limit_that_every_node_accepts(monkeypatch):
    """Nodes whose core lets a grant move twice the limit accept each other's grants: only
    the simulator's replay can tell."""
    monkeypatch.setattr(
        G, "grant_limit", lambda p, w: {k: 2 * x * (1000 + w) // 1000 for k, x in p.amounts.items()}
    )
    r = run(small())
    assert r["economy"]["books"]["grants"] >= 1
    assert r["ledger_violations"] > 0 and not r["ok"]
    assert any("above requested" in v for v in r["invariant_violations"])


def test_governance_seeds_are_rebuilt_by_their_replay_commands():
    import argparse
    import shlex

    from sims.cli import _configure, config_from_args
    from sims.mixed import mixed

    modes = set()
    for seed in range(1, 13):
        cfg = mixed(seed, governance=True)
        assert cfg.governance and cfg.economy and cfg.dna_rules()["governance"]["quorum"] == 3
        assert cfg.replace(
            governance=False, economy=False, rogue_modes=mixed(seed).rogue_modes
        ) == (mixed(seed))
        modes.update(cfg.rogue_modes[:1] if cfg.rogue else ())
        args = _configure(argparse.ArgumentParser()).parse_args(
            shlex.split(cfg.replay_command())[2:]
        )
        assert config_from_args(args) == cfg
    assert modes & {"double_vote", "grant_without_quorum", "overgrant"}


# -- the rogue modes on a cluster: the reason honest authorities warrant each for
async def _held(c, agent, bid: str) -> None:
    b = from_text("budget", bid)
    with trio.fail_after(60):
        while b not in agent._cell.ledger.budgets:
            await c.wait_changed()


async def test_each_governance_cheat_is_warranted_for_its_reason(autojump_clock):
    t = [float(START)]
    rogue = {2: "double_vote", 3: "grant_without_quorum", 4: "overgrant"}
    async with LocalCluster.open(
        n=5, clock=lambda: t[0], transport="memory", rogue=rogue, dna=DNA
    ) as c:
        st = c.nodes[0].steward
        alice, bob = await c.nodes[0].new_agent(), await c.nodes[1].new_agent()
        dv, gq, og = [await c.nodes[i].new_agent() for i in (2, 3, 4)]
        await c.await_consistency(timeout=20)
        rec = await bob.call(
            "memory", "transmit_understanding", {"subject": "s", "predicate": "p", "object": "o"}
        )
        pools = {}
        for a in (alice, gq, og):
            pools[a.agent_id] = await st.mint_budget(
                {"ru": 500, TOKENS: 100_000}, holder=a.agent_id, schema={"can_fund": True}
            )
            await _held(c, a, pools[a.agent_id])
        ask = {TOKENS: 4000, "ru": 50}
        p1 = await alice.propose_allocation(
            "agent", bob.agent_id, ask, "j", [rec], pools[alice.agent_id]
        )
        await c.await_consistency(timeout=20)
        await dv.vote(p1, "approve", SCORES)
        await dv.vote(p1, "approve", SCORES)  # its own pre-flight would refuse this one
        p2 = await gq.propose_allocation("agent", bob.agent_id, ask, "j", [rec], pools[gq.agent_id])
        await grant_now(gq, p2)  # before any vote
        p3 = await og.propose_allocation("agent", bob.agent_id, ask, "j", [rec], pools[og.agent_id])
        await c.await_consistency(timeout=20)
        await alice.vote(p3, "approve", SCORES)
        await bob.vote(p3, "approve", SCORES)  # approved: og's node grants twice the request
        await c.await_consistency(timeout=30)
        want = {
            (dv.agent_id, "ledger_already_voted"),
            (gq.agent_id, "ledger_not_authorized"),
            (og.agent_id, "ledger_budget_exceeded"),
        }
        for node in c.nodes[:2]:
            assert {(w.agent_id, w.reason) for w in node.warrants()} == want
        # the honest proposal stands: one vote counted of two, no grant
        p = await alice.get_proposal(p1)
        assert p.state == "open" and len(p.votes) == 1


# -- the replay on hand-made chains
def chains(node) -> dict:
    return {pub: (node.store.chain(pub), cell.ledger) for pub, cell in node.cells.items()}


async def governed(node):
    """A pool, a record, an endorsement, a proposal approved by two votes and granted (and
    accepted by its entity), a late third vote, and a second proposal still open."""
    st = node.steward
    alice, bob, carol, dave = [await node.new_agent() for _ in range(4)]
    pool = await st.mint_budget(
        {"ru": 500, TOKENS: 100_000}, holder=alice.agent_id, schema={"can_fund": True}
    )
    rec = await bob.call(
        "memory", "transmit_understanding", {"subject": "s", "predicate": "p", "object": "o"}
    )
    await carol.endorse("agent", bob.agent_id, 5)
    ask = {TOKENS: 4000, "ru": 50}
    pid = await alice.propose_allocation("agent", bob.agent_id, ask, "j", [rec], pool)
    await st.vote(pid, "approve", SCORES)
    await carol.vote(pid, "approve", SCORES)
    await dave.vote(pid, "reject", SCORES)  # after the quorum: taken, changes nothing
    other = await alice.propose_allocation("record", rec, {TOKENS: 10}, "k", [rec], pool)
    return alice, bob, carol, dave, pid, other


def _forge(chain, cell, body):
    return chain + [_next(chain, lambda a: _as_ledger_action(a, chain, cell.key, body), cell.key)]


async def test_an_honest_governance_balances_per_resource_and_agrees_with_the_ledger():
    t = [T0]
    async with LocalNode.open(clock=lambda: t[0], dna=DNA) as node:
        alice, bob, *_, pid, _ = await governed(node)
        assert (await alice.get_proposal(pid)).state == "granted"
        found = check_books(chains(node), node.dna.stewards, int(t[0] * 1e6), GovRules.of(node.dna))
        assert found.problems == []
        assert found.totals["minted"] == found.totals["held"] == {"ru": 500_000, TOKENS: 100_000}
        c = found.counts
        assert (c["proposals"], c["grants"], c["votes"], c["endorsements_taken"]) == (2, 1, 3, 1)
        assert c["proposals_granted"] == c["proposals_open"] == 1


async def test_the_replay_catches_each_governance_cheat():
    t = [T0]
    async with LocalNode.open(clock=lambda: t[0], dna=DNA) as node:
        alice, bob, carol, dave, pid, other = await governed(node)
        rules = GovRules.of(node.dna)
        stewards = node.dna.stewards
        pid_b, other_b = from_text("action", pid), from_text("action", other)

        def problems(agent, chain) -> list[str]:
            return replay_ledger(chain, stewards, rules).problems

        # a second vote on one proposal, on the voter's chain
        ccell = carol._cell
        cchain = node.store.chain(ccell.key.public)
        vote = next(s for s in cchain if s.action.get("ledger", {}).get("kind") == "vote")
        assert problems(carol, cchain) == []
        twice = _forge(cchain, ccell, copy.deepcopy(vote.action["ledger"]))
        assert any("a second vote on proposal" in p for p in problems(carol, twice))
        # a vote by an agent the DNA does not name (voters: the stewards), and its tally
        only_stewards = GovRules(stewards, "stewards", 2, 500)
        assert any(
            "not name as a voter" in p
            for p in replay_ledger(cchain, stewards, only_stewards).problems
        )
        achain = node.store.chain(alice._cell.key.public)
        assert any(
            "not a voter" in p for p in replay_ledger(achain, stewards, only_stewards).problems
        )

        acell = alice._cell
        at = next(
            i for i, s in enumerate(achain) if s.action.get("ledger", {}).get("proposal") == pid_b
        )
        grant = copy.deepcopy(achain[at].action["ledger"])
        assert problems(alice, achain) == []
        # a second grant of the granted proposal
        assert any("a second grant" in p for p in problems(alice, _forge(achain, acell, grant)))
        # a grant of the open proposal, before any quorum
        filed = next(s for s in achain if s.hash == other_b).action["ledger"]
        early = dict(grant, proposal=other_b, entity=filed["entity"], to=filed["holder"])
        found = problems(alice, _forge(achain, acell, early))
        assert any("before its chain tallied an approving quorum (open, 0 of 2" in p for p in found)
        # above requested x (1 + market weight), in place of the honest grant
        before = achain[:at]
        over = dict(grant, amounts={k: 2 * x for k, x in grant["amounts"].items()})
        assert any("above requested" in p for p in problems(alice, _forge(before, acell, over)))
        # a market weight its cited endorsements do not give
        heavier = dict(grant, market_weight=grant["market_weight"] + 100)
        assert any(
            "records market weight" in p for p in problems(alice, _forge(before, acell, heavier))
        )
        uncited = dict(grant, endorsements=[])  # then the weight is 0: the grant is too big
        assert any(
            "records market weight" in p for p in problems(alice, _forge(before, acell, uncited))
        )


def test_the_cli_reports_governance_in_text_and_json(capsys):
    import json

    from sims.cli import main as sim_main

    argv = ["--seed", "3", "--nodes", "4", "--agents", "8", "--hours", "0.3", "--warmup", "60"]
    argv += ["--governance", "--rogue", "1", "--rogue-modes", "double_vote"]
    assert sim_main(argv + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["ledger_violations"] == 0 and r["economy"]["governance"]["propose"] > 0
    assert sim_main(argv) == 0
    out = capsys.readouterr().out
    assert "governance: " in out and "proposals " in out and "grants " in out
    assert "double_vote agents, by warrant: ledger_already_voted" in out
