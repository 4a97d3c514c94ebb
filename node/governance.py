"""Governance as a node runs it for its agents (core/governance.py decides): filing proposals,
voting, endorsing, and the grant a proposer's node writes once its chain has tallied an
approving quorum; and the derived views (a proposal, an entity's envelope) read back from the
chains that hold them, fetched from the network where this node does not.

Votes and endorsements travel as offers (node/budgets.py delivers them): a vote to the
proposer, an endorsement to the entity's holder, each accepted once by that chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .agent_api import EnvelopeView, ProposalView
from .budgets import shown
from .core import governance as G
from .core import ledger as L
from .core import rebalance as R
from .core.action import Signed
from .core.crypto import from_text, to_text
from .core.errors import (
    BudgetError,
    BudgetExceeded,
    InvalidInput,
    NoEvidence,
    NotFound,
    UnknownAgent,
)

if TYPE_CHECKING:
    from .cell import Cell

# the op whose paid writes count as knowledge-graph edges gained (an envelope's ROI)
EDGE_OP = "rose_forest.link_edge"
LLM_PREFIX = "llm_tokens."


def _text(kind: str, raw: bytes) -> str:
    return to_text(kind, raw)


def entity_text(e: G.Entity) -> str:
    return f"{e[0]}:{to_text('agent' if e[0] == 'agent' else 'action', e[1])}"


class Governance:
    def __init__(self, node: Any):  # node: the LocalNode (it imports this module)
        self.node = node
        self.grants_failed = 0  # approved proposals whose grant could not be written yet

    # -- finding things on other chains
    async def _record(self, h: bytes) -> Signed | None:
        try:
            await self.node.fetch_record(to_text("action", h))
        except (NotFound, UnknownAgent):
            return None
        found = self.node.record_of(h)
        return None if found is None else found[0]

    async def _ledger(self, pub: bytes) -> L.Ledger:
        """`pub`'s ledger as this node re-derives it (fetching and catching up its chain)."""
        cell = self.node.cells.get(pub)
        if cell is not None:
            return cell.ledger
        try:
            await self.node.ensure_agent(pub)
            await self.node.refresh_agent(pub)
        except (NotFound, UnknownAgent):
            pass
        for author, led in self.node.ledgers():
            if author == pub:
                return led
        raise UnknownAgent(f"no chain for {to_text('agent', pub)} is known here")

    async def holder_of(self, e: G.Entity) -> bytes:
        """Whose chain holds `e`'s envelope: an agent's own, a record's author's."""
        if e[0] == "agent":
            await self.node.ensure_agent(e[1])
            return e[1]
        s = await self._record(e[1])
        if s is None:
            raise NotFound(f"no record {to_text('action', e[1])} is known to the network")
        return s.author

    # -- writing
    async def propose(
        self,
        cell: Cell,
        e: G.Entity,
        amounts: dict,
        justification: str,
        evidence: list[bytes],
        from_budget: bytes,
    ) -> str:
        if not evidence:
            raise NoEvidence("a proposal cites at least one existing record as evidence")
        for h in evidence:
            if await self._record(h) is None:
                raise NoEvidence(f"the evidence {to_text('action', h)} is no record known here")
        body = {
            "kind": "propose",
            "entity": list(e),
            "holder": await self.holder_of(e),
            "amounts": amounts,
            "justification": justification,
            "evidence": list(evidence),
            "from_budget": from_budget,
        }
        s = await self.node.budgets._write(cell, lambda led, ts: body)
        return to_text("action", s.hash)

    async def vote(self, cell: Cell, pid: bytes, decision: str, scores: dict) -> str:
        s = await self._record(pid)
        v = s.action.get("ledger") if s is not None else None
        if s is None or not isinstance(v, dict) or v.get("kind") != "propose":
            raise NotFound(f"no proposal {to_text('action', pid)} is known to the network")
        body = {
            "kind": "vote",
            "proposal": pid,
            "decision": decision,
            "scores": scores,
            "to": s.author,
        }
        return to_text("action", (await self.node.budgets._write(cell, lambda led, ts: body)).hash)

    async def endorse(self, cell: Cell, e: G.Entity, stake_mru: int, direction: int) -> str:
        body = {
            "kind": "endorse",
            "entity": list(e),
            "stake": stake_mru,
            "direction": direction,
            "to": await self.holder_of(e),
        }
        return to_text("action", (await self.node.budgets._write(cell, lambda led, ts: body)).hash)

    async def grant_approved(self, cell: Cell) -> None:
        """Pay each proposal of `cell`'s chain that is approved and not yet granted (after a
        vote is taken, and when the node starts)."""
        for p in list(cell.ledger.gov.proposals.values())[: G.MAX_PROPOSALS]:
            if p.state != "approved":
                continue
            try:
                await self._grant(cell, p)
            except BudgetError:  # e.g. the budget is spent or void: the proposal stays approved
                self.grants_failed += 1

    async def _grant(self, cell: Cell, p: G.Proposal) -> None:
        pro, con, cited = 0, 0, []
        try:
            tally = (await self._ledger(p.holder)).gov.endorsed.get(p.entity)
        except UnknownAgent:
            tally = None
        for h in tally[2] if tally else ():
            s = await self._record(h)
            if s is None:
                continue  # not reachable now: the grant counts the endorsements it can cite
            _, stake, d = G.endorse(s.action["ledger"])
            pro, con = (pro + stake, con) if d == 1 else (pro, con + stake)
            cited.append([s.body, s.sig])
        weight = G.market_weight(pro, con)

        def body(led: L.Ledger, ts: int) -> dict:
            b = L.held(led, p.from_budget)
            L.check_open(b, ts)
            b = L.expire_holds(led, b, ts)[1]
            room = {
                k: max(0, b.available.get(k, 0) - b.schema.min_reserve.get(k, 0))
                for k in b.available
            }
            limit = G.grant_limit(p, weight)
            amt = {k: min(x, room.get(k, 0)) for k, x in limit.items()}
            if not any(amt.values()):  # the proposal stays approved until the budget has some
                k = next(iter(limit))
                raise BudgetExceeded(limit[k], 0, to_text("budget", b.id), k, "nothing to grant")
            return {
                "kind": "fund",
                "parent": p.from_budget,
                "to": p.holder,
                "name": f"grant {to_text('action', p.id)[:20]}",
                "amounts": {k: x for k, x in amt.items() if x},
                "schema": {},
                "entity": list(p.entity),
                "proposal": p.id,
                "score": p.score,
                "market_weight": weight,
                "endorsements": cited,
            }

        await self.node.budgets._write(cell, body)

    # -- rebalancing (core/rebalance.py plans; this reads its inputs and carries it out)
    async def _envelope_budgets(self, cell: Cell) -> list[R.EnvelopeBudget]:
        """The envelope budgets `cell`'s agent funded, as their holders' chains have them."""
        now_s = cell.now_us() // 1_000_000
        out = []
        for cid, child in list(cell.ledger.children.items())[: R.MAX_BUDGETS]:
            if child.kind != "fund":
                continue
            try:
                led = await self._ledger(child.holder)
            except UnknownAgent:
                continue
            b = led.budgets.get(cid)
            e = None if b is None else b.entity
            if b is None or e is None:
                continue  # not accepted yet, or no envelope's
            b = L.expire_holds(led, b, now_s * 1_000_000)[1]
            pro, con, _ = led.gov.endorsed.get(e, (0, 0, ()))
            out.append(
                R.EnvelopeBudget(
                    budget=cid,
                    entity=e,
                    holder=child.holder,
                    available=dict(b.available),
                    spent=dict(b.spent),
                    edges=b.ops.get(EDGE_OP, 0),
                    last_active_window=min(now_s, b.last_used or b.created_at)
                    // self.node.dna.window_s,
                    market_weight_milli=G.market_weight(pro, con),
                    void=b.void or child.state != "open",
                )
            )
        return out

    async def rebalance(self, cell: Cell, dry_run: bool = True) -> list[dict]:
        """The plan for the envelopes `cell`'s agent funded; without `dry_run`, carried out as
        signed actions: each source budget revoked (what is left returns to its parent), then
        each receiver funded from that parent (a new budget of its envelope), and a low-ROI
        envelope refunded what it keeps."""
        dna = self.node.dna
        budgets = await self._envelope_budgets(cell)
        window = cell.now_us() // 1_000_000 // dna.window_s
        rules = R.Rules(idle_windows=dna.governance["idle_windows"])
        moves = R.plan(budgets, window, rules)
        shown_moves = [_move_view(m) for m in moves]
        if dry_run or not moves:
            return shown_moves
        by_id = {b.budget: b for b in budgets}
        done: dict[bytes, bool] = {}
        for m, view in zip(moves, shown_moves):
            src = m["from"]
            if src not in done:
                done[src] = await self._reclaim(cell, by_id[src], moves)
            view["status"] = "done" if done[src] else "waiting for the return"
            if done[src]:
                parent = cell.ledger.children[src].parent
                view["budget"] = await self._fund_envelope(cell, parent, m["to"], m["amounts"])
        return shown_moves

    async def _reclaim(self, cell: Cell, b: R.EnvelopeBudget, moves: list) -> bool:
        """Revoke `b` and wait (bounded) for what is left of it to return; a low-ROI envelope
        is refunded what the plan lets it keep. False if the return has not arrived."""
        import trio

        await self.node.budgets.revoke(cell, b.budget)
        wait = getattr(self.node, "wait_changed", None)
        with trio.move_on_after(30):
            while cell.ledger.children[b.budget].state != "returned" and wait is not None:
                await wait()
        child = cell.ledger.children[b.budget]
        if child.state != "returned":
            return False
        given: dict[str, int] = {}
        for m in moves:
            if m["from"] == b.budget:
                for k, x in m["amounts"].items():
                    given[k] = given.get(k, 0) + x
        kept = {k: x - given.get(k, 0) for k, x in child.returned.items()}
        if any(x > 0 for x in kept.values()):
            await self._fund_envelope(
                cell, child.parent, b.entity, {k: x for k, x in kept.items() if x > 0}
            )
        return True

    async def _fund_envelope(self, cell: Cell, parent: bytes, e: G.Entity, amt: dict) -> str:
        holder = await self.holder_of(e)
        body = {
            "kind": "fund",
            "parent": parent,
            "to": holder,
            "name": "rebalance",
            "amounts": dict(amt),
            "schema": {},
            "entity": list(e),
        }
        s = await self.node.budgets._write(cell, lambda led, ts: body)
        return to_text("budget", s.hash)

    # -- reading
    async def get_proposal(self, pid: bytes) -> ProposalView:
        s = await self._record(pid)
        if s is None or (s.action.get("ledger") or {}).get("kind") != "propose":
            raise NotFound(f"no proposal {to_text('action', pid)} is known to the network")
        p = (await self._ledger(s.author)).gov.proposals.get(pid)
        if p is None:
            raise NotFound(f"proposal {to_text('action', pid)} is not on its chain")
        return proposal_view(p, s.author, s.action["ledger"])

    def proposals(self) -> list[ProposalView]:
        """Every proposal the chains this node holds filed."""
        out = []
        for author, led in self.node.ledgers():
            for p in led.gov.proposals.values():
                s = self.node.record_of(p.id)
                body = s[0].action["ledger"] if s is not None else {}
                out.append(proposal_view(p, author, body))
        return sorted(out, key=lambda v: (v.created_at, v.id))

    async def get_envelope(self, e: G.Entity) -> EnvelopeView:
        holder = await self.holder_of(e)
        return envelope_view(e, holder, await self._ledger(holder), self.node.budgets)

    def envelopes(self) -> list[EnvelopeView]:
        """The envelope of every entity with a budget on a chain this node holds."""
        out = []
        for holder, led in self.node.ledgers():
            seen = {b.entity for b in led.budgets.values() if b.entity is not None}
            seen |= set(led.gov.endorsed)
            for e in sorted(seen):
                out.append(envelope_view(e, holder, led, self.node.budgets))
        return out


