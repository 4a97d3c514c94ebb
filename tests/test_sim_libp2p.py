"""The simulator's cross-check: the same Simulation on real libp2p hosts (127.0.0.1, wall-clock
time). A short scenario, so this runs for about half a minute of real time."""

import pytest

from sims import SimConfig, run
from sims.cli import main as sim_main


def test_a_scenario_runs_on_real_libp2p_hosts_and_converges():
    cfg = SimConfig(
        seed=2,
        nodes=4,
        agents=8,
        hours=0.005,
        warmup=5,
        deadline=60,
        gossip_interval=1,
        publish_interval=0.3,
        request_timeout=2,
        actions_per_agent_hour=1500,
        grants_per_hour=200,
        rogue=1,
        rogue_modes=("skip_preflight",),
        transport="libp2p",
    )
    r = run(cfg)
    assert r["transport"] == "libp2p" and r["trace_hash"] is None
    assert r["invariant_violations"] == [] and r["converged"] and r["ok"]
    assert r["honest_writes"] > 10
    # the requests really went over the sockets, and the rogue's over-spend was caught there
    assert r["network"]["requests"] > r["writes"] and r["network"]["reply_bytes"] > 0
    assert r["rogue_agents"] > 0 and r["warranted_rogue_agents"] == r["rogue_agents"]


def test_simulated_faults_are_refused_on_the_real_network(capsys):
    with pytest.raises(SystemExit) as e:
        sim_main(["--transport", "libp2p", "--loss", "0.01", "--partition", "50/50@1m-2m"])
    assert "loss" in str(e.value) and "partitions" in str(e.value)
