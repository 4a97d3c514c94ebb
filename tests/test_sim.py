"""The network simulator: seeded, replayable runs of real NetNodes under faults."""

import json
import os
import subprocess
import sys

import pytest

from node.core.errors import InvalidChain
from sims import Partition, SimConfig, run
from sims.cli import main as sim_main
from sims.config import load_scenario, parse_duration
from sims.invariants import audit_chain

SCENARIOS = os.path.join(os.path.dirname(__file__), "..", "sims", "scenarios")


def small(**kw) -> SimConfig:
    base = dict(seed=1, nodes=6, agents=12, hours=0.5, warmup=60)
    base.update(kw)
    return SimConfig(**base)


def test_parsers():
    assert parse_duration("50ms") == 0.05 and parse_duration("2h") == 7200
    assert parse_duration("90s") == 90 and parse_duration("1.5h") == 5400 and parse_duration(3) == 3
    p = Partition.parse("50/50@2h-4h")
    assert (p.kind, p.start, p.end, p.shares) == ("split", 7200, 14400, (50, 50))
    assert Partition.parse("30>70@1h-2h").kind == "oneway"
    iso = Partition.parse("isolate:5@10m-20m")
    assert (iso.kind, iso.node, iso.start) == ("isolate", 5, 600)
    for bad in ("50/50", "50/50@2h-1h", "x@1h-2h", "50@1h-2h"):
        with pytest.raises(ValueError):
            Partition.parse(bad)
    for name in os.listdir(SCENARIOS):
        SimConfig(**load_scenario(os.path.join(SCENARIOS, name)))


def test_faults_partition_and_rogues_converge_without_violations():
    r = run(
        SimConfig(
            seed=3,
            nodes=8,
            agents=16,
            hours=0.75,
            loss=0.01,
            dup=0.01,
            reorder=True,
            partitions=[Partition.parse("50/50@10m-20m"), Partition.parse("isolate@25m-30m")],
            skew=5,
            rogue=2,
            churn=0.2,
            warmup=60,
        )
    )
    assert r["invariant_violations"] == []
    assert r["converged"] and r["ok"]
    assert r["writes"] > 50 and r["refusals"] > 0
    assert r["rogue_agents"] > 0 and r["warranted_rogue_agents"] == r["rogue_agents"]
    assert r["convergence_p50_s"] is not None and r["messages_per_write"] > 0
    # every write at every authority of its hash and entry too (as the ring stands at the end)
    assert r["writes_missing_at_op_authorities"] == 0


def test_sixty_nodes_heal_a_long_split_well_within_the_deadline():
    # Each node drops the half it cannot reach; after the split, dropped peers were greeted back
    # four at a time, and 11-34 writes (seeds 1-3) were still missing at hash and entry
    # authorities 5 minutes into the liveness phase. A node a dropped peer answers re-signs its
    # info now, and the nodes that dropped it take it back from any peer swap.
    r = run(
        SimConfig(
            seed=3,
            nodes=60,
            agents=60,
            hours=0.5,
            latency=0.05,
            jitter=0.02,
            loss=0.01,
            partitions=[Partition.parse("50/50@5m-25m")],
            deadline=300,
        )
    )
    assert r["ok"] and r["writes_missing_at_op_authorities"] == 0, r["invariant_violations"][:2]
    assert r["sim_seconds"] - 1800 < 150  # the liveness phase began at 30 min


