"""Adversarial nodes, for tests and the simulator only: each mode makes the author's node write
or publish something honest validators must reject, proving that they, not authors, enforce
budgets. Production code holds no way to cheat; it offers two neutral seams that this module
plugs into (`NetNode.open(cell_type=..., outgoing=...)`, which `LocalCluster.open(rogue=...)`,
`budgetnode up --rogue` and the simulator fill from `plug(modes)`):

- `RogueCell` (the cell factory): `skip_preflight` writes past the budget, `forge_budget` claims
  a full budget, `wrong_cost` records cost 0, `bad_signature` corrupts its signatures. A rogue
  cell cheats on budgets only, never on grants, and keeps its own state without validating it.
- `fork_outgoing` (the outgoing-batch hook): every other target of each own create action gets
  a twin instead (same seq, same entry, stamped 1 µs later, signed by the author), so two
  valid-looking histories split the authorities. The twins are kept in `node.rogue_twins`
  (original hash -> twin) for the simulator's accounting.
"""

from __future__ import annotations

from typing import Any

from node.cell import Cell
from node.core import budget
from node.core.action import Signed, grant_hash
from node.core.validate import ChainState
from node.net.rogue import CELL_MODES, NODE_MODES


class RogueCell(Cell):
    modes: frozenset = frozenset()

    def _charge(
        self, start: budget.BudgetState, cost: int, ts: int
    ) -> tuple[budget.BudgetState, int]:
        s = start
        if "forge_budget" in self.modes:
            return budget.BudgetState(s.window_start_us, self.dna.base_mru, 0), cost
        if "wrong_cost" in self.modes:
            return s, 0
        if "skip_preflight" in self.modes:
            return budget.BudgetState(
                s.window_start_us, s.remaining_mru - cost, s.used_mru + cost
            ), cost
        return super()._charge(start, cost, ts)

    def _next_state(self, cs: ChainState, s: Signed) -> ChainState:
        """The state after `s` as the rogue claims it, unvalidated (validating would refuse it)."""
        rec = s.action["budget"]
        b = budget.BudgetState(rec["ws"], rec["rem"], cs.budget.used_mru + rec["cost"])
        if "bad_signature" in self.modes:
            object.__setattr__(s, "sig", bytes([s.sig[0] ^ 1]) + s.sig[1:])
        claimed = cs.claimed
        if s.action["type"] == "claim":  # rogues cheat on budgets only, never on grants
            claimed = claimed | {grant_hash(s.action["grant"])}
        return ChainState(s.author, s.seq, s.hash, s.ts, b, claimed)


def fork_outgoing(node, by_peer: dict) -> dict:
    """The "fork" mode's outgoing-batch hook: {peer: [Signed]} -> the same with every other
    peer (in sorted order) sent a twin of each own create action instead."""
    twins = node.__dict__.setdefault("rogue_twins", {})  # original hash -> twin
    out = {}
    for i, peer in enumerate(sorted(by_peer)):
        batch = by_peer[peer]
        if i % 2:
            forked = []
            for s in batch:
                cell = node.cells.get(s.author)
                if cell is not None and s.seq >= 1 and s.action.get("type") == "create":
                    if s.hash not in twins:
                        twins[s.hash] = Signed.sign(dict(s.action, ts=s.action["ts"] + 1), cell.key)
                    s = twins[s.hash]
                forked.append(s)
            batch = forked
        out[peer] = batch
    return out


def node_kwargs(modes) -> dict:
    """`NetNode.open` keyword arguments that make a node rogue in `modes` (empty: honest, {});
    node/net/rogue.py's `plug` is the way in (it checks the names and adds the wire modes).
    Any mode gives the node a RogueCell (a forker keeps its own state unvalidated too)."""
    modes = frozenset(modes)
    if not modes:
        return {}
    unknown = modes - set(CELL_MODES + NODE_MODES)
    if unknown:
        raise ValueError(f"not a node's own rogue mode: {sorted(unknown)}")
    kw: dict[str, Any] = {"cell_type": type("RogueCell", (RogueCell,), {"modes": modes})}
    if "fork" in modes:
        kw["outgoing"] = fork_outgoing
    return kw
