"""Issue 15 in the simulator: the backdate and sybil attackers, mode names checked everywhere,
windows rolled through node 0's witness, and the real-time spending bound."""

import pytest

from node.sdk import LocalCluster, Warranted
from sims import SimConfig, run
from sims.cli import main as sim_main
from sims.config import load_scenario
from sims.invariants import audit_chain, spending_bound
from sims.rogue import BACKDATE_DAYS

from chainkit import DAY_US, DNA, T0, Chain, US
from conftest import START


def small(**kw) -> SimConfig:
    base = dict(seed=1, nodes=5, agents=10, hours=0.5, warmup=60)
    base.update(kw)
    return SimConfig(**base)


def test_an_unknown_rogue_mode_is_an_error_everywhere_naming_the_known_ones(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown rogue mode.*'backdated'.*known modes:.*sybil"):
        SimConfig(rogue=1, rogue_modes=("backdate", "backdated"))
    toml = tmp_path / "s.toml"
    toml.write_text('[sim]\nrogue = 1\nrogue_modes = "fork,free_lunch"\n')
    with pytest.raises(ValueError, match="'free_lunch'"):
        SimConfig(**load_scenario(str(toml)))
    for argv in (
        ["--rogue", "1", "--rogue-modes", "backdate,nope"],
        ["--rogue", "1", "--rogue-mode", "backdate", "--rogue-mode", "nope"],
        ["--scenario", str(toml)],
    ):
        with pytest.raises(SystemExit) as e:
            sim_main(argv)
        assert e.value.code != 0 and "known modes: " in str(e.value.code)
    # a sybil is only refused where agents need invites: asking for one elsewhere is an error
    with pytest.raises(SystemExit, match="sybil needs membrane 'invite'"):
        sim_main(["--rogue", "1", "--rogue-mode", "sybil"])


def test_rogue_modes_combine_from_repeats_and_lists_and_the_report_names_them(capsys):
    from sims.cli import _configure, config_from_args
    import argparse

    p = _configure(argparse.ArgumentParser())
    cfg = config_from_args(
        p.parse_args(
            [
                "--rogue",
                "2",
                "--rogue-mode",
                "backdate",
                "--rogue-mode",
                "fork,sybil",
                "--membrane",
                "invite",
                "--window",
                "10m",
            ]
        )
    )
    assert cfg.rogue_modes == ("backdate", "fork", "sybil")
    assert (cfg.membrane, cfg.window, cfg.dna_rules()) == (
        "invite",
        600,
        {"membrane": "invite", "window_s": 600},
    )
    assert config_from_args(p.parse_args(["--rogue-modes", "wrong_cost"])).rogue_modes == (
        "wrong_cost",
    )


def _eleven_windows() -> Chain:
    """A chain whose 11 windows are each witnessed a day apart (validation would take it: the
    steward's signatures are real), as a steward whose clock lied would leave."""
    c = Chain(ts=T0)
    for day in range(11):
        for _ in range(3):  # 3 x 33 RU: each window's allowance spent
            c.create(ts=T0 + (day + 1) * DAY_US + _ * US)
    return c


def test_the_spending_bound_fires_on_eleven_windows_in_one_real_second():
    c = _eleven_windows()
    assert audit_chain(c.actions, DNA)[0] == []  # every window is witnessed: the audit is quiet
    real = {s.hash: 1000.0 + s.seq / len(c.actions) for s in c.actions}  # all within 1 s
    problems = spending_bound(c.actions, lambda s: real[s.hash], DNA, skew_s=5.0)
    assert len(problems) == 1 and "real time" in problems[0] and "3 window(s)" in problems[0]
    # the same chain written a day apart in real time, as the stamps say, is within the bound
    lived = {s.hash: s.ts / US for s in c.actions}
    assert spending_bound(c.actions, lambda s: lived[s.hash], DNA, skew_s=5.0) == []


def test_the_audit_refuses_a_window_opened_without_a_witness():
    c = Chain(ts=T0)
    c.create(ts=T0 + US)
    a, body = c.create_action("knowledge", {"content": "later", "tags": []}, T0 + DAY_US)
    del a["witness"]  # the old author-chosen roll
    problems, _ = audit_chain(c.with_(c.signed(a)), DNA)
    assert problems and "window start" in problems[0]
    a, _ = c.create_action("knowledge", {"content": "later", "tags": []}, T0 + DAY_US)
    a["witness"]["at"] += 1  # the steward did not sign this time
    assert "witness signature" in audit_chain(c.with_(c.signed(a)), DNA)[0][0]


async def test_a_backdating_node_is_refused_and_warranted_as_unwitnessed_window(
    clock, autojump_clock
):
    async with LocalCluster.open(
        n=4, clock=lambda: clock[0], transport="memory", rogue={3: "backdate"}
    ) as c:
        honest = await c.nodes[0].new_agent()
        rogue = await c.nodes[3].new_agent()
        await honest.add_knowledge("fine")
        for i in range(4):
            try:
                await rogue.add_knowledge(f"backfilled {i}")
            except Warranted:
                break
        chain = c.nodes[3].store.chain(rogue._cell.key.public)
        assert chain[0].ts == (START - BACKDATE_DAYS * 86_400) * US  # its genesis, days ago
        # each write opened a window a day after the last, on the rogue's word alone
        assert [s.action["budget"]["ws"] - chain[0].ts for s in chain[1:3]] == [DAY_US, 2 * DAY_US]
        await c.await_consistency(timeout=60)
        for node in c.nodes[:3]:
            ws = [w for w in node.warrants() if w.agent_id == rogue.agent_id]
            assert ws and all(w.reason == "unwitnessed_window" for w in ws)
            st = await node.get_budget_state(rogue.agent_id)
            assert st.used_ru == 0  # none of the backfilled spend is held
        await honest.transmit_understanding("still", "works", "fine")


def test_a_backdating_node_in_the_simulator_gets_nothing_past_honest_nodes():
    r = run(small(rogue=1, rogue_modes=("backdate",), seed=3))
    assert r["ok"], r["invariant_violations"][:3]
    assert r["rogue_modes"] == ["backdate"] and r["rogue_agents"] == 2
    assert r["warranted_rogue_agents"] == 2 and r["backdated_accepted"] == 0


def test_an_honest_run_that_rolls_windows_stays_within_the_bound():
    r = run(small(nodes=6, agents=12, window=300, seed=4, skew=2.0))
    assert r["ok"], r["invariant_violations"][:3]
    assert r["window_s"] == 300 and r["windows_opened"] >= 10
    assert r["node_metrics"]["sent_witness"] > 0  # agents of other nodes asked node 0's steward
    assert r["spending_bound_chains"] >= 12


def test_invited_agents_cut_off_from_the_steward_are_refused_by_code_not_failed():
    """An invite network with a short window: every honest agent is invited by node 0's steward
    over the network; node 1, isolated for a quarter hour, cannot open its agents' next windows
    (E_NO_WITNESS, a refusal), and the run still converges without a violation."""
    from sims import Partition

    r = run(
        small(
            seed=3,
            membrane="invite",
            window=300,
            skew=2.0,
            churn=0.3,
            partitions=[Partition.parse("isolate:1@10m-25m")],
        )
    )
    assert r["ok"], r["invariant_violations"][:3]
    assert r["invite_failures"] == {} and r["windows_opened"] >= 10
    assert r["refusals_by_code"].get("E_NO_WITNESS", 0) >= 1 and "E_NO_WITNESS" not in r["errors"]


def test_a_sybil_node_on_an_invite_network_gets_no_agent_held_or_warranted():
    """Its uninvited agents write as any agent would: honest nodes refuse their geneses, and the
    ops they publish to authorities of an entry or hash (validated there as single steps, which
    cannot show a genesis) are refused too, without a warrant and without fetching the chain
    again at every publish."""
    r = run(
        small(
            nodes=4, agents=8, hours=0.3, rogue=1, rogue_modes=("sybil",), membrane="invite", seed=3
        )
    )
    assert r["ok"], r["invariant_violations"][:3]
    assert r["sybil_agents"] == 2 and r["membrane"] == "invite"
    assert (r["sybil_accepted"], r["sybil_warranted"], r["rogue_agents"]) == (0, 0, 0)
    assert r["node_metrics"]["ops_rejected"] < 50  # each sybil author is refused once a node


async def test_a_sybil_node_in_a_local_cluster_gets_none_of_its_agents_held(clock, autojump_clock):
    """rogue={3: "sybil"}: its uninvited agents' actions reach honest nodes as chains and as
    single ops (as authorities of an entry or hash, which see one step, not the genesis); none
    is held, none warranted."""
    from sims.rogue import sybil_agent

    async with LocalCluster.open(
        n=5,
        clock=lambda: clock[0],
        transport="memory",
        dna={"membrane": "invite"},
        rogue={3: "sybil"},
    ) as c:
        with pytest.raises(ValueError, match="rogue mode 'sybil'"):
            await sybil_agent(c.nodes[0])
        sybils = [await sybil_agent(c.nodes[3]) for _ in range(3)]
        for a in sybils:
            for i in range(3):
                await a.add_knowledge(f"free {i}")
        honest = await c.nodes[1].new_agent(invite=await c.nodes[0].steward.invite())
        await honest.add_knowledge("invited")
        c.accountable = [n for i, n in enumerate(c.nodes) if i != 3]
        await c.await_consistency(timeout=120)
        for node in c.accountable:
            for a in sybils:
                chain = c.nodes[3].store.chain(a._cell.key.public)
                assert len(chain) == 4
                assert not any(node.dht.has_action(s.hash) for s in chain)
                assert a._cell.key.public not in node.chains
            assert not node.warrants()


def test_a_backdaters_ops_after_its_offence_are_not_kept_by_hash_authorities():
    """Seed 901219 of the trust sweep: a backdater's seq 1 opened a window on its own word and
    was warranted, but its seq 2, spending from that window, is a valid step from seq 1, and an
    entry authority that checked it while the warrant arrived stored it after all. Ops of an
    offender from its offence on are dropped when its warrant comes, and not stored after."""
    from sims.mixed import mixed

    cfg = mixed(901219, trust=True)
    assert "backdate" in cfg.rogue_modes[:1] and cfg.window == 600
    r = run(cfg)
    assert r["ok"], r["invariant_violations"][:3]
    assert r["backdated_accepted"] == 0 and r["warranted_rogue_agents"] == r["rogue_agents"] > 0
