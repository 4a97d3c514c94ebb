"""memory functions: transmit_understanding (3 RU = 1 transmit + 2 validate),
recall_understandings (0.1 RU per result returned), compose_memories (5), validate_triple (2)."""

from node.core.crypto import from_text
from node.core.errors import InvalidInput
from zomes.hdk import zome_fn

from .integrity import MAX_REFS, _key


def _row(rec):
    c = rec["content"]
    return {
        "subject": c["subject"],
        "predicate": c["predicate"],
        "object": c["object"],
        "context": c.get("context"),
        "author": rec["author"],
        "hash": rec["hash"],
    }


@zome_fn("memory")
async def transmit_understanding(ctx, subject, predicate, object, context=None):
    return await ctx.create(
        "understanding",
        {"subject": subject, "predicate": predicate, "object": object, "context": context},
    )


@zome_fn("memory")
async def recall_understandings(ctx, subject=None, limit=100):
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= ctx.max_results:
        raise InvalidInput(f"limit must be an integer from 1 to {ctx.max_results}")
    if subject is None:
        recs = ctx.records_of_type("understanding", limit)
    else:
        if not isinstance(subject, str):
            raise InvalidInput("subject must be a string")
        recs = ctx.find("subject", subject, limit)
    # Charged for what is returned, and refused before anything is returned.
    await ctx.charge_results("recall_understandings", len(recs))
    return [_row(r) for r in recs]


@zome_fn("memory")
async def compose_memories(ctx, other_agent_id):
    other = from_text("agent", other_agent_id)
    await ctx.require_agent(other)
    refs = [
        from_text("action", r["hash"])
        for r in ctx.records_of_type("understanding", MAX_REFS, author=other)
    ]
    return await ctx.create("composed_memory", {"agent": other, "refs": refs})


@zome_fn("memory")
async def validate_triple(ctx, subject, predicate, object):
    c = {"subject": subject, "predicate": predicate, "object": object}
    for k, v in c.items():
        if not isinstance(v, str) or not v:
            raise InvalidInput(f"{k} must be a non-empty string")
    known = len(ctx.find("triple", _key(c), ctx.max_results))
    return await ctx.create("triple_validation", {**c, "known": known})
