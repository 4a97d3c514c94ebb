"""Invariant checks the simulator runs while the network misbehaves.

`audit_chain` re-derives an author's budget from its signed actions with its own integer
arithmetic — deliberately not node.core.validate — so a bug shared by the author's node and
the validators cannot hide: over-spends, forged or wrong BudgetStates, grants above the cap,
spend above 100 RU + claimed grants per window, windows opened without a steward's witness (or
before the last one ended) and uninvited geneses on an invite network are all reported. Ledger
actions (budgets as authorizers) cost the allowance nothing, and a write paid by a budget
(`pay`/`call` in its record) records the DNA's cost without charging the allowance: both must
leave the remaining allowance as it was. Whether the budget could pay is the ledger's question,
re-derived on its own in sims/ledger_audit.py.

`spending_bound` checks the issue-15 promise against real time, which no chain records: over any
stretch of an agent's actions, spend is at most the allowance of the windows that much real
time can hold, plus the grants claimed in them.
"""

from __future__ import annotations

from collections.abc import Callable

from node.core.action import Signed
from node.core.crypto import blake2b_256, to_text, verify
from node.core.dna import Dna
from node.core.encoding import encode
from node.core.witness import witness_body

from zomes import APP


class Budget:
    """An independent replay of one chain's budget."""

    __slots__ = ("ws", "rem", "spent", "granted")

    def __init__(self, genesis_ts: int, dna: Dna):
        self.ws, self.rem, self.spent, self.granted = genesis_ts, dna.base_mru, 0, 0

    def open(self, at: int, dna: Dna) -> None:
        self.ws, self.rem, self.spent, self.granted = at, dna.base_mru, 0, 0

    def roll(self, ts: int, dna: Dna) -> None:
        """The window a write at `ts` would see if a witness opened the next one when due (an
        author's preview; in a chain only a witness opens a window)."""
        if ts >= self.ws + dna.window_s * 1_000_000:
            self.open(ts, dna)


def _witness_problem(w, dna: Dna, author: bytes, prev: bytes | None, invite: bytes | None):
    """(the witness's time, None) or (None, what is wrong with it)."""
    if not isinstance(w, dict) or not isinstance(w.get("at"), int) or w.get("by") is None:
        return None, "malformed witness"
    if w["by"] not in dna.stewards:
        return None, "witness by a non-steward"
    body = witness_body(dna.hash, author, prev, w["at"], invite)
    if not isinstance(w.get("sig"), bytes) or not verify(w["by"], w["sig"], encode(body)):
        return None, "witness signature does not verify"
    return w["at"], None


def _genesis(g: dict, author: bytes, dna: Dna) -> tuple[int, str | None]:
    """(the first window's start, a problem or None): a witnessed genesis starts it at the
    witness's time; an invite must be a steward's, witnessed by that steward."""
    inv, w, ih = g.get("invite"), g.get("witness"), None
    if inv is not None:
        body = inv.get("body") if isinstance(inv, dict) else None
        steward = body.get("steward") if isinstance(body, dict) else None
        if steward not in dna.stewards or not verify(steward, inv.get("sig", b""), encode(body)):
            return g["ts"], "invite not signed by a steward"
        if not isinstance(w, dict) or w.get("by") != steward:
            return g["ts"], "invite not witnessed by its steward"
        ih = blake2b_256(encode(body))
    elif dna.membrane == "invite" and author not in dna.stewards:
        return g["ts"], "uninvited genesis on an invite network"
    if w is None:
        return g["ts"], None
    at, problem = _witness_problem(w, dna, author, None, ih)
    if problem or at is None:
        return g["ts"], f"genesis {problem}"
    return at, ("genesis stamped before its witness" if g["ts"] < at else None)


def _cost(a: dict, rec: dict, dna: Dna) -> tuple[str | None, int] | None:
    """(op, the DNA's cost) of a create or charge, ("ledger", 0) for a ledger action (an
    endorsement: its stake); None for another type."""
    typ = a.get("type")
    if typ == "ledger":
        # an endorsement's stake is a real spend from the allowance (issue 18)
        v = a.get("ledger")
        stake = v.get("stake") if isinstance(v, dict) and v.get("kind") == "endorse" else 0
        return "ledger", stake if type(stake) is int else -1
    if typ == "create":
        et = a.get("entry_type")
        edef = APP.entry_def(et) if isinstance(et, str) else None
        op = edef.op if edef else None
        return op, dna.costs.get(op, -1) if op is not None else -1
    if typ == "charge":
        op = rec.get("op")
        return op, (dna.costs.get(op, -1) if isinstance(op, str) else -1) * a.get("count", 0)
    return None


