"""The app socket end to end: `budgetnode up --nodes 3 --app-port 0 --json` in a subprocess,
clients (the SDK, raw websockets, the CLI, a metrics scraper) in the test process. Every wait is
on a condition or a subprocess's output, bounded by a timeout."""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, open_websocket_url

from node.app.client import NodeClient
from node.app.wire import pack, unpack
from node.core.encoding import encode
from node.sdk import (
    AgentClient,
    AllocationResult,
    BudgetError,
    BudgetStatus,
    InsufficientRU,
    InvalidInput,
    NotAuthorized,
    TooLarge,
    UnknownFunction,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_line(proc, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(
                f"`budgetnode up` printed {buf!r}; stderr: "
                f"{proc.stderr.read().decode() if proc.poll() is not None else ''}"
            )
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                continue
            buf += chunk
    return buf.decode()


class Cluster:
    def __init__(self, info, path):
        self.nodes = info["nodes"]
        self.path = path
        self.acked: list[str] = []  # action hashes the nodes acknowledged

    def url(self, i=0):
        return self.nodes[i]["app_url"]

    def token(self, i=0):
        return self.nodes[i]["token"]

    def connect(self, i=0, agent=None):
        return AgentClient.connect(self.url(i), token=self.token(i), agent=agent)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("up"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli",
            "up",
            "--nodes",
            "3",
            "--app-port",
            "0",
            "--json",
            "--metrics-per-agent",
            "--path",
            path,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = _read_line(proc, 60)
        c = Cluster(json.loads(line), path)
        yield c
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
        assert proc.stdout.read() == b""  # exactly one line was printed
        for i in range(3):
            assert not os.path.exists(os.path.join(path, f"node{i}", "app.token"))
        trio.run(_stores_validate, path, c.acked)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _stores_validate(path, acked):
    """Reopening each store re-validates every chain it holds; every acknowledged action is
    there."""
    from node.net.memory import MemoryNetwork
    from node.net.node import NetNode

    net = MemoryNetwork()
    found = set()
    for i in range(3):
        async with NetNode.open(net.transport, path=os.path.join(path, f"node{i}")) as node:
            for h in acked:
                try:
                    node.get_record(h)
                    found.add(h)
                except BudgetError:
                    pass
    assert set(acked) <= found, set(acked) - found


async def scrape(url) -> dict:
    def get():
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            return r.read().decode()

    text = await trio.to_thread.run_sync(get)
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def bn(*args, env=None, check=True):
    def run():
        return subprocess.run(
            [sys.executable, "-m", "node.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )

    p = await trio.to_thread.run_sync(run)
    if check and p.returncode != 0:
        raise AssertionError(f"budgetnode {args} failed ({p.returncode}): {p.stderr}")
    return p


def test_up_prints_one_line_describing_every_node(cluster):
    assert len(cluster.nodes) == 3
    for n in cluster.nodes:
        assert n["peer_id"].startswith("12D3Koo") and n["listen"][0].startswith("/ip4/127.0.0.1/")
        assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/agent", n["app_url"])
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", n["metrics_url"])
        assert len(n["token"]) >= 32 and n["dna"] == cluster.nodes[0]["dna"]
        tok = os.path.join(n["path"], "app.token")
        assert open(tok).read().strip() == n["token"] and os.stat(tok).st_mode & 0o077 == 0
    assert len({n["token"] for n in cluster.nodes}) == 3


async def test_the_full_zome_surface_over_the_wire(cluster):
    async with NodeClient.connect(cluster.url(), token=cluster.token()) as node:
        steward_id = next(a["agent_id"] for a in (await node.status())["agents"] if a["steward"])
    async with (
        cluster.connect() as alice,
        cluster.connect() as bob,
        cluster.connect(agent=steward_id) as steward,
    ):
        assert alice.agent_id.startswith("ag") and alice.agent_id != bob.agent_id
        st = await alice.budget_status()
        assert isinstance(st, BudgetStatus) and st.remaining_ru == 100.0 and st.used_ru == 0.0
        k = await alice.add_knowledge(content="soil holds water", tags=["soil"])
        t = await alice.create_thought_credential(title="t", body="b")
        e = await alice.link_edge(from_hash=k, to_hash=t, relation="supports")
        edges = await alice.get_edges(from_hash=k)
        assert isinstance(edges, list) and [x["hash"] for x in edges] == [e]
        assert edges[0]["content"]["to"] == t
        u = await bob.transmit_understanding(
            subject="soil", predicate="holds", object="water", context="field notes"
        )
        rows = await alice.recall_understandings(subject="soil", limit=10)
        assert rows == [
            {
                "subject": "soil",
                "predicate": "holds",
                "object": "water",
                "context": "field notes",
                "author": bob.agent_id,
                "hash": u,
            }
        ]
        c = await alice.compose_memories(other_agent_id=bob.agent_id)
        v = await bob.validate_triple(subject="soil", predicate="holds", object="water")
        rec = await alice.get_record(k)
        assert rec["content"] == {"content": "soil holds water", "tags": ["soil"]}
        assert rec["budget"]["cost"] == 33_000 and rec["author"] == alice.agent_id
        g = await steward.allocate_budget(alice.agent_id, 12.5)  # a float crosses the wire
        assert isinstance(g, AllocationResult) and g.claimed
        assert (g.requested_ru, g.granted_ru) == (12.5, 12.5) and g.grant.startswith("gr")
        alloc = await steward.get_record(g.allocation)
        assert alloc["content"]["amount_ru"] == 12.5
        st = await alice.budget_status()
        assert st.used_mru == 33_000 + 10_000 + 3_000 + 100 + 5_000
        assert st.remaining_mru == 100_000 - st.used_mru + 12_500
        assert (await bob.budget_status()).used_mru == 3_000 + 2_000
        assert await alice.call("budget", "budget_status") == st  # call() is the same path
        cluster.acked += [k, t, e, u, c, v, g.allocation]


async def test_insufficient_ru_crosses_the_wire_exactly(cluster):
    async with cluster.connect(1) as a:
        for i in range(3):
            cluster.acked.append(await a.add_knowledge(f"fact {i}"))
        st = await a.budget_status()
        with pytest.raises(InsufficientRU) as ei:
            await a.add_knowledge("one too many")
        e = ei.value
        assert (
            str(e)
            == f"E_INSUFFICIENT_RU: need 33.00 RU, have 1.00 RU. Budget resets at {st.resets_at}"
        )
        assert (e.code, e.need, e.have, e.need_mru, e.have_mru) == (
            "E_INSUFFICIENT_RU",
            33.0,
            1.0,
            33_000,
            1_000,
        )
        assert e.resets_at == st.resets_at and 0 < e.retry_after_s <= 86_400
        assert isinstance(e, BudgetError)
        assert await a.budget_status() == st  # the refusal wrote nothing


async def test_wrong_token_is_refused_and_the_socket_closed(cluster):
    with pytest.raises(NotAuthorized):
        async with AgentClient.connect(cluster.url(), token="not-the-token"):
            pass
    with pytest.raises(NotAuthorized):  # another node's token is wrong here too
        async with AgentClient.connect(cluster.url(0), token=cluster.token(1)):
            pass
    async with open_websocket_url(cluster.url()) as ws:
        await ws.send_message(pack({"id": 1, "t": "hello", "token": "x" * 43, "agent": None}))
        reply = unpack(await ws.get_message())
        assert reply["id"] == 1 and reply["error"]["code"] == "E_NOT_AUTHORIZED"
        with pytest.raises(ConnectionClosed) as ei:
            await ws.get_message()
        assert ei.value.reason.code == 1008
    async with open_websocket_url(cluster.url()) as ws:  # a call before hello: same refusal
        await ws.send_message(
            pack({"id": 7, "t": "call", "zome": "budget", "fn": "budget_status", "payload": {}})
        )
        assert unpack(await ws.get_message())["error"]["code"] == "E_NOT_AUTHORIZED"
        with pytest.raises(ConnectionClosed):
            await ws.get_message()


async def test_unknown_functions_and_bad_payloads_get_clear_errors(cluster):
    async with cluster.connect() as a:
        with pytest.raises(UnknownFunction, match="no function memory.nope"):
            await a.call("memory", "nope", {})
        with pytest.raises(InvalidInput, match="payload must be a map"):
            await a.call("memory", "transmit_understanding", ["not", "a", "map"])
        with pytest.raises(InvalidInput, match="missing"):
            await a.call("memory", "transmit_understanding", {"subject": "s"})
        with pytest.raises(NotAuthorized, match="only a steward"):
            await a.allocate_budget(a.agent_id, 5)
        with pytest.raises(TooLarge):
            await a.add_knowledge("x" * (1 << 20))  # refused before it is sent
        assert (await a.budget_status()).used_mru == 0
    async with open_websocket_url(cluster.url()) as ws:
        await ws.send_message(
            pack({"id": 1, "t": "hello", "token": cluster.token(), "agent": "new"})
        )
        assert unpack(await ws.get_message())["result"]["agent_id"].startswith("ag")
        for raw, code in [
            (b"\xff\x00", "E_MALFORMED"),  # not CBOR
            (encode({"id": 2, "t": "call"}) + b"\x00", "E_MALFORMED"),  # trailing
            (bytes.fromhex("a1626964f93c00"), "E_MALFORMED"),  # a float id
            (pack({"t": "call"}), "E_MALFORMED"),  # no id
            (pack({"id": 3, "t": "dance"}), "E_MALFORMED"),
            (
                pack(
                    {
                        "id": 4,
                        "t": "call",
                        "zome": "budget",
                        "fn": "budget_status",
                        "payload": {"$": "nope", "v": 1},
                    }
                ),
                "E_MALFORMED",
            ),
        ]:
            await ws.send_message(raw)
            reply = unpack(await ws.get_message())
            assert reply["error"]["code"] == code, (raw, reply)
        await ws.send_message("a text frame")
        assert unpack(await ws.get_message())["error"]["code"] == "E_MALFORMED"
        await ws.send_message(
            pack({"id": 9, "t": "call", "zome": "budget", "fn": "budget_status", "payload": {}})
        )  # the socket still serves
        assert unpack(await ws.get_message())["id"] == 9


async def test_fifty_concurrent_clients_on_one_agent_never_over_spend(cluster):
    async with cluster.connect(2) as owner:
        agent = owner.agent_id
    ok, refused = [], []

    async def client():
        async with cluster.connect(2, agent=agent) as me:
            try:
                ok.append(await me.add_knowledge("race"))
            except InsufficientRU as e:
                refused.append(e)

    with trio.fail_after(40):
        async with trio.open_nursery() as n:
            for _ in range(50):
                n.start_soon(client)
    assert len(ok) + len(refused) == 50
    assert len(ok) * 33 <= 100 and len(ok) == 3
    async with cluster.connect(2, agent=agent) as me:
        st = await me.budget_status()
        assert st.used_mru == 33_000 * len(ok) and st.remaining_mru == 100_000 - st.used_mru
        seqs = sorted([(await me.get_record(h))["seq"] for h in ok])
        assert seqs == [1, 2, 3]
    cluster.acked += ok


async def test_a_client_disconnecting_mid_call_loses_nothing_acknowledged(cluster):
    async with cluster.connect() as a:
        agent = a.agent_id
    k = 10  # at most the calls a connection may have in flight: the node starts them all
    with trio.fail_after(20):
        async with open_websocket_url(cluster.url()) as ws:
            await ws.send_message(
                pack({"id": 0, "t": "hello", "token": cluster.token(), "agent": agent})
            )
            assert unpack(await ws.get_message())["result"]["agent_id"] == agent
            for i in range(1, k + 1):
                await ws.send_message(
                    pack(
                        {
                            "id": i,
                            "t": "call",
                            "zome": "memory",
                            "fn": "transmit_understanding",
                            "payload": {"subject": f"gone{i}", "predicate": "p", "object": "o"},
                        }
                    )
                )
            first = unpack(await ws.get_message())
            # leaving closes the socket with the other replies unread
        acked = first["result"]
        async with cluster.connect(agent=agent) as again:
            async for ev in again.subscribe():  # the node finishes what it started
                if ev["type"] == "budget" and ev["seq"] == k:
                    break
            st = await again.budget_status()
            rec = await again.get_record(acked)
            mine = [
                r for r in await again.recall_understandings(limit=1000) if r["author"] == agent
            ]
    assert rec["author"] == agent and rec["content"]["subject"].startswith("gone")
    assert st.used_mru == 3_000 * k and len(mine) == k  # each committed whole, once
    cluster.acked.append(acked)


async def test_subscribe_receives_budget_changes(cluster):
    async with cluster.connect(1) as a:
        with trio.fail_after(15):
            events = a.subscribe()
            ev = await events.__anext__()
            assert ev["type"] == "budget" and ev["agent_id"] == a.agent_id
            assert ev["remaining_ru"] == 100.0 and ev["seq"] == 0
            h = await a.validate_triple("a", "b", "c")
            while True:
                ev = await events.__anext__()
                if ev["type"] == "budget":
                    break
            assert (ev["remaining_ru"], ev["used_ru"], ev["seq"]) == (98.0, 2.0, 1)
            assert isinstance(ev["resets_at"], int)
            await events.aclose()
        cluster.acked.append(h)


async def test_metrics_are_scraped_and_match_the_budgets(cluster):
    agents = {}
    async with cluster.connect(0) as a:
        await a.add_knowledge("metered")
        with pytest.raises(UnknownFunction):
            await a.call("rose_forest", "nope", {})
        async with NodeClient.connect(cluster.url(0), token=cluster.token(0)) as node:
            for row in (await node.status())["agents"]:
                agents[row["agent_id"]] = row
        m = await scrape(cluster.nodes[0]["metrics_url"])
    assert agents[a.agent_id]["remaining_ru"] == 67.0
    for agent_id, row in agents.items():
        lab = (("agent", agent_id),)
        assert m[("budgetnode_ru_remaining", lab)] == row["remaining_ru"]
        assert m[("budgetnode_ru_used", lab)] == row["used_ru"]
        assert m[("budgetnode_ru_resets_at_seconds", lab)] == row["resets_at"]
    assert m[("budgetnode_agents", ())] == len(agents)
    assert m[("budgetnode_agents_ru_remaining", ())] == sum(
        r["remaining_ru"] for r in agents.values()
    )
    assert m[("budgetnode_refusals_total", (("code", "E_UNKNOWN_FUNCTION"),))] >= 1
    assert m[("budgetnode_refusals_total", (("code", "E_NOT_AUTHORIZED"),))] >= 1
    for name in (
        "ops_published",
        "ops_validated",
        "ops_rejected",
        "receipts",
        "gossip_rounds",
        "gossip_lag_ops",
        "warrants_issued",
    ):
        assert m[(f"budgetnode_{name}_total", ())] >= 0
    assert m[("budgetnode_peers", ())] == 2
    for name in ("limbo", "unpublished", "warrants", "app_connections"):
        assert m[(f"budgetnode_{name}", ())] >= 0
    assert m[("budgetnode_app_calls_total", ())] >= 1
    m2 = await scrape(cluster.nodes[2]["metrics_url"])
    assert m2[("budgetnode_refusals_total", (("code", "E_INSUFFICIENT_RU"),))] >= 47


async def test_cli_call_and_status_against_a_running_node(cluster):
    url, token = cluster.url(1), cluster.token(1)
    agent = json.loads((await bn("new-agent", "--url", url, "--token", token, "--json")).stdout)
    agent = agent["agent_id"]
    h = json.loads(
        (
            await bn(
                "call",
                "--url",
                url,
                "--token",
                token,
                "--agent",
                agent,
                "rose_forest",
                "add_knowledge",
                '{"content": "via cli"}',
                "--json",
            )
        ).stdout
    )
    assert h.startswith("ac")
    cluster.acked.append(h)
    env = {"BUDGETNODE_TOKEN": token}
    st = json.loads(
        (
            await bn(
                "call", "--url", url, "--agent", agent, "budget", "budget_status", "--json", env=env
            )
        ).stdout
    )
    assert st["remaining_ru"] == 67.0
    for _ in range(2):
        await bn(
            "call",
            "--url",
            url,
            "--agent",
            agent,
            "rose_forest",
            "add_knowledge",
            '{"content": "more"}',
            env=env,
        )
    p = await bn(
        "call",
        "--url",
        url,
        "--agent",
        agent,
        "rose_forest",
        "add_knowledge",
        '{"content": "too much"}',
        env=env,
        check=False,
    )
    assert p.returncode == 1 and p.stdout == ""
    assert re.fullmatch(
        r"E_INSUFFICIENT_RU: need 33\.00 RU, have 1\.00 RU\. Budget resets at \d+\n", p.stderr
    )
    p = await bn("status", "--url", url, "--token", "wrong", check=False)
    assert p.returncode == 1 and "E_NOT_AUTHORIZED" in p.stderr
    status = json.loads((await bn("status", "--url", url, "--json", env=env)).stdout)
    me = next(a for a in status["agents"] if a["agent_id"] == agent)
    assert (me["remaining_ru"], me["used_ru"], me["seq"]) == (1.0, 99.0, 3)
    assert len(status["peers"]) == 2 and status["warrants"] == []
    assert set(status["ops_pending"]) == {"unpublished", "limbo"}
    table = (await bn("status", "--url", url, env=env)).stdout
    assert agent in table and "1.00" in table and "peers 2" in table and "ops pending" in table


async def test_in_process_app_server_pushes_warrants_and_counts_refusals():
    """An AppServer over an in-process cluster (memory transport): a rogue node's agent
    over-spends, validators warrant it, and the subscriber on another node is told."""
    from node.app.server import AppServer
    from node.local_node import refusals
    from node.sdk import LocalCluster

    async with LocalCluster.open(
        n=3, transport="memory", rogue=(2,), gossip_interval=0.2, publish_interval=0.2
    ) as c:
        async with trio.open_nursery() as n:
            server = await n.start(AppServer(c.nodes[0]).serve, "127.0.0.1", 0)
            async with NodeClient.connect(server.app_url, token=server.token) as op:
                events = op.subscribe()
                mallory = await c.nodes[2].new_agent()
                with trio.fail_after(20):
                    for i in range(4):  # the rogue node lets the 4th through
                        await mallory.add_knowledge(f"m{i}")
                    async for ev in events:
                        if ev["type"] == "warrant":
                            break
                assert ev["agent_id"] == mallory.agent_id and ev["reason"] == "over_spend"
                st = await op.status()
                assert {w["agent_id"] for w in st["warrants"]} == {mallory.agent_id}
            alice = await c.nodes[0].new_agent()
            with pytest.raises(UnknownFunction):
                await alice.call("rose_forest", "nope", {})
            assert refusals(c.nodes[0])["E_UNKNOWN_FUNCTION"] == 1
            m = await scrape(server.metrics_url)
            assert m[("budgetnode_warrants", ())] >= 1
            assert m[("budgetnode_refusals_total", (("code", "E_UNKNOWN_FUNCTION"),))] == 1
            n.cancel_scope.cancel()
