"""The nemesis's checker, Jepsen-style: a history of what clients were told (each acknowledged
write: the hash the node returned, the node, the agent, when), then verdicts over what the
nodes hold once the faults have stopped and the network has had time to converge.

Pure: it reads the history and the observations the harness gathered (which node holds which
write, each node's warrants, each node's stored chains re-derived into BudgetStates) and judges.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from node.core import dht
from node.core.crypto import from_text

# a verdict fails when its figure is not this
VERDICTS = {
    "lost_writes": 0,
    "divergent_budgets": 0,
    "honest_warranted": 0,
    "overspent_agents": 0,
    "wrongly_refused": 0,
    "store_errors": 0,
    "crashes": 0,
    "converged": True,
}
MAX_DETAILS = 20  # examples of each failure kept in the report


@dataclass(frozen=True)
class Ack:
    """A write the client saw succeed."""

    hash: str  # the action hash the node returned
    node: int
    agent: str
    invoked: float  # seconds since the run began
    acked: float


@dataclass(frozen=True)
class Refusal:
    code: str
    node: int
    agent: str
    at: float


@dataclass
class History:
    acks: list[Ack] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    indeterminate: int = 0  # no answer (timeout, connection lost): may or may not have committed
    unavailable: int = 0  # the node could not be reached to try at all
    faults: Counter = field(default_factory=Counter)
    agents: dict[str, int] = field(default_factory=dict)  # every agent the run made -> its node
    crashes: list[dict] = field(default_factory=list)  # a node process that exited on its own


@dataclass(frozen=True)
class ChainView:
    """One node's stored view of one agent's chain, as the node re-derives it on open."""

    seq: int
    head: str
    window_start: int
    remaining_mru: int
    used_mru: int


def authorities(ack: Ack, node_ids: list[bytes], r: int = dht.DEFAULT_R) -> set[int]:
    """The nodes that must hold an acknowledged write: the authorities of its hash and of its
    author (who hold the chain), as every node computes them once it knows every other, and the
    node that wrote it."""
    index = {nid: i for i, nid in enumerate(node_ids)}
    out = {ack.node}
    for basis in (from_text("action", ack.hash), from_text("agent", ack.agent)):
        out.update(index[p] for p in dht.nearest(basis, node_ids, r))
    return out


def roles(ack: Ack, node_ids: list[bytes], r: int = dht.DEFAULT_R) -> dict[int, str]:
    """Why each node must hold the write: "writer", "key" (an authority of its author, holding
    the chain) or "hash" (an authority of its hash only)."""
    out = {i: "hash" for i in (authorities(ack, node_ids, r) - {ack.node})}
    for p in dht.nearest(from_text("agent", ack.agent), node_ids, r):
        out[node_ids.index(p)] = "key"
    out[ack.node] = "writer"
    return out


def slowest(
    history: History,
    node_ids: list[bytes],
    seen_at: dict[str, dict[int, float]],
    n: int = 10,
    r: int = dht.DEFAULT_R,
) -> list[dict]:
    """The `n` writes slowest to be seen everywhere they must be, with how long after the
    acknowledgement each node that must hold it was first seen holding it, and why it must."""
    rows = []
    for a in history.acks:
        seen = seen_at.get(a.hash, {})
        role = roles(a, node_ids, r)
        delays = {i: (seen[i] - a.acked if i in seen else None) for i in sorted(role)}
        worst = max((d for d in delays.values() if d is not None), default=0.0)
        if None in delays.values():
            worst = float("inf")
        rows.append((worst, a, delays, role))
    rows.sort(key=lambda x: -x[0])
    return [
        {
            "hash": a.hash,
            "writer": a.node,
            "acked_s": round(a.acked, 3),
            "late": {
                str(i): {"role": role[i], "after_s": None if d is None else round(d, 3)}
                for i, d in delays.items()
            },
        }
        for _, a, delays, role in rows[:n]
    ]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def judge(
    history: History,
    node_ids: list[bytes],
    held: dict[str, set[int]],
    visible_at: dict[str, float],
    warrants: dict[int, list[dict]],
    views: dict[int, dict[str, ChainView]],
    store_errors: dict[int, str],
    converged: bool,
    base_mru: int,
    write_mru: int,
    r: int = dht.DEFAULT_R,
) -> dict:
    """The report. `held`: hash -> nodes where the write was found at the end; `visible_at`:
    hash -> when it was first seen at every node that must hold it; `views`: node -> agent ->
    its stored chain (nodes stopped, stores read)."""
    lost = []
    for a in history.acks:
        missing = authorities(a, node_ids, r) - held.get(a.hash, set())
        if missing:
            lost.append(
                {"hash": a.hash, "agent": a.agent, "node": a.node, "missing_at": sorted(missing)}
            )

    ours = set(history.agents) | {a.agent for a in history.acks}
    index = {nid: i for i, nid in enumerate(node_ids)}
    divergent, overspent = [], []
    for agent in sorted(ours):
        must = {a.node for a in history.acks if a.agent == agent}
        if agent in history.agents:
            must.add(history.agents[agent])
        must |= {index[p] for p in dht.nearest(from_text("agent", agent), node_ids, r)}
        seen = {i: views.get(i, {}).get(agent) for i in sorted(must)}
        if len(set(seen.values())) != 1 or None in seen.values():
            divergent.append({"agent": agent, "views": {i: _show(v) for i, v in seen.items()}})
        acked_mru = write_mru * sum(1 for a in history.acks if a.agent == agent)
        used = max((v.used_mru for v in seen.values() if v is not None), default=0)
        if acked_mru > base_mru or used > base_mru:
            overspent.append({"agent": agent, "acked_mru": acked_mru, "used_mru": used})

    final_used = {
        agent: max((v[agent].used_mru for v in views.values() if agent in v), default=0)
        for agent in ours
    }
    wrongly = [
        {
            "agent": x.agent,
            "node": x.node,
            "at": round(x.at, 3),
            "final_used_mru": final_used[x.agent],
        }
        for x in history.refusals
        if x.code == "E_INSUFFICIENT_RU" and final_used[x.agent] + write_mru <= base_mru
    ]
    # every agent and node of the run is honest: any warrant at all is a wrong one
    honest = [{"node": i, **w} for i, ws in sorted(warrants.items()) for w in ws]
    lat = [visible_at[a.hash] - a.acked for a in history.acks if a.hash in visible_at]
    report = {
        "acked_writes": len(history.acks),
        "lost_writes": len(lost),
        "faults": dict(sorted(history.faults.items())),
        "converged": converged,
        "divergent_budgets": len(divergent),
        "visibility_p50_s": _round(percentile(lat, 0.5)),
        "visibility_p99_s": _round(percentile(lat, 0.99)),
        "visible_writes": len(lat),
        "honest_warranted": len(honest),
        "overspent_agents": len(overspent),
        "wrongly_refused": len(wrongly),
        "store_errors": len(store_errors),
        "crashes": len(history.crashes),
        "refused": dict(sorted(Counter(x.code for x in history.refusals).items())),
        "indeterminate_writes": history.indeterminate,
        "unavailable_writes": history.unavailable,
        "agents": len(ours),
        "details": {
            "lost": lost[:MAX_DETAILS],
            "divergent": divergent[:MAX_DETAILS],
            "warrants": honest[:MAX_DETAILS],
            "overspent": overspent[:MAX_DETAILS],
            "wrongly_refused": wrongly[:MAX_DETAILS],
            "store_errors": {str(i): e for i, e in sorted(store_errors.items())},
            "crashes": history.crashes[:MAX_DETAILS],
        },
    }
    report["failed"] = [k for k, want in VERDICTS.items() if report[k] != want]
    report["ok"] = not report["failed"]
    return report


def _show(v: ChainView | None):
    return None if v is None else v.__dict__


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
