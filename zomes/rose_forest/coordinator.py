"""rose_forest functions: add_knowledge (33 RU), link_edge (3), create_thought_credential (10)."""

from collections.abc import Sequence
from typing import Annotated

from zomes.hdk import ActionId, Count, Text, TextList, zome_fn

from .integrity import MAX_TAGS, MAX_TEXT


@zome_fn("rose_forest")
async def add_knowledge(
    ctx,
    content: Annotated[str, Text(MAX_TEXT)],
    tags: Annotated[Sequence[str], TextList(MAX_TAGS)] = (),
):
    return await ctx.create("knowledge", {"content": content, "tags": list(tags)})


@zome_fn("rose_forest")
async def link_edge(
    ctx, from_hash: ActionId, to_hash: ActionId, relation: Annotated[str, Text(64)]
):
    return await ctx.create("edge", {"from": from_hash, "to": to_hash, "relation": relation})


@zome_fn("rose_forest")
async def create_thought_credential(
    ctx, title: Annotated[str, Text(256)], body: Annotated[str, Text(MAX_TEXT)]
):
    return await ctx.create("thought_credential", {"title": title, "body": body})


@zome_fn("rose_forest", writes=False)
async def get_edges(ctx, from_hash: ActionId, limit: Count = 100):
    return ctx.find("edge_from", from_hash.hex(), limit)
