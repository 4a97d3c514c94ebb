"""/metrics has bounded label cardinality by default: budgets aggregated over the node's agents,
no agent id on the page, and the same series at 5 agents as at 60; per-agent series only with
the option (`AppServer(per_agent_metrics=True)`, `budgetnode up --metrics-per-agent`)."""

import trio

from node.app.server import AppServer
from node.sdk import LocalNode

from test_app import scrape


async def _scrape_with(node, **kw):
    async with trio.open_nursery() as n:
        server = await n.start(AppServer(node, **kw).serve, "127.0.0.1", 0)
        m = await scrape(server.metrics_url)
        n.cancel_scope.cancel()
    return m


async def test_metrics_aggregate_budgets_and_name_no_agent_by_default(tmp_path, clock):
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        agents = [await node.new_agent() for _ in range(4)]
        await agents[0].add_knowledge("spends 33 RU")
        few = await _scrape_with(node)
        for _ in range(55):
            await node.new_agent()
        many = await _scrape_with(node)
    assert set(few) == set(many)  # the same series whatever the number of agents
    assert not any("agent" in dict(labels) for _, labels in many)
    assert not any(a.agent_id in str(key) for key in many for a in agents)
    assert few[("budgetnode_agents", ())] == 5  # the steward too
    # the steward and 3 agents hold 100 RU each, one agent 67
    assert few[("budgetnode_agents_ru_remaining", ())] == 467.0
    assert few[("budgetnode_agents_ru_used", ())] == 33.0
    bucket = {
        le: few[("budgetnode_agent_ru_remaining_bucket", (("le", le),))]
        for le in ("0", "33", "100", "+Inf")
    }
    assert bucket == {"0": 0, "33": 0, "100": 5, "+Inf": 5}
    assert many[("budgetnode_agent_ru_remaining_count", ())] == 60


async def test_per_agent_series_only_when_asked_for(tmp_path, clock):
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        await alice.add_knowledge("spends 33 RU")
        m = await _scrape_with(node, per_agent_metrics=True)
    assert m[("budgetnode_ru_remaining", (("agent", alice.agent_id),))] == 67.0
    assert m[("budgetnode_ru_used", (("agent", alice.agent_id),))] == 33.0
    assert m[("budgetnode_agents_ru_remaining", ())] == 167.0
