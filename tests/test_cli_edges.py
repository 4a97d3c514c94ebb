"""Every CLI subcommand's bad paths, ports, addresses and payloads, walked as a table: each
gives one line on stderr that starts with a stable code, a non-zero exit, and leaves every file
as it was (nothing created, nothing changed). The CLI runs in process (`cli.main`), as a shell
would run it, minus the interpreter start."""

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile

import pytest

from node import cli
from node.core.crypto import to_text

DEAD_PEER = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
LISTEN = "/ip4/127.0.0.1/tcp/0"
NOT_MINE = "192.0.2.1"  # TEST-NET-1: never this machine's address
SOME_ACTION = to_text("action", bytes(32))
SOME_AGENT = to_text("agent", bytes(32))

# (subcommand, argv with {placeholders}, code, exit status); placeholders: {store} a node's store
# (steward {steward}), {cluster} a local cluster's directory, {file} a file, {ro} a read-only
# store, {kdir} a directory whose keystore.keys is a directory, {new} a path that does not exist
ROWS = [
    ("init", "init --path {file}", "E_STORE_UNUSABLE", 1),
    ("init", "init --path {file}/sub", "E_STORE_UNUSABLE", 1),
    ("init", "init --path ", "E_STORE_UNUSABLE", 1),
    ("init", "init --path {ro}/new", "E_STORE_UNUSABLE", 1),
    ("init", "init --path {kdir}", "E_STORE_UNUSABLE", 1),
    ("init", "init --path {new} --durability disk", "E_INVALID_INPUT", 2),
    ("init", "init", "E_INVALID_INPUT", 2),
    ("init", "init --path {new} --membrane closed", "E_INVALID_INPUT", 2),
    ("invite", "invite", "E_INVALID_INPUT", 1),
    ("invite", "invite --path {new}", "E_NOT_FOUND", 1),
    ("invite", "invite --path {ro}", "E_STORE_UNUSABLE", 1),
    ("invite", "invite --url ws://127.0.0.1:1/agent --token t", "E_NODE_UNREACHABLE", 1),
    ("invite", "invite --path {store} --note " + "x" * 300, "E_INVALID_INPUT", 1),
    ("new-agent", "new-agent --path {store} --invite garbage", "E_INVALID_INPUT", 1),
    ("up", "up --max-agents 0", "E_INVALID_INPUT", 2),
    ("new-agent", "new-agent --path {new}", "E_NOT_FOUND", 1),
    ("verify", "verify", "E_INVALID_INPUT", 2),
    ("verify", "verify --path {new}", "E_NOT_FOUND", 1),
    ("verify", "verify --path {file}", "E_NOT_FOUND", 1),
    ("new-agent", "new-agent --path {ro}", "E_STORE_UNUSABLE", 1),
    ("new-agent", "new-agent --path {file}", "E_NOT_FOUND", 1),
    ("new-agent", "new-agent --path {store} --url ws://127.0.0.1:1/agent", "E_INVALID_INPUT", 1),
    ("new-agent", "new-agent --url ws://127.0.0.1:1/agent", "E_INVALID_INPUT", 1),
    ("new-agent", "new-agent --url ws://127.0.0.1:1/agent --token t", "E_NODE_UNREACHABLE", 1),
    ("budgets", "budgets", "E_INVALID_INPUT", 1),
    ("budgets", "budgets --path {new}", "E_NOT_FOUND", 1),
    ("budgets", "budgets --path {ro}", "E_STORE_UNUSABLE", 1),
    ("budgets", "budgets --path {store} --url ws://127.0.0.1:1/agent", "E_INVALID_INPUT", 1),
    ("budgets", "budgets --url ws://127.0.0.1:1/agent --token t", "E_NODE_UNREACHABLE", 1),
    ("lineage", "lineage --path {store}", "E_INVALID_INPUT", 2),
    ("lineage", "lineage nope --path {store}", "E_INVALID_INPUT", 1),
    ("lineage", f"lineage {SOME_ACTION} --path {{store}}", "E_NOT_FOUND", 1),
    ("lineage", f"lineage {SOME_ACTION} --path {{ro}}", "E_STORE_UNUSABLE", 1),
    (
        "lineage",
        f"lineage {SOME_ACTION} --url ws://127.0.0.1:1/a --token t",
        "E_NODE_UNREACHABLE",
        1,
    ),
    ("proposals", "proposals", "E_INVALID_INPUT", 1),
    ("proposals", "proposals --path {new}", "E_NOT_FOUND", 1),
    ("proposals", "proposals --path {ro}", "E_STORE_UNUSABLE", 1),
    ("proposals", "proposals --path {store} --state maybe", "E_INVALID_INPUT", 2),
    ("proposals", "proposals --url ws://127.0.0.1:1/agent --token t", "E_NODE_UNREACHABLE", 1),
    ("envelopes", "envelopes --path {new}", "E_NOT_FOUND", 1),
    ("envelopes", "envelopes --path {store} --sort size", "E_INVALID_INPUT", 2),
    ("envelopes", "envelopes --url ws://127.0.0.1:1/agent --token t", "E_NODE_UNREACHABLE", 1),
    (
        "vote",
        "vote --path {store} --agent {steward} nope approve --scores {{}}",
        "E_INVALID_INPUT",
        1,
    ),
    (
        "vote",
        f"vote --path {{store}} --agent {{steward}} {SOME_ACTION} approve --scores {{{{bad",
        "E_INVALID_INPUT",
        1,
    ),
    (
        "vote",
        f"vote --path {{store}} --agent {{steward}} {SOME_ACTION} approve --scores "
        '{{"evidence":1,"novelty":1,"alignment":1,"community":1}}',
        "E_NOT_FOUND",
        1,
    ),
    (
        "vote",
        f"vote --path {{store}} --agent {{steward}} {SOME_ACTION} maybe --scores {{{{}}}}",
        "E_INVALID_INPUT",
        2,
    ),
    ("rebalance", "rebalance --path {new} --dry-run", "E_NOT_FOUND", 1),
    ("rebalance", "rebalance --path {store} --agent nope --dry-run", "E_INVALID_INPUT", 1),
    ("rebalance", "rebalance --url ws://127.0.0.1:1/agent --token t", "E_INVALID_INPUT", 1),
    ("envelopes", "envelopes --path {store} --plot {file}/sub/x.png", "E_INVALID_INPUT", 1),
    ("status", "status", "E_INVALID_INPUT", 1),
    ("status", "status --path {ro}", "E_STORE_UNUSABLE", 1),
    ("status", "status --path {kdir}", "E_NOT_FOUND", 1),
    ("status", "status --url ws://127.0.0.1:1/agent --token t", "E_NODE_UNREACHABLE", 1),
    (
        "call",
        "call --path {store} --agent {steward} rose_forest get_edges {{bad",
        "E_INVALID_INPUT",
        1,
    ),
    (
        "call",
        "call --path {store} --agent {steward} rose_forest get_edges [1]",
        "E_INVALID_INPUT",
        1,
    ),
    (
        "call",
        'call --path {store} --agent {steward} rose_forest get_edges {{"from_hash":"'
        + SOME_ACTION
        + '","limit":"9"}}',
        "E_INVALID_INPUT",
        1,
    ),
    (
        "call",
        'call --path {store} --agent {steward} rose_forest get_edges {{"from_hash":"'
        + SOME_ACTION
        + '","limit":-1}}',
        "E_INVALID_INPUT",
        1,
    ),
    (
        "call",
        'call --path {store} --agent {steward} rose_forest add_knowledge {{"content":7}}',
        "E_INVALID_INPUT",
        1,
    ),
    ("call", "call --path {store} --agent nobody rose_forest get_edges", "E_INVALID_INPUT", 1),
    (
        "call",
        "call --path {store} --agent " + SOME_AGENT + " budget budget_status",
        "E_UNKNOWN_AGENT",
        1,
    ),
    ("call", "call --path {store} --agent {steward} nozome nofn", "E_UNKNOWN_FUNCTION", 1),
    ("call", "call --path {ro} --agent {steward} budget budget_status", "E_STORE_UNUSABLE", 1),
    ("call", "call --path {store} rose_forest get_edges", "E_INVALID_INPUT", 2),
    ("up", "up --nodes 0", "E_INVALID_INPUT", 1),
    ("up", "up --nodes -2", "E_INVALID_INPUT", 1),
    ("up", "up --nodes 1 --path {store}", "E_INVALID_INPUT", 1),
    ("up", "up --listen " + LISTEN + " --path {cluster}", "E_INVALID_INPUT", 1),
    ("up", "up --app-port 99999", "E_INVALID_INPUT", 2),
    ("up", "up --app-port -1", "E_INVALID_INPUT", 2),
    ("up", "up --app-port http", "E_INVALID_INPUT", 2),
    ("up", "up --app-port 65535 --nodes 3", "E_INVALID_INPUT", 1),
    ("up", "up --listen garbage", "E_INVALID_INPUT", 1),
    ("up", "up --listen /ip4/127.0.0.1/udp/4001", "E_INVALID_INPUT", 1),
    ("up", "up --listen /ip4/" + NOT_MINE + "/tcp/4001", "E_ADDRESS_UNUSABLE", 1),
    ("up", "up --listen " + LISTEN + " --app-host " + NOT_MINE, "E_ADDRESS_UNUSABLE", 1),
    ("up", "up --dna-hash dnWhatever", "E_INVALID_INPUT", 1),
    ("up", "up --bootstrap /ip4/127.0.0.1/tcp/1", "E_INVALID_INPUT", 1),
    ("up", "up --bootstrap " + DEAD_PEER + " --dna-hash nonsense", "E_INVALID_INPUT", 1),
    ("up", "up --bootstrap " + DEAD_PEER + " --path {new}", "E_PEER_UNREACHABLE", 1),
    ("up", "up --listen " + LISTEN + " --path {ro}", "E_STORE_UNUSABLE", 1),
    ("up", "up --listen " + LISTEN + " --path {file}", "E_STORE_UNUSABLE", 1),
    ("up", "up --listen " + LISTEN + " --path {kdir}", "E_STORE_UNUSABLE", 1),
    ("up", "up --rogue nonsense", "E_INVALID_INPUT", 1),
    ("up", "up --mdns", "E_INVALID_INPUT", 1),  # mDNS announces --listen: none given
    ("up", "up --mdns --listen " + LISTEN, "E_INVALID_INPUT", 1),  # loopback: not on the LAN
    ("up", "up --mdns --listen /ip4/0.0.0.0/tcp/4001", "E_INVALID_INPUT", 1),
    ("up", "up --relay garbage", "E_INVALID_INPUT", 1),
    ("up", "up --relay /ip4/127.0.0.1/tcp/1", "E_INVALID_INPUT", 1),
    ("up", "up --relay " + DEAD_PEER + "/p2p-circuit/p2p/" + DEAD_PEER[-52:], "E_INVALID_INPUT", 1),
    ("up", "up --relay " + DEAD_PEER + " --path {new}", "E_PEER_UNREACHABLE", 1),
    ("demo", "demo --nodes 1", "E_INVALID_INPUT", 1),
    ("demo", "demo --nodes three", "E_INVALID_INPUT", 2),
    ("demo", "demo --single --path {file}", "E_STORE_UNUSABLE", 1),
    ("sim", "sim --nodes many", "E_INVALID_INPUT", 2),
    ("nemesis", "nemesis --nodes 1", "E_INVALID_INPUT", 2),
    ("nemesis", "nemesis --nodes many", "E_INVALID_INPUT", 2),
    ("nemesis", "nemesis --faults kill,flood", "E_INVALID_INPUT", 2),
    ("nemesis", "nemesis --minutes 0", "E_INVALID_INPUT", 2),
    ("nemesis", "nemesis --rate fast", "E_INVALID_INPUT", 2),
    ("nemesis", "nemesis --settle -5", "E_INVALID_INPUT", 2),
    ("up", "up --max-deferred-per-agent 0", "E_INVALID_INPUT", 2),
    (
        "call",
        "call --path {store} --agent {steward} --defer --check rose_forest add_knowledge",
        "E_INVALID_INPUT",
        1,
    ),
    ("call", "call --path {store} --agent {steward} --check nozome nofn", "E_UNKNOWN_FUNCTION", 1),
    (
        "call",
        "call --path {store} --agent {steward} --defer rose_forest add_knowledge {{}}",
        "E_INVALID_INPUT",
        1,
    ),
    ("audit", "audit", "E_INVALID_INPUT", 1),
    ("audit", "audit --path {new}", "E_NOT_FOUND", 1),
    ("audit", "audit --path {store} --url ws://127.0.0.1:1/agent", "E_INVALID_INPUT", 1),
    ("audit", "audit --url ws://127.0.0.1:1/agent --token t", "E_NODE_UNREACHABLE", 1),
    ("audit", "audit --path {store} --since yesterday", "E_INVALID_INPUT", 2),
    ("audit", "audit --path {store} --agent nobody", "E_INVALID_INPUT", 1),
]


