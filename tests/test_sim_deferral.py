"""The simulator's workload defers: heavy agents queue writes refused for lack of RU, the
nodes run them when windows roll (or grants arrive), across crash-restarts, and the report
counts them; queued work never changed a chain (checked against every agent's chain)."""

import argparse

from sims import SimConfig, run
from sims.cli import _configure, config_from_args


def parse_args(argv) -> SimConfig:
    return config_from_args(_configure(argparse.ArgumentParser()).parse_args(argv))


def test_a_deferring_workload_runs_its_queue_and_changes_no_chain_while_queued():
    cfg = SimConfig(
        seed=7, nodes=5, agents=12, hours=1.5, warmup=60, window=1800, churn=1.0, defer=True
    )
    r = run(cfg)
    assert r["ok"], r["invariant_violations"]
    assert r["deferred"] > 0 and r["deferred_run"] > 0
    assert r["deferred_run"] + r["deferred_refused"] <= r["deferred"]
    assert "--defer" in cfg.replay_command()
    assert run(cfg)["trace_hash"] == r["trace_hash"]  # reproducible from its seed


def test_deferral_is_off_by_default_and_a_flag_turns_it_on():
    r = run(SimConfig(seed=7, nodes=3, agents=6, hours=0.3, warmup=60, window=600))
    assert (r["deferred"], r["deferred_run"], r["deferred_refused"]) == (0, 0, 0)
    assert parse_args(["--defer"]).defer and not parse_args([]).defer