def audit_chain(actions, dna: Dna, check_sigs: bool = False) -> tuple[list[str], Budget | None]:
    """Problems found in a chain (list of Signed from genesis), and the budget after it."""
    if not actions:
        return [], None
    who = to_text("agent", actions[0].author)[:14]
    g = actions[0].action
    if g.get("type") != "genesis" or g.get("seq") != 0:
        return [f"{who}: chain does not start at a genesis"], None
    ws, problem = _genesis(g, actions[0].author, dna)
    if problem:
        return [f"{who}: {problem}"], None
    b = Budget(ws, dna)
    prev = actions[0]
    problems = []
    for s in actions[1:]:
        a = s.action
        seq = a.get("seq")
        where = f"{who} seq {seq}"
        if seq != prev.seq + 1 or a.get("prev") != prev.hash or a.get("author") != prev.author:
            problems.append(f"{where}: broken chain link")
            break
        if a["ts"] < prev.action["ts"]:
            problems.append(f"{where}: timestamp goes backwards")
        if check_sigs and not verify(s.author, s.sig, s.body):
            problems.append(f"{where}: bad signature stored")
        rec = a.get("budget")
        if not isinstance(rec, dict):
            problems.append(f"{where}: no BudgetState")
            break
        if a.get("witness") is not None:
            at, problem = _witness_problem(a["witness"], dna, s.author, prev.hash, None)
            if problem is None and at is not None and at < b.ws + dna.window_s * 1_000_000:
                problem = "witnessed a new window before the last one ended"
            if problem is None and at is not None and a["ts"] < at:
                problem = "stamped before its witness"
            if problem or at is None:
                problems.append(f"{where}: {problem}")
                break
            b.open(at, dna)
        typ = a.get("type")
        if typ == "claim":
            amount = a["grant"]["amount"]
            after = min(b.rem + amount, max(dna.cap_mru, b.rem))
            if rec.get("granted") != after - b.rem:
                problems.append(
                    f"{where}: claim records {rec.get('granted')} mRU granted, "
                    f"the cap allows {after - b.rem}"
                )
            b.granted += after - b.rem
            b.rem = after
            cost = 0
        else:
            priced = _cost(a, rec, dna)
            if priced is None:
                problems.append(f"{where}: unknown action type {typ!r}")
                break
            op, cost = priced
            if rec.get("op") != op or rec.get("cost") != cost:
                problems.append(
                    f"{where}: recorded cost {rec.get('cost')} for {rec.get('op')}, "
                    f"the DNA says {cost} for {op}"
                )
            if "pay" in rec or "call" in rec:
                if typ not in ("create", "charge"):
                    problems.append(f"{where}: a {typ} action names a budget to pay for it")
                cost = 0  # a budget paid: the allowance is untouched
            b.rem -= cost
            b.spent += cost
            if b.rem < 0:
                problems.append(f"{where}: over-spend (remaining {b.rem / 1000:.2f} RU)")
        if rec.get("ws") != b.ws:
            problems.append(f"{where}: window start {rec.get('ws')} but re-derived {b.ws}")
        if rec.get("rem") != b.rem:
            problems.append(
                f"{where}: forged BudgetState: remaining {rec.get('rem')} mRU, re-derived {b.rem}"
            )
        if b.rem > dna.cap_mru:
            problems.append(f"{where}: remaining {b.rem / 1000:.2f} RU above the cap")
        if b.spent > dna.base_mru + b.granted:
            problems.append(
                f"{where}: spent {b.spent / 1000:.2f} RU in one window with only "
                f"{b.granted / 1000:.2f} RU granted"
            )
        if problems:
            break
        prev = s
    return problems, b


def spending_bound(
    actions: list[Signed], authored: Callable[[Signed], float | None], dna: Dna, skew_s: float
) -> list[str]:
    """For every stretch i..j of a chain's actions (from genesis): the spend (at the DNA's
    costs) is at most base x (floor((t_j - t_i + 2 skew) / window) + 2) plus the grants claimed
    in the windows the stretch's actions fall in, where t is an action's real authoring time
    (`authored`: seconds, None if unknown: the action is left out). Why that many windows: each
    window after the one action i is in opens with a witness asked for after i was written, and
    witnesses are a window apart on the steward's clock, so real time holds all but two of them
    (the first and, for a genesis window on the author's clock, one more). First problem only."""
    if len(actions) < 2:
        return []
    who = to_text("agent", actions[0].author)[:14]
    window_s = dna.window_s
    grants: dict[object, int] = {}  # window start -> granted in it
    items = []  # (t, spend, window start, seq)
    for s in actions[1:]:
        a = s.action
        rec = a.get("budget")
        if not isinstance(rec, dict):
            continue
        if a.get("type") == "claim":
            g = rec.get("granted")
            grants[rec.get("ws")] = grants.get(rec.get("ws"), 0) + (g if type(g) is int else 0)
        t = authored(s)
        if t is None:
            continue
        priced = _cost(a, rec, dna)
        paid = "pay" in rec  # paid by a budget, not from the allowance
        items.append((t, max(0, priced[1]) if priced and not paid else 0, rec.get("ws"), s.seq))
    for i, (ti, _, _, si) in enumerate(items):
        spend = granted = 0
        seen: set = set()
        for tj, cost, ws, sj in items[i:]:
            spend += cost
            if ws not in seen:
                seen.add(ws)
                granted += grants.get(ws, 0)
            allowed = dna.base_mru * (int((tj - ti + 2 * skew_s) // window_s) + 2) + granted
            if spend > allowed:
                return [
                    f"{who} seq {si}-{sj}: spent {spend / 1000:.2f} RU in {tj - ti:.3f} s of "
                    f"real time over {len(seen)} window(s); the bound is {allowed / 1000:.2f} RU"
                ]
    return []