def _move_view(m: R.Move) -> dict:
    return {
        "from": to_text("budget", m["from"]),
        "to": entity_text(m["to"]),
        "amounts": shown(m["amounts"]),
        "reason": m["reason"],
    }


def parse_entity(entity_type: Any, entity_id: Any) -> G.Entity:
    """An entity from the SDK's (type, id text): an agent id, or a record's action hash."""
    if entity_type not in G.ENTITY_TYPES:
        raise InvalidInput(f"entity_type is one of {G.ENTITY_TYPES}")
    return (entity_type, from_text("agent" if entity_type == "agent" else "action", entity_id))


def proposal_view(p: G.Proposal, author: bytes, body: dict) -> ProposalView:
    return ProposalView(
        id=to_text("action", p.id),
        proposer=to_text("agent", author),
        entity_type=p.entity[0],
        entity_id=entity_text(p.entity).split(":", 1)[1],
        state=p.state,
        score=None if p.score is None else p.score / 1000,
        votes=[
            {
                "voter": to_text("agent", v.voter),
                "decision": v.decision,
                "score": v.score / 1000,
                "scores": {n: x / 1000 for (n, _), x in zip(G.SCORE_WEIGHTS, v.scores)},
            }
            for v in p.votes
        ],
        requested=shown(p.amounts),
        granted=shown(p.granted),
        from_budget=to_text("budget", p.from_budget),
        justification=body.get("justification", ""),
        evidence=[to_text("action", h) for h in body.get("evidence", [])],
        created_at=p.created_at,
    )


def envelope_view(e: G.Entity, holder: bytes, led: L.Ledger, budgets: Any) -> EnvelopeView:
    mine = [b for b in led.budgets.values() if b.entity == e]
    edges = sum(b.ops.get(EDGE_OP, 0) for b in mine)
    tokens = sum(x for b in mine for k, x in b.spent.items() if k.startswith(LLM_PREFIX))
    granted = [b for b in mine if b.score is not None]
    latest = max(granted, key=lambda b: (b.created_at, b.id), default=None)
    pro, con, _ = led.gov.endorsed.get(e, (0, 0, ()))
    return EnvelopeView(
        entity_type=e[0],
        entity_id=entity_text(e).split(":", 1)[1],
        holder=to_text("agent", holder),
        budgets=[budgets.view(b.id) for b in sorted(mine, key=lambda b: b.id)],
        priority_score=None if latest is None or latest.score is None else latest.score / 1000,
        market_weight=G.market_weight(pro, con) / 1000,
        roi_score=edges / tokens if tokens else None,
        edges=edges,
        llm_tokens_spent=tokens,
        stakes={"for": pro / 1000, "against": con / 1000},
    )
