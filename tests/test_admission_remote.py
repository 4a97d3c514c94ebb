"""Admission over the app socket and the CLI: the same dry runs, deferrals, events, alerts and
audit log as in process."""

import json

import pytest
import trio

from node import cli
from node.app.client import NodeClient
from node.app.server import AppServer
from node.sdk import Admission, AgentClient, Deferred, InsufficientRU, LocalCluster, LocalNode

from conftest import START

DAY = 86_400


async def broke(agent):
    for _ in range(3):
        await agent.add_knowledge("a thought")  # 1 RU left


async def next_of(events, kind):
    with trio.fail_after(10):
        async for ev in events:
            if ev["type"] == kind:
                return ev
    raise AssertionError(f"no {kind} event")


async def test_check_defer_events_and_audit_over_the_app_socket(clock):
    async with LocalCluster.open(n=1, clock=lambda: clock[0], transport="memory") as c:
        node = c.nodes[0]
        async with trio.open_nursery() as n:
            server = await n.start(AppServer(node).serve, "127.0.0.1", 0)
            async with AgentClient.connect(server.app_url, token=server.token) as alice:
                events = alice.subscribe()
                assert (await events.__anext__())["type"] == "budget"  # subscribed now
                await alice.set_alert(remaining_ru=50)
                await broke(alice)
                low = await next_of(events, "low_budget")
                assert (low["have"], low["agent_id"]) == (34, alice.agent_id)
                adm = await alice.check("rose_forest", "add_knowledge", {"content": "x"})
                assert isinstance(adm, Admission)
                assert (adm.ok, adm.code, adm.need, adm.have) == (False, "E_INSUFFICIENT_RU", 33, 1)
                assert not await alice.has_budget("add_knowledge")
                d = await alice.add_knowledge("later", defer=True)
                assert isinstance(d, Deferred) and d.runs_at == START + DAY
                ev = await next_of(events, "deferred")
                assert (ev["id"], ev["need"], ev["have"], ev["code"]) == (
                    d.id,
                    33,
                    1,
                    "E_INSUFFICIENT_RU",
                )
                with pytest.raises(InsufficientRU):
                    await alice.add_knowledge("now")
                ref = await next_of(events, "refusal")
                assert (ref["code"], ref["op"], ref["resets_at"], ref["budget"]) == (
                    "E_INSUFFICIENT_RU",
                    "rose_forest.add_knowledge",
                    START + DAY,
                    None,
                )
                assert await alice.deferred() == [d]
                clock[0] = START + DAY
                await alice.budget_status()
                done = await next_of(events, "deferred_done")
                assert done["id"] == d.id and isinstance(done["hash"], str)
                async with NodeClient.connect(server.app_url, token=server.token) as op:
                    log = await op.audit(agent=alice.agent_id)
                    assert [e["type"] for e in log] == [
                        "low_budget",
                        "deferred",
                        "refusal",
                        "deferred_done",
                    ]
                    assert await op.audit(since=START + DAY) == log[-1:]
            n.cancel_scope.cancel()


async def test_the_cli_checks_defers_and_reads_the_audit_log(tmp_path, capsys):
    path = str(tmp_path / "n")
    async with LocalNode.open(path=path) as node:
        alice = await node.new_agent()
        await broke(alice)
    capsys.readouterr()
    call = ["call", "--path", path, "--agent", alice.agent_id, "rose_forest", "add_knowledge"]
    payload = json.dumps({"content": "c"})
    assert await trio.to_thread.run_sync(cli.main, [*call, payload, "--check"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["code"] == "E_INSUFFICIENT_RU"
    assert err.startswith("E_INSUFFICIENT_RU: need 33.00 RU, have 1.00 RU")
    assert await trio.to_thread.run_sync(cli.main, [*call, payload, "--defer", "--json"]) == 0
    deferred = json.loads(capsys.readouterr().out)
    assert deferred["op"] == "rose_forest.add_knowledge"
    assert await trio.to_thread.run_sync(cli.main, ["audit", "--path", path, "--json"]) == 0
    log = json.loads(capsys.readouterr().out)
    assert [(e["type"], e.get("id")) for e in log] == [("deferred", deferred["id"])]
    assert await trio.to_thread.run_sync(cli.main, ["audit", "--path", path]) == 0
    assert "deferred" in capsys.readouterr().out