def test_the_table_covers_every_subcommand():
    subcommands = set(cli._parser([])._subparsers._group_actions[0].choices)
    assert {row[0] for row in ROWS} == subcommands


def _snapshot(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            if os.path.isdir(p):
                out[p] = ("dir", os.stat(p).st_mode)
            elif name == "chain.db":  # its data, but the audit log, which records refusals
                out[p] = (_store_data(p), os.stat(p).st_mode)
            else:
                with open(p, "rb") as f:
                    out[p] = (hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mode)
    return out


def _store_data(path) -> str:
    with tempfile.TemporaryDirectory() as tmp:  # a copy: the store may be read-only, in WAL
        for suffix in ("", "-wal"):
            if os.path.exists(path + suffix):
                shutil.copyfile(path + suffix, os.path.join(tmp, "c.db" + suffix))
        db = sqlite3.connect(os.path.join(tmp, "c.db"))
        try:
            rows = [
                line
                for line in db.iterdump()
                if '"audit"' not in line and "'audit'" not in line and "sqlite_sequence" not in line
            ]
        finally:
            db.close()
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _read_only(src, dst):
    """`dst`: a read-only view of `src`, honestly read-only even to root (a read-only bind
    mount); for another user a 0555 directory is. None (with the reason) when neither works."""
    os.makedirs(dst)
    if os.geteuid() != 0:
        os.chmod(dst, 0o555)
        return None
    for cmd in (["mount", "--bind", src, dst], ["mount", "-o", "remount,ro,bind", dst]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            return f"running as root and `{' '.join(cmd)}` failed: {done.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("edges"))
    store = os.path.join(root, "store")
    assert cli.main(["init", "--path", store, "--json"]) == 0
    cluster = os.path.join(root, "cluster")
    assert cli.main(["init", "--path", os.path.join(cluster, "node0")]) == 0
    with open(os.path.join(root, "file"), "w") as f:
        f.write("not a directory\n")
    kdir = os.path.join(root, "kdir")
    os.makedirs(os.path.join(kdir, "keystore.keys"))
    ro = os.path.join(root, "ro")
    if os.geteuid() == 0:
        ro_src = os.path.join(root, "ro-src")
        assert cli.main(["init", "--path", ro_src]) == 0
        why_not = _read_only(ro_src, ro)
    else:
        assert cli.main(["init", "--path", ro]) == 0
        why_not = None
        os.chmod(ro, 0o555)
    yield {
        "root": root,
        "store": store,
        "cluster": cluster,
        "file": os.path.join(root, "file"),
        "kdir": kdir,
        "ro": ro,
        "new": os.path.join(root, "new"),
        "why_not_ro": why_not,
        "steward": _steward(store),
    }
    if os.geteuid() == 0 and why_not is None:
        subprocess.run(["umount", ro], check=True)
    else:
        os.chmod(ro, 0o755)


@pytest.mark.parametrize(("sub", "argv", "code", "status"), ROWS, ids=[r[1][:60] for r in ROWS])
def test_a_bad_input_gives_one_line_a_stable_code_and_changes_no_file(
    places, capsys, monkeypatch, sub, argv, code, status
):
    if "{ro}" in argv and places["why_not_ro"]:
        pytest.skip(f"no honest read-only directory here: {places['why_not_ro']}")
    monkeypatch.delenv("BUDGETNODE_TOKEN", raising=False)
    capsys.readouterr()
    args = [a.format(**places) for a in argv.split(" ")]
    if argv.endswith("--path "):
        args[-1] = ""
    before = _snapshot(places["root"])
    try:
        rc = cli.main(args)
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(code + ": "), err
    if code == "E_PEER_UNREACHABLE":
        assert DEAD_PEER in lines[0]  # the operator sees which address failed
    assert _snapshot(places["root"]) == before


def _steward(store):
    # the steward's id, read from the store the fixture made (status --path --json)
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["status", "--path", store, "--json"]) == 0
    return next(a["agent_id"] for a in json.loads(out.getvalue())["agents"] if a["steward"])


async def test_up_bootstrapping_from_a_libp2p_peer_that_is_no_budgetnode_says_so_in_one_line(
    tmp_path,
):
    """A libp2p host that speaks no /budgetnode protocol (as a js-libp2p node would be): `up
    --bootstrap` to it exits non-zero with one E_PEER_UNREACHABLE line naming the address (it
    was a 52-line ExceptionGroup traceback), and makes no store."""
    import sys

    import trio

    from node.net.libp2p_transport import open_libp2p_transport

    async def no_budgetnode(peer, payload):
        raise AssertionError("never called: nobody dials this protocol")

    new = str(tmp_path / "new")
    async with open_libp2p_transport(bytes(range(32)), no_budgetnode, protocol="/other/1.0.0") as t:
        addr = t.listen_addrs()[0]
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "node.cli", "up", "--bootstrap", addr, "--path", new],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr.decode()
    assert lines[0].startswith("E_PEER_UNREACHABLE: ") and addr in lines[0]
    assert not await trio.Path(new).exists()


def test_up_refuses_a_store_of_another_network_than_dna_hash_pins(places, capsys):
    """`--dna-hash` with a store that exists: the store's network must be the pinned one (it
    was ignored). The node opens the store to read its DNA, so this row is not in the table."""
    other = to_text("dna", bytes(32))
    argv = ["up", "--listen", LISTEN, "--path", places["store"], "--bootstrap", DEAD_PEER]
    capsys.readouterr()
    assert cli.main([*argv, "--dna-hash", other, "--no-app"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("E_WRONG_NETWORK: "), lines
