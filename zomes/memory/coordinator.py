"""memory functions: transmit_understanding (3 RU = 1 transmit + 2 validate),
recall_understandings (0.1 RU per result returned), compose_memories (5), validate_triple (2)."""

from node.core.crypto import from_text
from typing import Annotated

from zomes.hdk import AgentId, Count, Optional, Text, zome_fn

from .integrity import MAX_REFS, _key

# subject, predicate, object (integrity: non-empty, at most 1 KiB)
TriplePart = Annotated[str, Text(1024)]
NonEmptyPart = Annotated[str, Text(1024, min_bytes=1)]


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
async def transmit_understanding(
    ctx,
    subject: TriplePart,
    predicate: TriplePart,
    object: TriplePart,
    context: Annotated[str | None, Optional(Text(4096))] = None,
):
    return await ctx.create(
        "understanding",
        {"subject": subject, "predicate": predicate, "object": object, "context": context},
    )


@zome_fn("memory")
async def recall_understandings(
    ctx, subject: Annotated[str | None, Optional(Text(1024))] = None, limit: Count = 100
):
    if subject is None:
        recs = ctx.records_of_type("understanding", limit)
    else:
        recs = ctx.find("subject", subject, limit)
    # Charged for what is returned, and refused before anything is returned.
    await ctx.charge_results("recall_understandings", len(recs))
    return [_row(r) for r in recs]


@zome_fn("memory")
async def compose_memories(ctx, other_agent_id: AgentId):
    await ctx.require_agent(other_agent_id)
    refs = [
        from_text("action", r["hash"])
        for r in ctx.records_of_type("understanding", MAX_REFS, author=other_agent_id)
    ]
    return await ctx.create("composed_memory", {"agent": other_agent_id, "refs": refs})


@zome_fn("memory")
async def validate_triple(
    ctx,
    subject: NonEmptyPart,
    predicate: NonEmptyPart,
    object: NonEmptyPart,
):
    c = {"subject": subject, "predicate": predicate, "object": object}
    known = len(ctx.find("triple", _key(c), ctx.max_results))
    return await ctx.create("triple_validation", {**c, "known": known})
