"""`budgetnode nemesis`: the checker's verdicts on histories built to fail each one, the
namespaces' bookkeeping, and a short real run (3 node processes in their own network
namespaces, faults injected, every verdict held) — the run needs root and `ip netns`, and is
skipped, saying so, only where they are missing."""

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from node import cli
from node.core import dht
from node.core.crypto import to_text
from node.core.errors import Unsupported
from sims import netns
from sims.nemesis_check import (
    Ack,
    ChainView,
    History,
    Refusal,
    authorities,
    judge,
    percentile,
    roles,
    slowest,
)

BASE, COST = 100_000, 3_000
NODES = [bytes([i]) * 32 for i in range(5)]


def _agent(i):
    return to_text("agent", bytes([100 + i]) * 32)


def _hash(i):
    return to_text("action", bytes([200 - i]) * 32)


def _view(seq=3, used=9_000):
    return ChainView(seq, _hash(seq), 0, BASE - used, used)


def _healthy(n_writes=3):
    """A history whose verdicts all hold: each write held at every node, every node agreeing."""
    h = History(faults=Counter(kill=2))
    agent = _agent(0)
    h.agents[agent] = 0
    for k in range(n_writes):
        h.acks.append(Ack(_hash(k), 0, agent, invoked=k, acked=k + 0.1))
    held = {a.hash: set(range(len(NODES))) for a in h.acks}
    views = {i: {agent: _view(n_writes, COST * n_writes)} for i in range(len(NODES))}
    return h, held, views


def _judge(h, held, views, warrants=None, errors=None, visible=None, converged=True):
    return judge(
        h, NODES, held, visible or {}, warrants or {}, views, errors or {}, converged, BASE, COST
    )


def test_a_healthy_history_passes_every_verdict():
    h, held, views = _healthy()
    r = _judge(h, held, views, visible={a.hash: a.acked + 2.0 for a in h.acks})
    assert r["ok"] and r["failed"] == []
    assert r["acked_writes"] == 3 and r["lost_writes"] == 0 and r["faults"] == {"kill": 2}
    assert r["visibility_p50_s"] == 2.0 and r["visibility_p99_s"] == 2.0


def test_a_write_missing_at_one_authority_is_lost():
    h, held, views = _healthy()
    victim = h.acks[1]
    must = authorities(victim, NODES)
    gone = sorted(must - {victim.node})[0]
    held[victim.hash].discard(gone)
    r = _judge(h, held, views)
    assert r["lost_writes"] == 1 and "lost_writes" in r["failed"] and not r["ok"]
    assert r["details"]["lost"][0]["missing_at"] == [gone]


def test_a_write_missing_only_where_it_need_not_be_is_not_lost():
    h, held, views = _healthy()
    a = h.acks[0]
    outside = set(range(len(NODES))) - authorities(a, NODES)
    assert outside  # 5 nodes, r = 3: some node is no authority of it
    held[a.hash] -= outside
    assert _judge(h, held, views)["lost_writes"] == 0


def test_authorities_are_the_writer_and_the_nearest_to_the_hash_and_the_author():
    a = Ack(_hash(0), 4, _agent(0), 0, 0)
    expect = {4} | {
        NODES.index(p)
        for b in (bytes([200]) * 32, bytes([100]) * 32)
        for p in dht.nearest(b, NODES, 3)
    }
    assert authorities(a, NODES) == expect


def test_nodes_that_disagree_on_an_agents_chain_are_divergent():
    h, held, views = _healthy()
    must = next(iter(authorities(h.acks[0], NODES) - {0}))
    views[must][_agent(0)] = _view(2, COST * 2)  # one write behind
    r = _judge(h, held, views)
    assert r["divergent_budgets"] == 1 and "divergent_budgets" in r["failed"]


def test_an_authority_missing_the_chain_is_divergent():
    h, held, views = _healthy()
    key_auth = [NODES.index(p) for p in dht.nearest(bytes([100]) * 32, NODES, 3)]
    del views[key_auth[0]][_agent(0)]
    assert _judge(h, held, views)["divergent_budgets"] == 1


