"""The `budgetnode` command line, run as a user runs it."""

import json
import re
import subprocess
import sys


def bn(*args, check=True):
    p = subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, timeout=60
    )
    if check and p.returncode != 0:
        raise AssertionError(f"budgetnode {args} failed ({p.returncode}): {p.stderr}")
    return p


def test_init_call_status_and_refusal(tmp_path):
    d = str(tmp_path / "node")
    info = json.loads(bn("init", "--path", d, "--json").stdout)
    assert info["steward"].startswith("ag") and info["dna"].startswith("dn")
    agent = json.loads(bn("new-agent", "--path", d, "--json").stdout)["agent_id"]
    for i in range(3):
        h = json.loads(
            bn(
                "call",
                "--path",
                d,
                "--agent",
                agent,
                "rose_forest",
                "add_knowledge",
                json.dumps({"content": f"fact {i}", "tags": ["t"]}),
                "--json",
            ).stdout
        )
        assert h.startswith("ac")
    p = bn(
        "call",
        "--path",
        d,
        "--agent",
        agent,
        "rose_forest",
        "add_knowledge",
        '{"content": "one too many"}',
        check=False,
    )
    assert p.returncode == 1 and p.stdout == ""
    assert re.fullmatch(
        r"E_INSUFFICIENT_RU: need 33\.00 RU, have 1\.00 RU\. Budget resets at \d+\n", p.stderr
    )
    st = json.loads(bn("status", "--path", d, "--json").stdout)
    me = next(a for a in st["agents"] if a["agent_id"] == agent)
    assert (me["remaining_ru"], me["used_ru"], me["seq"]) == (1.0, 99.0, 3)
    assert me["resets_at"] - me["window_start"] in (86_400, 86_401)  # resets_at rounds up
    table = bn("status", "--path", d).stdout
    assert agent in table and "1.00" in table
    rows = json.loads(
        bn("call", "--path", d, "--agent", agent, "budget", "budget_status", "--json").stdout
    )
    assert rows["remaining_ru"] == 1.0


def test_bad_calls_exit_nonzero_with_a_clear_line(tmp_path):
    d = str(tmp_path / "node")
    bn("init", "--path", d)
    agent = bn("new-agent", "--path", d).stdout.strip()
    cases = [
        (("memory", "nope", "{}"), "E_UNKNOWN_FUNCTION"),
        (("memory", "transmit_understanding", "{not json"), "payload is not JSON"),
        (("memory", "transmit_understanding", '{"subject": "s"}'), "E_INVALID_INPUT"),
    ]
    for args, expect in cases:
        p = bn("call", "--path", d, "--agent", agent, *args, check=False)
        assert p.returncode == 1 and expect in p.stderr, (args, p.stderr)
    p = bn("call", "--path", d, "--agent", "ag" + "A" * 43, "budget", "budget_status", check=False)
    assert p.returncode == 1 and "E_UNKNOWN_AGENT" in p.stderr
    p = bn("status", "--path", str(tmp_path / "missing"), check=False)
    assert p.returncode != 0 and "no node store" in p.stderr


def test_single_node_demo_runs_its_scripted_day(tmp_path):
    out = bn("demo", "--single", "--path", str(tmp_path / "demo")).stdout
    assert (
        "refused: E_INSUFFICIENT_RU: need 33.00 RU, have 31.00 RU. Budget resets at 1730764800"
        in out
    )
    assert "granted 109.00 RU" in out
    assert out.rstrip().endswith("demo ok")


def test_cluster_demo_over_libp2p():
    out = bn("demo").stdout
    assert "/ip4/127.0.0.1/tcp/" in out
    assert (
        "refused: E_INSUFFICIENT_RU: need 33.00 RU, have 26.00 RU. Budget resets at 1730764800"
        in out
    )
    assert "granted 109.00 RU, claimed on node 1" in out
    assert "warrant(s) for mallory: over_spend" in out
    assert "bob refines: paid 3.00 RU by the card" in out
    assert "lineage of bob's output: refine by bob@1 <- card by alice@0 <- mint by steward" in out
    assert "every node sees the card: 3.00 spent, 27.00 of 30.00 RU left" in out
    assert out.rstrip().endswith("demo ok")


def test_up_cluster_and_a_joining_node_shut_down_cleanly(tmp_path):
    import signal

    def start(*args):
        p = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "up", *args, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = p.stdout.readline()  # waits for the node to be up; no sleeping
        assert line, p.stderr.read()
        return p, json.loads(line)

    cluster, info = start("--nodes", "3", "--path", str(tmp_path / "cluster"))
    try:
        assert len(info["nodes"]) == 3 and len({n["dna"] for n in info["nodes"]}) == 1
        assert all(n["listen"][0].startswith("/ip4/127.0.0.1/tcp/") for n in info["nodes"])
        joiner, jinfo = start(
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            info["nodes"][1]["listen"][0],
            "--path",
            str(tmp_path / "joiner"),
            "--dna-hash",
            info["nodes"][0]["dna"],
        )
        assert jinfo["nodes"][0]["dna"] == info["nodes"][0]["dna"]
        joiner.send_signal(signal.SIGTERM)
        assert joiner.wait(timeout=30) == 0
        # a joiner pinned to another network refuses to start
        bad = subprocess.run(
            [
                sys.executable,
                "-m",
                "node.cli",
                "up",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--bootstrap",
                info["nodes"][0]["listen"][0],
                "--path",
                str(tmp_path / "bad"),
                "--dna-hash",
                "dn" + "A" * 43,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode != 0 and "not the one expected" in bad.stderr
    finally:
        cluster.send_signal(signal.SIGINT)
        assert cluster.wait(timeout=30) == 0
    st = json.loads(bn("status", "--path", str(tmp_path / "joiner"), "--json").stdout)
    assert st["dna"] == info["nodes"][0]["dna"]


async def test_up_rogue_runs_a_node_that_skips_its_pre_flight(tmp_path):
    """`up --rogue` plugs the adversary (sims.rogue) into the node: its agent writes past its
    budget (an honest node refuses the 4th 33 RU write of a 100 RU budget)."""
    import signal

    import trio

    from node.sdk import AgentClient

    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli",
            "up",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--path",
            str(tmp_path / "rogue"),
            "--rogue",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = await trio.to_thread.run_sync(p.stdout.readline)
        assert line, p.stderr.read()
        node = json.loads(line)["nodes"][0]
        async with AgentClient.connect(node["app_url"], token=node["token"]) as a:
            for i in range(4):
                await a.add_knowledge(f"note {i}")
            assert (await a.budget_status()).remaining_ru == -32.0
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
