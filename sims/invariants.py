"""Invariant checks the simulator runs while the network misbehaves.

`audit_chain` re-derives an author's budget from its signed actions with its own integer
arithmetic — deliberately not node.core.validate — so a bug shared by the author's node and
the validators cannot hide: over-spends, forged or wrong BudgetStates, grants above the cap and
spend above 100 RU + claimed grants per window are all reported.
"""

from __future__ import annotations

from node.core.crypto import to_text, verify
from node.core.dna import Dna

from zomes import APP


class Budget:
    """An independent replay of one chain's budget."""

    __slots__ = ("ws", "rem", "spent", "granted")

    def __init__(self, genesis_ts: int, dna: Dna):
        self.ws, self.rem, self.spent, self.granted = genesis_ts, dna.base_mru, 0, 0

    def roll(self, ts: int, dna: Dna) -> None:
        if ts >= self.ws + dna.window_s * 1_000_000:
            self.ws, self.rem, self.spent, self.granted = ts, dna.base_mru, 0, 0


def audit_chain(actions, dna: Dna, check_sigs: bool = False) -> tuple[list[str], Budget | None]:
    """Problems found in a chain (list of Signed from genesis), and the budget after it."""
    if not actions:
        return [], None
    who = to_text("agent", actions[0].author)[:14]
    g = actions[0].action
    if g.get("type") != "genesis" or g.get("seq") != 0:
        return [f"{who}: chain does not start at a genesis"], None
    b = Budget(g["ts"], dna)
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
        b.roll(a["ts"], dna)
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
            if typ == "create":
                edef = APP.entry_def(a.get("entry_type"))
                op = edef.op if edef else None
                cost = dna.costs.get(op, -1) if op is not None else -1
            elif typ == "charge":
                op = rec.get("op")
                cost = (dna.costs.get(op, -1) if isinstance(op, str) else -1) * a.get("count", 0)
            else:
                problems.append(f"{where}: unknown action type {typ!r}")
                break
            if rec.get("op") != op or rec.get("cost") != cost:
                problems.append(
                    f"{where}: recorded cost {rec.get('cost')} for {rec.get('op')}, "
                    f"the DNA says {cost} for {op}"
                )
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
