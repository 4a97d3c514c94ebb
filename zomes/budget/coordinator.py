"""budget functions: budget_status (free) and allocate_budget (stewards only)."""

from node.core.witness import MAX_NOTE
from typing import Annotated

from node.core.crypto import to_text
from zomes.hdk import (
    ActionId,
    AgentId,
    Amounts,
    BudgetId,
    Id,
    BudgetSchema,
    Count,
    Ids,
    Instructions,
    MilliRu,
    Optional,
    Seconds,
    Text,
    UnixSeconds,
    zome_fn,
)


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


# -- budgets as authorizers (node/budgets.py runs them; core/ledger.py decides)
Name = Annotated[str, Text(200)]
Schema = Annotated[dict | None, BudgetSchema()]
TaskId = Annotated[str, Text(128, min_bytes=1)]


@zome_fn("budget")
async def mint_budget(
    ctx,
    amounts: Annotated[dict, Amounts()],
    holder: AgentId,
    name: Name = "",
    schema: Schema = None,
):
    """A root budget from nothing (stewards only, within the DNA's mint_limit a window)."""
    await ctx.require_agent(holder)
    return await ctx.budgets.mint(ctx.cell, amounts, holder, name, schema or {})


@zome_fn("budget")
async def fund_budget(
    ctx,
    parent: BudgetId,
    amounts: Annotated[dict, Amounts()],
    holder: AgentId,
    name: Name = "",
    schema: Schema = None,
):
    """A child budget for `holder`, paid from `parent` (its schema narrows the parent's)."""
    await ctx.require_agent(holder)
    return await ctx.budgets.transfer(ctx.cell, "fund", parent, amounts, holder, name, schema or {})


@zome_fn("budget")
async def delegate_budget(
    ctx,
    parent: BudgetId,
    holder: AgentId,
    max_spend: Annotated[dict, Amounts(positive=True)],
    schema: Schema = None,
    expires_at: Annotated[int | None, Optional(UnixSeconds())] = None,
    name: Name = "",
):
    """A card: `holder` may spend up to `max_spend` of `parent` (escrowed now)."""
    await ctx.require_agent(holder)
    schema = dict(schema or {})
    if expires_at is not None:
        schema["expires_at"] = expires_at
    return await ctx.budgets.transfer(ctx.cell, "card", parent, max_spend, holder, name, schema)


@zome_fn("budget")
async def revoke_budget(ctx, budget: BudgetId):
    return await ctx.budgets.revoke(ctx.cell, budget)


@zome_fn("budget")
async def refine(
    ctx,
    instructions: Annotated[list, Instructions()],
    targets: Annotated[list | None, Optional(Ids("action"))] = None,
    budgets: Annotated[list | None, Optional(Ids("budget", 16))] = None,
):
    """Run `instructions` as one change, paid by the first of `budgets` that may (None: the
    allowance); all of its writes are stored together or none."""
    return await ctx.budgets.refine(ctx.cell, list(targets or ()), instructions, budgets)


@zome_fn("budget", writes=False)
async def get_budget(ctx, budget: BudgetId):
    """As the holder's chain has it (a network node finds and catches up that chain)."""
    return await ctx.get_budget(budget)


@zome_fn("budget", writes=False)
async def list_budgets(ctx):
    return ctx.budgets.held(ctx.cell)


@zome_fn("budget", writes=False)
async def wallet(ctx):
    w = ctx.cell.state.ledger.wallet
    return None if w is None else to_text("budget", w)


@zome_fn("budget")
async def commit_spend(
    ctx,
    budget: BudgetId,
    amounts: Annotated[dict, Amounts(positive=True)],
    task_id: TaskId,
    timeout_s: Annotated[float, Seconds()] = 600,
):
    return await ctx.budgets.commit(ctx.cell, budget, amounts, task_id, timeout_s)


@zome_fn("budget")
async def settle_spend(
    ctx,
    task_id: TaskId,
    amounts: Annotated[dict, Amounts()],
    payee: Annotated[bytes | None, Optional(Id("agent"))] = None,
):
    """Pay `amounts` of the hold to `payee`'s wallet, or with no payee count them as used
    (metered work: spent by the budget); the rest returns to the budget."""
    if payee is not None:
        await ctx.require_agent(payee)
    return await ctx.budgets.settle(ctx.cell, task_id, amounts, payee)


@zome_fn("budget")
async def cancel_spend(ctx, task_id: TaskId):
    return await ctx.budgets.cancel(ctx.cell, task_id)


@zome_fn("budget", writes=False)
async def lineage(ctx, record: ActionId):
    return ctx.budgets.lineage(record)


@zome_fn("budget", writes=False)
async def usage(
    ctx,
    budget: Annotated[bytes | None, Optional(Id("budget"))] = None,
    since: Annotated[int | None, Optional(UnixSeconds())] = None,
    limit: Count = 100,
):
    """This agent's usage rows (node/usage.py), newest `limit`, oldest first."""
    return ctx.budgets.usage(ctx.cell, budget, since, limit)