def test_more_acknowledged_than_the_allowance_is_overspend():
    h, held, views = _healthy(n_writes=34)  # 34 x 3 RU > 100 RU
    r = _judge(h, held, views)
    assert r["overspent_agents"] == 1 and "overspent_agents" in r["failed"]


def test_a_refusal_for_want_of_ru_the_agent_had_is_wrong():
    h, held, views = _healthy(n_writes=3)
    h.refusals.append(Refusal("E_INSUFFICIENT_RU", 0, _agent(0), 5.0))
    assert _judge(h, held, views)["wrongly_refused"] == 1
    h2, held2, views2 = _healthy(n_writes=33)  # 99 RU used: 3 more do not fit in 100
    h2.refusals.append(Refusal("E_INSUFFICIENT_RU", 0, _agent(0), 40.0))
    r = _judge(h2, held2, views2)
    assert r["wrongly_refused"] == 0 and r["refused"] == {"E_INSUFFICIENT_RU": 1}


def test_a_warrant_on_an_honest_agent_a_store_error_a_crash_or_no_convergence_fail():
    h, held, views = _healthy()
    warrants = {2: [{"agent_id": _agent(0), "kind": "fork", "reason": "x"}]}
    assert _judge(h, held, views, warrants=warrants)["failed"] == ["honest_warranted"]
    on_a_node = {1: [{"agent_id": to_text("agent", NODES[3]), "kind": "peer", "reason": "x"}]}
    assert _judge(h, held, views, warrants=on_a_node)["honest_warranted"] == 1
    assert _judge(h, held, views, errors={1: "E_STORE_CORRUPTED: x"})["failed"] == ["store_errors"]
    assert _judge(h, held, views, converged=False)["failed"] == ["converged"]
    h.crashes.append({"node": 1, "exit": 1, "stderr_tail": "Traceback"})
    assert _judge(h, held, views)["failed"] == ["crashes"]


def test_the_slowest_writes_name_the_late_node_and_why_it_must_hold_the_write():
    h, _, _ = _healthy()
    a = h.acks[1]
    role = roles(a, NODES)
    assert role[a.node] == "writer" and set(role) == authorities(a, NODES)
    key = [NODES.index(p) for p in dht.nearest(bytes([100]) * 32, NODES, 3) if NODES.index(p) != 0]
    assert all(role[i] == "key" for i in key)
    seen = {x.hash: {i: x.acked + 0.5 for i in roles(x, NODES)} for x in h.acks}
    late = key[0]
    seen[a.hash][late] = a.acked + 30.0
    del seen[h.acks[2].hash][late]  # never seen there: slowest of all
    rows = slowest(h, NODES, seen, n=2)
    assert [r["hash"] for r in rows] == [h.acks[2].hash, a.hash]
    assert rows[0]["late"][str(late)] == {"role": "key", "after_s": None}
    assert rows[1]["late"][str(late)] == {"role": "key", "after_s": 30.0}


def test_percentiles():
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(x) for x in range(101)], 0.99) == 99.0


