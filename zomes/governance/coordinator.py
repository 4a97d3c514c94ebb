"""governance functions: proposals, votes, endorsements and envelopes (node/governance.py runs
them; node/core/governance.py decides)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from node.core import governance as G
from node.core.errors import InvalidInput
from node.governance import parse_entity
from zomes.hdk import ActionId, Amounts, BudgetId, Ids, Param, Ru, Text, zome_fn


@dataclass(frozen=True)
class Choice(Param):
    """One of `values`."""

    values: tuple

    def check(self, name, value, dna):
        if value not in self.values or isinstance(value, bool):
            raise InvalidInput(f"{name} is one of {', '.join(map(str, self.values))}")
        return value


@dataclass(frozen=True)
class Scores(Param):
    """A vote's scores: evidence, novelty, alignment and community, each a number in [0, 1];
    the function receives thousandths."""

    def check(self, name, value, dna):
        names = [n for n, _ in G.SCORE_WEIGHTS]
        if not isinstance(value, dict) or sorted(value) != sorted(names):
            raise InvalidInput(f"{name} names exactly {', '.join(names)}")
        out = {}
        for n in names:
            x = value[n]
            ok = not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)
            if not ok or not 0 <= x <= 1:
                raise InvalidInput(f"{name}: {n} must be a number in [0, 1]")
            out[n] = round(x * 1000)
        return out


@dataclass(frozen=True)
class Flag(Param):
    """True or False."""

    def check(self, name, value, dna):
        if not isinstance(value, bool):
            raise InvalidInput(f"{name} is true or false")
        return value


EntityType = Annotated[str, Choice(G.ENTITY_TYPES)]
EntityId = Annotated[str, Text(64, min_bytes=1)]  # an agent id, or a record's action hash


@zome_fn("governance")
async def propose_allocation(
    ctx,
    entity_type: EntityType,
    entity_id: EntityId,
    amounts: Annotated[dict, Amounts(positive=True)],
    justification: Annotated[str, Text(G.MAX_JUSTIFICATION * 4, min_bytes=1)],
    evidence: Annotated[list, Ids("action", G.MAX_EVIDENCE)],
    from_budget: BudgetId,
):
    """File a proposal that `from_budget` (held by the caller) fund the entity's envelope."""
    e = parse_entity(entity_type, entity_id)
    return await ctx.governance.propose(
        ctx.cell, e, amounts, justification, list(evidence), from_budget
    )


@zome_fn("governance")
async def vote(
    ctx,
    proposal_id: ActionId,
    decision: Annotated[str, Choice(G.DECISIONS)],
    scores: Annotated[dict, Scores()],
):
    return await ctx.governance.vote(ctx.cell, proposal_id, decision, scores)


@zome_fn("governance")
async def endorse(
    ctx,
    entity_type: EntityType,
    entity_id: EntityId,
    stake_ru: Annotated[int, Ru()],
    direction: Annotated[int, Choice((1, -1))] = 1,
):
    """Stake RU from the allowance for (+1) or against (-1) an entity: its market weight."""
    e = parse_entity(entity_type, entity_id)
    return await ctx.governance.endorse(ctx.cell, e, stake_ru, direction)


@zome_fn("governance", writes=False)
async def get_proposal(ctx, proposal_id: ActionId):
    return await ctx.governance.get_proposal(proposal_id)


@zome_fn("governance", writes=False)
async def list_proposals(ctx):
    return ctx.governance.proposals()


@zome_fn("governance", writes=False)
async def get_envelope(ctx, entity_type: EntityType, entity_id: EntityId):
    return await ctx.governance.get_envelope(parse_entity(entity_type, entity_id))


@zome_fn("governance", writes=False)
async def list_envelopes(ctx):
    return ctx.governance.envelopes()


@zome_fn("governance")
async def rebalance(ctx, dry_run: Annotated[bool, Flag()] = True):
    """The rebalancing plan for the envelopes the caller funded (moves: from, to, amounts,
    reason); without dry_run, carried out as signed revokes and funds."""
    return await ctx.governance.rebalance(ctx.cell, dry_run)
