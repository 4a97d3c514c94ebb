"""`status` over the app socket answers for any number of agents: the node sends them a page at
a time (each reply bounded), the client gathers the pages, and `budgetnode status --url` shows
every agent (it failed with E_TOO_LARGE from ~714 agents when status was one message)."""

import json

import pytest
import trio

from node import cli
from node.app import server as server_mod
from node.app.client import NodeClient
from node.app.server import AppServer
from node.sdk import LocalNode

AGENTS = 760  # past the ~714 at which one status message exceeded the decoder's item bound


async def test_status_pages_cover_every_agent_over_the_socket_and_the_cli(tmp_path, clock, capsys):
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        ids = {node.steward.agent_id} | {(await node.new_agent()).agent_id for _ in range(AGENTS)}
        async with trio.open_nursery() as n:
            server = await n.start(AppServer(node).serve, "127.0.0.1", 0)
            async with NodeClient.connect(server.app_url, token=server.token) as op:
                pages = [p async for p in op.status_pages()]
                st = await op.status()
            assert len(pages) == -(-(AGENTS + 1) // server_mod.STATUS_PAGE) > 1
            assert all(len(p["agents"]) <= server_mod.STATUS_PAGE for p in pages)
            assert [a["agent_id"] for a in st["agents"]] == node.agents()
            assert st["agents_total"] == AGENTS + 1 and "next" not in st
            argv = ["status", "--url", server.app_url, "--token", server.token, "--json"]
            assert await trio.to_thread.run_sync(cli.main, argv) == 0
            shown = json.loads(capsys.readouterr().out)
            assert {a["agent_id"] for a in shown["agents"]} == ids
            n.cancel_scope.cancel()


async def test_a_status_page_starts_where_asked_and_refuses_a_bad_start(tmp_path, clock):
    from node.core.errors import InvalidInput

    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        for _ in range(3):
            await node.new_agent()
        async with trio.open_nursery() as n:
            server = await n.start(AppServer(node).serve, "127.0.0.1", 0)
            async with NodeClient.connect(server.app_url, token=server.token) as op:
                page = await op._session.request("status", **{"from": 2})
                assert [a["agent_id"] for a in page["agents"]] == node.agents()[2:]
                assert page["next"] is None
                for bad in (-1, "2", True):
                    with pytest.raises(InvalidInput):
                        await op._session.request("status", **{"from": bad})
            n.cancel_scope.cancel()