def test_without_root_nemesis_says_why_and_exits_non_zero(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(Unsupported, match="root"):
        netns.preflight()
    assert cli.main(["nemesis", "--minutes", "0.1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("E_UNSUPPORTED: ") and "root" in err[0]


def test_without_ip_nemesis_says_why(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    with pytest.raises(Unsupported, match="iproute2"):
        netns.preflight()


needs_netns = pytest.mark.skipif(netns.unavailable() is not None, reason=f"{netns.unavailable()}")


def _ours(run):
    """A namespace, bridge or veth of this run is left. Names are matched from their start: a
    substring test also matched another run's veth (`bnnv` + its run id + a host number can
    contain this run's id), which made the leftovers test fail while other runs were alive."""
    names = [line.split()[0] for line in netns._ip("netns", "list").stdout.splitlines() if line]
    names += [
        line.split(":")[1].strip().split("@")[0]
        for line in netns._ip("-o", "link", "show").stdout.splitlines()
        if line
    ]
    p = netns.PREFIX
    starts = (f"{p}-{run}-", f"{p}b{run}", f"{p}v{run}", f"{p}p{run}")
    return any(n.startswith(starts) for n in names)


@needs_netns
def test_a_dead_runs_leftovers_are_removed_and_a_live_runs_are_not():
    live = netns.Lan()
    dead = netns.Lan()
    try:
        live.add_host()
        dead.add_host()
        dead._lock.close()  # as if its harness had been killed: its lock is free
        cleaned = netns.clean_leftovers()
        assert dead.run in cleaned and not _ours(dead.run)
        assert live.run not in cleaned and _ours(live.run)
    finally:
        live.close()
        dead.closed = True
    assert not _ours(live.run)


@needs_netns
def test_a_short_nemesis_run_on_three_hosts_holds_every_verdict(tmp_path):
    """3 node processes, each in its own namespace, 45 s of writes under every kind of fault,
    then the checker: no acknowledged write lost, every node agreeing on every agent's budget,
    nothing over-spent or wrongly refused, no warrant, no crash; and nothing left behind."""
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "nemesis", "--nodes", "3", "--minutes", "0.75"]
        + ["--seed", "7", "--settle", "30", "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] and report["failed"] == []
    assert report["lost_writes"] == 0 and report["divergent_budgets"] == 0 and report["converged"]
    assert report["acked_writes"] >= 30  # the writers made progress through the faults
    assert set(report["faults"]) == {"kill", "partition", "pause", "move"}
    assert report["visibility_p50_s"] is not None
    assert report["visibility_p50_s"] <= report["visibility_p99_s"]
    assert json.loads((out / "report.json").read_text())["acked_writes"] == report["acked_writes"]
    assert not _ours(report["run"])  # namespaces, veths and bridge all gone


@needs_netns
async def test_sigterm_mid_run_removes_every_process_and_host():
    """A run stopped by SIGTERM (as a CI runner or systemd stops it) tears down as Ctrl-C does:
    exit 143, its node processes gone, its namespaces, veths and bridge removed."""
    import signal

    import trio

    argv = [sys.executable, "-m", "node.cli", "nemesis", "--nodes", "2", "--minutes", "5"]
    proc = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
    try:
        seen = b""
        with trio.fail_after(120):
            while b"writing for" not in seen:
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, seen.decode()
                seen += chunk
        m = re.search(rb"run ([0-9a-f]+): hosts on ([0-9.]+)\.0/24", seen)
        assert m, seen.decode()
        run, net = m.group(1).decode(), m.group(2).decode()
        assert _ours(run)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            assert await proc.wait() == 143
    finally:
        if proc.returncode is None:
            proc.kill()
    assert not _ours(run)
    pattern = f"--listen /ip4/{re.escape(net)}\\."  # this run's node processes
    leftover = await trio.run_process(
        ["pgrep", "-f", "--", pattern], capture_stdout=True, capture_stderr=True, check=False
    )
    assert leftover.returncode == 1, leftover  # 1: no process matched (2 would be an error)


@needs_netns
def test_a_node_that_cannot_start_stops_the_run_naming_its_error(tmp_path):
    """A node process that exits while starting (here its store is unusable: chain.db is a
    directory) cannot be judged: exit 1, its own error quoted, and nothing left behind."""
    out = tmp_path / "run"
    (out / "node0" / "chain.db").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "nemesis", "--nodes", "2", "--minutes", "0.1"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("nemesis: the run stopped: node 0 exited (1) while starting")
    assert "E_STORE_UNUSABLE" in last
    m = re.search(r"run ([0-9a-f]+): hosts on", done.stderr)
    assert m, done.stderr
    assert not _ours(m.group(1))
