"""A node's metrics in the Prometheus text format (prometheus_client's exposition), computed
from the node's own state at each scrape: nothing is sampled in the background.

Label cardinality is bounded by default: budgets are aggregated over the node's agents (sums and
a histogram of remaining RU with fixed buckets), so the page stays the same size at 10 or
100,000 agents and names no agent. Per-agent series (`ru_remaining{agent}`, …) are exported
only when asked for (`per_agent`, `budgetnode up --metrics-per-agent`)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..agent_api import refusals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
P = "budgetnode_"
# upper bounds (RU) of the remaining-budget histogram's buckets: spent, nearly spent, … full
RU_BUCKETS = (0, 1, 10, 33, 100, 200)

# NetNode.metrics keys that get their own help text; every other key is exported too.
_HELP = {
    "ops_published": "actions sent to authorities (one per authority)",
    "ops_received": "actions received from peers",
    "ops_validated": "others' actions validated and stored",
    "ops_rejected": "others' actions found invalid",
    "receipts": "valid receipts received for this node's actions",
    "gossip_rounds": "gossip rounds completed",
    "gossip_lag_ops": "actions this node lacked when gossip compared heads (lag seen)",
    "warrants_issued": "warrants this node issued",
    "warrants_received": "warrants received and believed",
    "warrants_refused": "warrants received and not believed",
}


# Names this collector exports itself; a node counter by one of these names is not re-exported.
_OWN = {
    "ru_used",
    "ru_remaining",
    "ru_resets_at_seconds",
    "agents",
    "agents_ru_used",
    "agents_ru_remaining",
    "agent_ru_remaining",
    "refusals",
    "peers",
    "limbo",
    "unpublished",
    "warrants",
    "warranted_agents",
    "app_connections",
    "app_calls_in_flight",
    "app_calls",
    "app_subscribers",
    "app_events_queued",
    "app_events_dropped",
    "ru_base",
    "ru_cap",
    "window_seconds",
    "max_grants_per_window",
    "ru_spent",
    "deferred",
    "deferral_overflows",
    "deferred_run",
    "deferred_refused",
    "admission_refusals",
    "audit_log_events",
}


class NodeCollector:
    def __init__(self, node, server=None, per_agent: bool = False):
        self.node = node
        self.server = server
        self.per_agent = per_agent

    def collect(self):
        node = self.node
        statuses = [(c.agent_id, c.budget_status()) for c in list(node.cells.values())]
        yield GaugeMetricFamily(
            P + "agents_ru_used",
            "RU used by all local agents in their current windows",
            value=sum(st.used_mru for _, st in statuses) / 1000,
        )
        yield GaugeMetricFamily(
            P + "agents_ru_remaining",
            "RU left to all local agents in their current windows",
            value=sum(st.remaining_mru for _, st in statuses) / 1000,
        )
        counts = [0] * len(RU_BUCKETS)
        for _, st in statuses:
            for i, bound in enumerate(RU_BUCKETS):
                if st.remaining_mru <= bound * 1000:
                    counts[i] += 1
        yield HistogramMetricFamily(
            P + "agent_ru_remaining",
            "local agents by RU remaining in their current window",
            buckets=[(str(b), n) for b, n in zip(RU_BUCKETS, counts)] + [("+Inf", len(statuses))],
            sum_value=sum(st.remaining_mru for _, st in statuses) / 1000,
        )
        if self.per_agent:
            yield from _per_agent(statuses)
        yield GaugeMetricFamily(P + "agents", "agents hosted by this node", value=len(node.cells))

        ref = CounterMetricFamily(P + "refusals", "calls refused, by error code", labels=["code"])
        for code, n in sorted(refusals(node).items()):
            ref.add_metric([code], n)
        yield ref

        yield from _admission(node)

        counters = getattr(node, "metrics", None)
        if counters is not None:
            for key in sorted(set(counters) | set(_HELP)):
                name = re.sub(r"[^a-zA-Z0-9_]", "_", str(key)).removesuffix("_total")
                if name in _OWN:
                    continue
                yield CounterMetricFamily(
                    P + name, _HELP.get(key, key.replace("_", " ")), value=counters.get(key, 0)
                )
            yield GaugeMetricFamily(P + "peers", "peers known", value=len(node.peers))
            yield GaugeMetricFamily(
                P + "limbo", "received actions waiting for a dependency", value=len(node.limbo)
            )
            yield GaugeMetricFamily(
                P + "unpublished",
                "own actions not yet held by enough authorities",
                value=len(node.dht.unpublished(1 << 20)),
            )
            yield GaugeMetricFamily(
                P + "warrants", "warrants held", value=len(node.warrants_by_hash)
            )
            yield GaugeMetricFamily(
                P + "warranted_agents", "agents (and peers) warranted", value=len(node.warranted)
            )

        s = self.server
        if s is not None:
            yield GaugeMetricFamily(
                P + "app_connections", "open app-socket connections", value=s.connections
            )
            yield GaugeMetricFamily(
                P + "app_calls_in_flight", "calls being served", value=s.calls_in_flight
            )
            yield CounterMetricFamily(
                P + "app_calls", "calls served over the app socket", value=s.calls_total
            )
            yield GaugeMetricFamily(
                P + "app_subscribers", "subscriptions open", value=len(s.hub.subscribers)
            )
            yield GaugeMetricFamily(
                P + "app_events_queued", "subscription events queued", value=s.hub.queued()
            )
            yield CounterMetricFamily(
                P + "app_events_dropped",
                "subscription events dropped (slow consumers; oldest first)",
                value=s.hub.dropped_total(),
            )


def _admission(node):
    """The limits, use against them by operation, the deferral queue, refusals by code and
    operation, the audit log (node/admission.py; seed 004's observability requirements)."""
    dna, adm = node.dna, node.admissions
    yield GaugeMetricFamily(P + "ru_base", "RU each agent gets a window", value=dna.base_mru / 1000)
    yield GaugeMetricFamily(
        P + "ru_cap", "RU an agent may hold with grants", value=dna.cap_mru / 1000
    )
    yield GaugeMetricFamily(
        P + "window_seconds", "how long a budget window lasts", value=dna.window_s
    )
    yield GaugeMetricFamily(
        P + "max_grants_per_window",
        "grants one agent may claim in a window (0: no limit)",
        value=dna.max_grants_per_window or 0,
    )
    spent = CounterMetricFamily(
        P + "ru_spent", "RU the node's agents spent, by operation (zome.fn)", labels=["op"]
    )
    for op, mru in sorted(adm.spent.items()):
        spent.add_metric([op], mru / 1000)
    yield spent
    yield GaugeMetricFamily(P + "deferred", "writes queued for their window", value=len(adm.queue))
    yield CounterMetricFamily(
        P + "deferral_overflows",
        "writes refused E_DEFER_QUEUE_FULL (the queue was full)",
        value=adm.queue.overflows,
    )
    yield CounterMetricFamily(P + "deferred_run", "queued writes that ran", value=adm.deferred_run)
    yield CounterMetricFamily(
        P + "deferred_refused",
        "queued writes refused when they ran (dropped)",
        value=adm.deferred_refused,
    )
    ref = CounterMetricFamily(
        P + "admission_refusals",
        "calls refused, by code and operation (zome.fn; other: not a known function)",
        labels=["code", "op"],
    )
    for (code, op), n in sorted(adm.refused.items()):
        ref.add_metric([code, op], n)
    yield ref
    yield GaugeMetricFamily(
        P + "audit_log_events", "events kept in the audit log", value=len(adm.audit)
    )


def _per_agent(statuses):
    used = GaugeMetricFamily(P + "ru_used", "RU used in the current window", labels=["agent"])
    rem = GaugeMetricFamily(
        P + "ru_remaining", "RU remaining in the current window", labels=["agent"]
    )
    resets = GaugeMetricFamily(
        P + "ru_resets_at_seconds",
        "when the agent's window resets (unix seconds)",
        labels=["agent"],
    )
    for agent_id, st in statuses:
        used.add_metric([agent_id], st.used_mru / 1000)
        rem.add_metric([agent_id], st.remaining_mru / 1000)
        resets.add_metric([agent_id], st.resets_at)
    yield used
    yield rem
    yield resets


def registry_for(node, server=None, per_agent: bool = False) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(node, server, per_agent))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
