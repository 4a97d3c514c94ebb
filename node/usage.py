"""What an agent used, derived from its own chain (`agent.usage`, docs/SDK.md "Metering"): one
row per resource of each write (paid by a budget, or RU from the allowance) and of each
settled hold. Nothing is stored beside the chain: its signed actions are the record, so the
rows are append-only and every node holding the chain derives the same ones.
"""

from __future__ import annotations

from collections.abc import Iterator

from .core import ledger as L
from .core.action import Signed
from .core.app import App
from .core.crypto import to_text
from .core.dna import Dna
from .core.money import MRU_PER_RU

PAGE = 256  # actions read from the store at a time, walking back from the head


def write_cost(s: Signed, dna: Dna) -> L.Amounts:
    """What the (valid) write `s` cost: its RU and any other resource its op costs (all of it
    paid by a budget; validation lets the allowance pay only ops that cost nothing else)."""
    a = s.action
    count = a["count"] if a["type"] == "charge" else 1
    return L.write_cost(a["budget"]["cost"], a["budget"]["op"], count, dna)


def rows_of(s: Signed, dna: Dna, app: App) -> list[dict]:
    """The usage rows of one valid action: a write (op: "zome.fn"; budget: the one that paid,
    None for the allowance) or a settle (op: "spend:<task_id>" when the amounts were used up,
    "pay:<task_id>" when they were paid to another agent); none for anything else."""
    a = s.action
    if a["type"] in ("create", "charge"):
        rec = a["budget"]
        used, bid, op = write_cost(s, dna), rec.get("pay"), app.op_name(rec["op"])
    elif a["type"] == "ledger" and a["ledger"]["kind"] == "settle":
        v = a["ledger"]
        how = "spend" if v.get("to") is None else "pay"
        used, bid, op = v["amounts"], v["budget"], f"{how}:{v['task_id']}"
    else:
        return []
    return [
        {
            "resource": k,
            "amount_used": x / MRU_PER_RU if k == "ru" else x,
            "op": op,
            "timestamp": a["ts"] // 1_000_000,
            "hash": to_text("action", s.hash),
            "budget": None if bid is None else to_text("budget", bid),
        }
        for k, x in sorted(used.items())
        if x
    ]


def usage(
    store,
    author: bytes,
    head: int,
    dna: Dna,
    app: App,
    budget: bytes | None,
    since: int | None,
    limit: int,
) -> list[dict]:
    """The newest `limit` rows of `author`'s chain up to seq `head`, oldest first: only those
    of `budget` if given, only those at or after `since` (unix s) if given. The walk stops at
    the first action before `since` (a chain's timestamps never go back)."""
    bid = None if budget is None else to_text("budget", budget)
    out: list[dict] = []
    for s in _newest_first(store, author, head):
        if since is not None and s.action["ts"] < since * 1_000_000:
            break
        out.extend(r for r in reversed(rows_of(s, dna, app)) if bid is None or r["budget"] == bid)
        if len(out) >= limit:
            break
    return out[:limit][::-1]


def _newest_first(store, author: bytes, head: int) -> Iterator[Signed]:
    hi = head
    while hi >= 0:
        lo = max(-1, hi - PAGE)
        yield from reversed(store.chain(author, lo, hi - lo))
        hi = lo
