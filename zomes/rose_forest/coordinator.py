"""rose_forest functions: add_knowledge (33 RU), link_edge (3), create_thought_credential (10)."""

from node.core.crypto import from_text
from node.core.errors import InvalidInput
from zomes.hdk import zome_fn


@zome_fn("rose_forest")
async def add_knowledge(ctx, content, tags=()):
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
        raise InvalidInput("tags must be a list of strings")
    return await ctx.create("knowledge", {"content": content, "tags": list(tags)})


@zome_fn("rose_forest")
async def link_edge(ctx, from_hash, to_hash, relation):
    c = {
        "from": from_text("action", from_hash),
        "to": from_text("action", to_hash),
        "relation": relation,
    }
    return await ctx.create("edge", c)


@zome_fn("rose_forest")
async def create_thought_credential(ctx, title, body):
    return await ctx.create("thought_credential", {"title": title, "body": body})


@zome_fn("rose_forest", writes=False)
async def get_edges(ctx, from_hash, limit=100):
    return ctx.find("edge_from", from_text("action", from_hash).hex(), limit)
