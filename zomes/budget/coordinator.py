"""budget functions: budget_status (free) and allocate_budget (stewards only)."""

from decimal import Decimal

from node.core.crypto import from_text
from node.core.dna import MRU_PER_RU
from node.core.errors import InvalidInput, NotAuthorized
from zomes.hdk import zome_fn


@zome_fn("budget", writes=False)
async def budget_status(ctx):
    return ctx.budget_status()


@zome_fn("budget")
async def allocate_budget(ctx, agent_id, ru):
    grantee = from_text("agent", agent_id)
    if not ctx.is_steward:
        raise NotAuthorized("only a steward listed in the DNA can allocate RU")
    if isinstance(ru, bool) or not isinstance(ru, (int, float)):
        raise InvalidInput("ru must be a number")
    d = Decimal(str(ru))
    if not d.is_finite():
        raise InvalidInput("ru must be a finite number")
    mru = int(d * MRU_PER_RU)
    if not 0 < mru <= ctx.cap_mru:
        raise InvalidInput(f"ru must be more than 0 and at most {ctx.cap_mru / MRU_PER_RU:g}")
    return await ctx.allocate(grantee, mru)


@zome_fn("budget", writes=False)
async def invite(ctx, note=""):
    """A single-use invite for one new agent (stewards only; `membrane: invite` networks)."""
    if not isinstance(note, str):
        raise InvalidInput("an invite's note is text")
    return await ctx.invite(note)
