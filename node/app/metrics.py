"""A node's metrics in the Prometheus text format (prometheus_client's exposition), computed
from the node's own state at each scrape: nothing is sampled in the background."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..agent_api import refusals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
P = "budgetnode_"

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
}


class NodeCollector:
    def __init__(self, node, server=None):
        self.node = node
        self.server = server

    def collect(self):
        node = self.node
        used = GaugeMetricFamily(P + "ru_used", "RU used in the current window", labels=["agent"])
        rem = GaugeMetricFamily(
            P + "ru_remaining", "RU remaining in the current window", labels=["agent"]
        )
        resets = GaugeMetricFamily(
            P + "ru_resets_at_seconds",
            "when the agent's window resets (unix seconds)",
            labels=["agent"],
        )
        for cell in list(node.cells.values()):
            st = cell.budget_status()
            used.add_metric([cell.agent_id], st.used_mru / 1000)
            rem.add_metric([cell.agent_id], st.remaining_mru / 1000)
            resets.add_metric([cell.agent_id], st.resets_at)
        yield used
        yield rem
        yield resets
        yield GaugeMetricFamily(P + "agents", "agents hosted by this node", value=len(node.cells))

        ref = CounterMetricFamily(P + "refusals", "calls refused, by error code", labels=["code"])
        for code, n in sorted(refusals(node).items()):
            ref.add_metric([code], n)
        yield ref

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


def registry_for(node, server=None) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(node, server))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
