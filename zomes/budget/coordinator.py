"""budget functions: budget_status (free) and allocate_budget (stewards only)."""

from node.core.witness import MAX_NOTE
from typing import Annotated

from zomes.hdk import AgentId, MilliRu, Text, zome_fn


@zome_fn("budget", writes=False)
async def budget_status(ctx):
    return ctx.budget_status()


@zome_fn("budget")
async def allocate_budget(ctx, agent_id: AgentId, ru: MilliRu):
    # ru arrives in milli-RU, checked against the DNA's cap (zomes.hdk.Ru); the checks run in
    # admission's order (node/core/admission.py): the target, then the steward's warrant and
    # authority, then (in ctx.allocate) the grantee's room
    await ctx.require_agent(agent_id)
    ctx.require_steward("allocate RU")
    return await ctx.allocate(agent_id, ru)


@zome_fn("budget", writes=False)
async def invite(
    ctx, note: Annotated[str, Text(4 * MAX_NOTE)] = ""
):  # core.witness counts its characters
    """A single-use invite for one new agent (stewards only; `membrane: invite` networks)."""
    return await ctx.invite(note)