def test_a_run_is_a_function_of_its_seed_not_of_the_hash_seed():
    """Sets of byte strings iterate in hash order, which PYTHONHASHSEED changes per process:
    nothing whose order reaches the network may depend on it (the publisher once sent to an
    op's authorities in set order), so a replay in any process is the same run."""
    cmd = [
        sys.executable,
        "-m",
        "sims",
        "--seed",
        "730001",
        "--nodes",
        "8",
        "--agents",
        "16",
        "--hours",
        "0.25",
        "--loss",
        "0.01",
        "--dup",
        "0.01",
        "--reorder",
        "--churn",
        "0.3",
        "--rogue",
        "2",
        "--rogue-modes",
        "fork,skip_preflight",
        "--byzantine",
        "1",
        "--partition",
        "50/50@5m-10m",
        "--json",
    ]
    traces = set()
    for hash_seed in ("0", "1", "4242"):
        p = subprocess.run(
            cmd,
            env=dict(os.environ, PYTHONHASHSEED=hash_seed),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert p.returncode == 0, p.stderr[-2000:]
        traces.add(json.loads(p.stdout)["trace_hash"])
    assert len(traces) == 1


def test_same_seed_same_trace_other_seed_other_trace():
    cfg = small(
        loss=0.02, dup=0.02, reorder=True, rogue=1, partitions=[Partition.parse("50/50@5m-10m")]
    )
    a, b = run(cfg), run(cfg)
    assert a["trace_hash"] == b["trace_hash"]
    assert (a["writes"], a["refusals"], a["convergence_p99_s"]) == (
        b["writes"],
        b["refusals"],
        b["convergence_p99_s"],
    )
    c = run(cfg.replace(seed=2))
    assert c["trace_hash"] != a["trace_hash"]


def test_every_budget_cheat_is_warranted_everywhere():
    r = run(
        small(
            seed=4,
            nodes=8,
            agents=16,
            hours=0.5,
            rogue=3,
            rogue_modes=("skip_preflight", "forge_budget", "wrong_cost"),
        )
    )
    assert r["ok"], r["invariant_violations"]
    assert r["rogue_agents"] >= 3 and r["warranted_rogue_agents"] == r["rogue_agents"]


def test_fork_is_warranted_everywhere():
    r = run(
        small(
            seed=4,
            nodes=8,
            agents=16,
            hours=0.5,
            rogue=4,
            rogue_modes=("skip_preflight", "forge_budget", "wrong_cost", "fork"),
        )
    )
    assert r["ok"], r["invariant_violations"]
    assert r["rogue_agents"] >= 4 and r["warranted_rogue_agents"] == r["rogue_agents"]


def test_an_injected_validator_bug_is_caught(monkeypatch):
    """Authorities that stop checking over-spends must show up as violations, not pass."""
    import node.net.acceptor as netnode

    real = netnode.validate_next

    def lenient(cs, s, *a, **kw):
        try:
            return real(cs, s, *a, **kw)
        except InvalidChain as e:
            if e.reason != "over_spend":
                raise
            kw["verify_sig"] = False
            rec = s.action["budget"]  # accept the author's word: the bug
            from node.core.budget import BudgetState
            from node.core.validate import ChainState

            return ChainState(
                cs.author,
                s.seq,
                s.hash,
                s.action["ts"],
                BudgetState(rec["ws"], rec["rem"], cs.budget.used_mru + rec["cost"]),
                cs.claimed,
            )

    monkeypatch.setattr(netnode, "validate_next", lenient)
    r = run(small(seed=5, nodes=6, agents=12, hours=0.5, rogue=1, rogue_modes=("skip_preflight",)))
    assert not r["ok"]
    assert any("over-spend" in v for v in r["invariant_violations"])
    assert r["warranted_rogue_agents"] < r["rogue_agents"]
    assert r["replay"].startswith("budgetnode sim --seed 5")


def test_audit_catches_forged_budget_state():
    from node.core.action import Signed
    from node.core.crypto import SigningKey
    from node.core.dna import Dna
    from zomes import ROSE_FOREST

    key = SigningKey(b"k" * 32)
    dna = Dna.for_app(ROSE_FOREST)
    g = Signed.sign(
        {"type": "genesis", "author": key.public, "seq": 0, "prev": None, "ts": 0, "dna": dna.hash},
        key,
    )
    a = Signed.sign(
        {
            "type": "charge",
            "author": key.public,
            "seq": 1,
            "prev": g.hash,
            "ts": 1,
            "count": 3,
            "budget": {"op": "recall_understandings", "cost": 300, "ws": 0, "rem": 100_000},
        },
        key,
    )
    problems, _ = audit_chain([g, a], dna)
    assert problems and "forged BudgetState" in problems[0]


def test_ci_sweep(capsys):
    code = sim_main(
        [
            "--seeds",
            "1-5",
            "--nodes",
            "10",
            "--agents",
            "20",
            "--hours",
            "0.25",
            "--loss",
            "0.01",
            "--partition",
            "50/50@10m-15m",
            "--rogue",
            "1",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["seeds"] == 5 and out["violations"] == 0 and out["failed"] == []


def test_mixed_fault_seeds_pass_and_their_replay_commands_rebuild_them():
    """The long sweeps' scenarios (each seed draws its own faults) in miniature, and the promise
    a failing seed makes: its printed command rebuilds exactly the run that failed."""
    import argparse
    import shlex

    from sims.cli import _configure, config_from_args
    from sims.mixed import mixed

    kinds = set()
    for seed in (3, 11):
        cfg = mixed(seed, nodes=6, hours=0.25)
        assert cfg == mixed(seed, nodes=6, hours=0.25)  # drawn from the seed alone
        kinds.update(p.kind for p in cfg.partitions)
        words = shlex.split(cfg.replay_command())
        assert words[:2] == ["budgetnode", "sim"]
        args = _configure(argparse.ArgumentParser()).parse_args(words[2:])
        assert config_from_args(args) == cfg
        r = run(cfg)
        assert r["ok"], (cfg.replay_command(), r["invariant_violations"][:3])
    assert kinds  # these seeds do draw partitions


def test_a_restart_racing_the_liveness_phase_starts_one_node_not_two():
    """Seed 412830 of the mixed sweep: churn restarted node 6 a moment before the liveness phase
    began, and the liveness phase, seeing no node in the slot yet, started a second one on the
    same store. The twin took over the node's address, so the node the checker watched never
    heard a reply again and the run could not converge."""
    from sims.mixed import mixed

    cfg = mixed(412830)
    assert cfg.churn > 0
    r = run(cfg)
    assert r["ok"], r["invariant_violations"][:3]


@pytest.mark.parametrize(
    "seed, what",
    [
        (
            460159,
            "a recheck pass that ended short was re-armed for later, and the publisher went "
            "idle instead of waiting for it: an authority of the write's hash never got it",
        ),
        (
            470051,
            "after a three-way partition a node had dropped four peers and greeted one every "
            "other gossip round: the one it had not re-admitted was an entry authority",
        ),
    ],
)
def test_mixed_seeds_that_once_failed_the_op_authority_invariant(seed, what):
    from sims.mixed import mixed

    r = run(mixed(seed))
    assert r["ok"], (what, r["invariant_violations"][:3])
    assert r["writes_missing_at_op_authorities"] == 0
