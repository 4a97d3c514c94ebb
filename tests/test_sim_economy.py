"""Budgets as authorizers in the simulator (`--economy`, sims/economy.py): seeded runs that mint,
fund, delegate, refine paid by budgets, hold, settle, cancel, expire and revoke across nodes,
under faults and an overspending rogue, with the ledger's invariants checked on honest nodes."""

import json
from dataclasses import replace
from types import MappingProxyType

from node.core import ledger as L
from sims import Partition, SimConfig, run
from sims.cli import main as sim_main


def small(**kw) -> SimConfig:
    base = dict(seed=1, nodes=5, agents=10, hours=0.4, warmup=60, economy=True)
    base["economy_per_hour"] = 240
    base.update(kw)
    return SimConfig(**base)


def _same(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "wall_seconds"}


def test_an_economy_run_is_reproducible_and_exercises_every_kind():
    a, b = run(small()), run(small())
    assert _same(a) == _same(b)
    assert a["ok"] and a["invariant_violations"] == [] and a["ledger_violations"] == 0
    done, books = a["economy"]["done"], a["economy"]["books"]
    for kind in (
        "mint",
        "fund",
        "card",
        "arrived",
        "refine_paid",
        "refine_failover",
        "hold",
        "settle",
        "cancel",
        "late_settle_refused",
        "revoke",
        "void",
    ):
        assert done.get(kind, 0) > 0, kind
    for state in ("settled", "cancelled", "expired"):
        assert books["holds"].get(state, 0) > 0, state
    assert books["minted"]["ru"] > 0 and books["paid_writes"] > 0
    assert books["lineages"] == books["paid_writes"]
    assert books["ledger_copies_compared"] > 0
    # refusals the economy runs into on purpose are counted, not violations
    assert any(k.startswith("refine:") for k in a["economy"]["refused"])


def test_the_ledger_holds_under_partitions_loss_churn_and_skew():
    r = run(
        small(
            seed=3,
            nodes=6,
            agents=12,
            loss=0.02,
            dup=0.02,
            reorder=True,
            skew=5,
            churn=0.3,
            partitions=[Partition.parse("50/50@5m-12m"), Partition.parse("isolate@15m-19m")],
        )
    )
    assert r["ok"] and r["converged"] and r["ledger_violations"] == 0, r["invariant_violations"]
    done = r["economy"]["done"]
    assert done["refine_paid"] > 0 and done["arrived"] > 0 and done["settle"] > 0
    assert r["churn"] and r["network"]["lost"] > 0


def test_an_overspending_rogue_is_warranted_and_its_spend_stays_out_of_honest_books():
    r = run(small(seed=2, rogue=1, rogue_modes=("overspend_budget",)))
    assert r["ok"] and r["ledger_violations"] == 0, r["invariant_violations"]
    assert r["economy"]["done"]["rogue_refine"] > 0
    assert r["rogue_agents"] > 0 and r["warranted_rogue_agents"] == r["rogue_agents"]
    books = r["economy"]["books"]
    # what honest chains gave the rogue's agents is gone from their books, whatever it spent
    assert books["sent_outside"]["ru"] > 0
    assert r["node_metrics"]["warrants_issued"] > 0


def test_the_checks_catch_a_ledger_that_makes_value(monkeypatch):
    """A node whose ledger rules give a cancelled hold back twice writes chains its own
    validators accept: only the simulator's books can tell."""
    cancel = L._APPLY["cancel"]

    def generous(led, v, author, ts, h, dna):
        eff = cancel(led, v, author, ts, h, dna)
        hold = eff.ledger.holds[v["task_id"]]
        b = eff.ledger.budgets[hold.budget]
        b = replace(b, available=L.add(b.available, MappingProxyType(dict(hold.amounts))))
        return L.Effect(eff.ledger.with_budget(b), eff.offer_to)

    monkeypatch.setitem(L._APPLY, "cancel", generous)
    r = run(small())
    assert r["economy"]["done"]["cancel"] > 0
    assert r["ledger_violations"] > 0 and not r["ok"]
    assert any("ledger:" in v for v in r["invariant_violations"])


def test_the_cli_reports_the_economy_in_text_and_json(capsys):
    argv = ["--seed", "4", "--nodes", "4", "--agents", "8", "--hours", "0.3", "--warmup", "60"]
    assert sim_main(argv + ["--economy", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["ledger_violations"] == 0 and r["economy"]["done"]["mint"] > 0
    assert sim_main(argv + ["--economy"]) == 0
    out = capsys.readouterr().out
    assert "ledger violations: 0" in out and "economy: " in out and "books (RU): minted" in out
    assert "--economy" in small().replay_command()
    assert sim_main(argv) == 0
    assert "economy" not in capsys.readouterr().out.split("ledger violations: 0")[1]


def test_mixed_economy_seeds_are_rebuilt_by_their_replay_commands():
    """A failing sweep seed prints a command: with the economy (and an overspender in half the
    seeds with rogues), it must rebuild the same run; without it, the seed is as before."""
    import argparse
    import shlex

    from sims.cli import _configure, config_from_args
    from sims.mixed import mixed

    modes = set()
    for seed in range(1, 13):
        cfg = mixed(seed, economy=True)
        plain = mixed(seed)
        assert cfg.economy and not plain.economy
        assert cfg.replace(economy=False, rogue_modes=plain.rogue_modes) == plain
        modes.update(cfg.rogue_modes[:1] if cfg.rogue else ())
        args = _configure(argparse.ArgumentParser()).parse_args(
            shlex.split(cfg.replay_command())[2:]
        )
        assert config_from_args(args) == cfg
    assert "overspend_budget" in modes
