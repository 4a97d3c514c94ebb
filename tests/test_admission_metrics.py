"""/metrics shows admission: the limits, use by operation, the deferral queue, refusals by code
and operation, the audit log's size; and the Grafana dashboard in docs/ queries only names
the node exports."""

import json
import os
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.app.metrics import registry_for, render
from node.core.errors import DeferQueueFull, InsufficientRU, UnknownFunction
from node.sdk import LocalNode

DASHBOARD = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "grafana-admission.json"
)


def samples(node) -> dict:
    out = {}
    for fam in text_string_to_metric_families(render(registry_for(node)).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def busy_node(node):
    alice = await node.new_agent()
    for _ in range(3):
        await alice.add_knowledge("x")  # 99 RU on rose_forest.add_knowledge
    with pytest.raises(InsufficientRU):
        await alice.add_knowledge("y")
    node.admissions.queue.per_agent = 1
    await alice.add_knowledge("later", defer=True)
    with pytest.raises(DeferQueueFull):
        await alice.add_knowledge("later still", defer=True)
    return alice


async def test_admission_metrics_have_their_names_and_values(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        await busy_node(node)
        m = samples(node)
        assert m[("budgetnode_ru_base", ())] == 100
        assert m[("budgetnode_ru_cap", ())] == 200
        assert m[("budgetnode_max_grants_per_window", ())] == 3
        assert m[("budgetnode_ru_spent_total", (("op", "rose_forest.add_knowledge"),))] == 99
        assert m[("budgetnode_deferred", ())] == 1
        assert m[("budgetnode_deferral_overflows_total", ())] == 1
        refused = {k[1]: v for k, v in m.items() if k[0] == "budgetnode_admission_refusals_total"}
        assert refused == {
            (("code", "E_INSUFFICIENT_RU"), ("op", "rose_forest.add_knowledge")): 1,
            (("code", "E_DEFER_QUEUE_FULL"), ("op", "rose_forest.add_knowledge")): 1,
        }
        # refusal, deferred, refusal (queue full): the log keeps each
        assert m[("budgetnode_audit_log_events", ())] == 3 == len(node.admissions.audit)


async def test_a_made_up_function_is_labelled_other(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        for i in range(5):
            with pytest.raises(UnknownFunction):
                await alice.call("made", f"up{i}", {})
        assert dict(node.admissions.refused) == {("E_UNKNOWN_FUNCTION", "other"): 5}


def _queried_names(dashboard: dict) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return {n for e in exprs for n in re.findall(r"\bbudgetnode_[a-z_]+\b", e)}


def _dashboard() -> dict:
    with open(DASHBOARD) as f:
        return json.load(f)


async def test_the_grafana_dashboard_queries_only_exported_metrics(clock):
    dashboard = _dashboard()
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        await busy_node(node)
        exported = {name for name, _ in samples(node)}
    queried = _queried_names(dashboard)
    assert queried - exported == set()
    # and it shows every admission metric
    assert {
        "budgetnode_ru_base",
        "budgetnode_ru_cap",
        "budgetnode_ru_spent_total",
        "budgetnode_deferred",
        "budgetnode_deferral_overflows_total",
        "budgetnode_admission_refusals_total",
        "budgetnode_audit_log_events",
    } <= queried


async def test_a_long_made_up_name_is_kept_short_in_the_log(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        with pytest.raises(UnknownFunction):
            await alice.call("z" * 100_000, "f", {})
        with pytest.raises(UnknownFunction):
            await alice.call("admission", "y" * 100_000, {})
        ops = [e["op"] for e in node.admissions.audit.read()]
        assert len(ops) == 2 and all(len(op) <= 128 for op in ops)
