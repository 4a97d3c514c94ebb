"""Adversarial nodes, for tests and the simulator only: each mode makes the author's node write
or publish something honest validators must reject, proving that they, not authors, enforce
budgets. Production code holds no way to cheat; it offers two neutral seams that this module
plugs into (`NetNode.open(cell_type=..., outgoing=...)`, which `LocalCluster.open(rogue=...)`,
`budgetnode up --rogue` and the simulator fill from `plug(modes)`):

- `RogueCell` (the cell factory): `skip_preflight` writes past the budget, `forge_budget` claims
  a full budget, `wrong_cost` records cost 0, `bad_signature` corrupts its signatures. A rogue
  cell cheats on budgets only, never on grants, and keeps its own state without validating it.
- `overspend_budget`: writes paid by a budget or card go on past its balance (the rogue's
  books keep the budget as it was before each refused spend); honest authorities refuse them as
  `ledger_budget_exceeded`.
- `double_vote`, `grant_without_quorum`, `overgrant` (governance, issue 18): the cell writes the
  governance action its own rules refuse (its books keep the ledger as it was): a second vote
  on one proposal (the workload votes twice); a grant of a proposal its chain has not approved
  (`grant_now` writes one); every grant the node writes asks for `OVERGRANT` times what was
  requested, above any market weight. Honest authorities refuse them as `ledger_already_voted`,
  `ledger_not_authorized` and `ledger_budget_exceeded`.
- `backdate`: the cell's clock runs `BACKDATE_DAYS` behind, and it opens windows on its own
  word (no witness): each write stamped a window after the last window began, as long as that is
  not in the real future, so an agent made days ago backfills every window it never lived
  through (the attack of issue 15). Honest authorities refuse it as `unwitnessed_window`.
- `sybil`: `sybil_agent(node)` makes an agent without an invite (its genesis is not validated
  here), on a network whose membrane asks for one. Honest authorities refuse it as
  `not_invited`, without a warrant.
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
from node.core.crypto import SigningKey, from_text, to_text
from node.core.dna import Dna
from node.core.errors import BudgetError
from node.core.validate import ChainState, validate_next
from node.local_node import AgentClient
from node.net.rogue import CELL_MODES, IDENTITY_MODES, NODE_MODES

BACKDATE_DAYS = 10
OVERGRANT = 2  # x requested: past requested x (1 + 0.5), the most a market weight allows
# the governance actions each mode writes although its own rules refuse them
GOV_CHEATS = {"double_vote": "vote", "grant_without_quorum": "grant", "overgrant": "grant"}


def _behind(now_us):
    """A clock BACKDATE_DAYS behind `now_us` (which stays reachable: the rogue never stamps a
    time honest nodes would hold back as future)."""
    if getattr(now_us, "real", None) is not None:
        return now_us

    def behind() -> int:
        return now_us() - BACKDATE_DAYS * 86_400 * budget.US

    behind.real = now_us  # type: ignore[attr-defined]
    return behind


class RogueCell(Cell):
    modes: frozenset = frozenset()

    def __init__(self, key, state, store, dna, app, now_us):
        if "backdate" in self.modes:
            now_us = _behind(now_us)
        super().__init__(key, state, store, dna, app, now_us)

    @classmethod
    async def create(cls, key, store, dna, app, now_us, *args, **kw):
        if "backdate" in cls.modes:
            now_us = _behind(now_us)
        return await super().create(key, store, dna, app, now_us, *args, **kw)

    @classmethod
    def _first_state(cls, g: Signed, dna: Dna) -> ChainState:
        if "sybil" not in cls.modes:
            return super()._first_state(g, dna)
        ts = g.action["ts"]  # unvalidated: an uninvited genesis is what a sybil writes
        return ChainState(g.author, 0, g.hash, ts, budget.initial(ts, dna), frozenset())

    async def _window(self, cs: ChainState, ts: int):
        if "backdate" not in self.modes:
            return await super()._window(cs, ts)
        # the next window starts a window after the last, at the rogue's word, unless that is
        # still ahead of the real clock; `ts` is already days behind
        opens = max(ts, cs.budget.window_start_us + self.dna.window_us)
        if opens <= self.now_us.real():  # set by _behind
            return opens, budget.open_window(cs.budget, opens, self.dna), None
        return ts, cs.budget, None

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
        window_claims = 0 if "witness" in s.action else cs.window_claims
        if s.action["type"] == "claim":  # rogues cheat on budgets only, never on grants
            claimed = claimed | {grant_hash(s.action["grant"])}
            window_claims += 1
        ledger = self._ledger_after(cs, s)
        return ChainState(s.author, s.seq, s.hash, s.ts, b, claimed, ledger, window_claims)

    def _ledger_after(self, cs: ChainState, s: Signed):
        """The ledger as the honest rules derive it; where they refuse, the rogue's books keep
        it as it was (so an `overspend_budget` rogue spends on)."""
        try:
            return validate_next(
                cs, s, self.dna, self.app, verify_sig=False, ledger_errors=True
            ).ledger
        except BudgetError:
            if s.action["type"] == "ledger" and not self._cheats_with(s.action["ledger"]):
                raise  # rogues cheat on spending, not on the ledger's other actions
            return cs.ledger

    def _cheats_with(self, v: dict) -> bool:
        kind = "grant" if v.get("kind") == "fund" and v.get("proposal") is not None else v["kind"]
        return any(GOV_CHEATS[m] == kind for m in self.modes if m in GOV_CHEATS)

    async def ledger_action(self, build_body):
        """An `overgrant` cell's grants ask for OVERGRANT times the proposal's request."""
        if "overgrant" not in self.modes:
            return await super().ledger_action(build_body)

        def inflated(led, ts):
            v = build_body(led, ts)
            p = led.gov.proposals.get(v.get("proposal")) if v.get("kind") == "fund" else None
            if p is not None:
                v["amounts"] = {k: OVERGRANT * x for k, x in p.amounts.items()}
            return v

        return await super().ledger_action(inflated)


async def grant_now(agent: AgentClient, proposal_id: str) -> str:
    """A `grant_without_quorum` agent pays its proposal `proposal_id` at once, whatever its
    chain tallied (what Governance.grant_approved does only for an approved one)."""
    cell = agent._cell
    if "grant_without_quorum" not in getattr(type(cell), "modes", ()):
        raise ValueError("grant_now needs an agent of a node in rogue mode 'grant_without_quorum'")
    p = cell.ledger.gov.proposals[from_text("action", proposal_id)]

    def body(led, ts):
        return {
            "kind": "fund",
            "parent": p.from_budget,
            "to": p.holder,
            "name": "grant",
            "amounts": dict(p.amounts),
            "schema": {},
            "entity": list(p.entity),
            "proposal": p.id,
            "score": p.score,
            "market_weight": 0,
            "endorsements": [],
        }

    s = await agent._node.budgets._write(cell, body)
    return to_text("action", s.hash)


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


async def sybil_agent(node) -> AgentClient:
    """A new agent of a `sybil` node, made without an invite: what `node.new_agent()` does, less
    the membrane's check (and the announcement: honest nodes would not keep it anyway)."""
    if "sybil" not in getattr(node.cell_type, "modes", ()):
        raise ValueError("sybil_agent needs a node in rogue mode 'sybil'")
    key = SigningKey.generate(node.randbytes)
    node.keystore.add(key)
    cell = await node.cell_type.create(key, node.store, node.dna, node.app, node.now_us)
    return AgentClient(node, node._add_cell(cell))


def node_kwargs(modes) -> dict:
    """`NetNode.open` keyword arguments that make a node rogue in `modes` (empty: honest, {});
    node/net/rogue.py's `plug` is the way in (it checks the names and adds the wire modes).
    Any mode gives the node a RogueCell (a forker keeps its own state unvalidated too)."""
    modes = frozenset(modes)
    if not modes:
        return {}
    unknown = modes - set(CELL_MODES + IDENTITY_MODES + NODE_MODES)
    if unknown:
        raise ValueError(f"not a node's own rogue mode: {sorted(unknown)}")
    kw: dict[str, Any] = {"cell_type": type("RogueCell", (RogueCell,), {"modes": modes})}
    if "fork" in modes:
        kw["outgoing"] = fork_outgoing
    return kw
