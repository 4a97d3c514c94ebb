"""The node runs the app it is given: another app's entry types, costs and functions work with
no edit of the node, and the Rose Forest app is only the default."""

import sys

import pytest

from node.core.app import App, EntryDef, IntegrityZome, need_keys, need_text
from node.core.errors import InvalidInput, UnknownFunction
from node.sdk import LocalNode
from zomes import ROSE_FOREST
from typing import Annotated

from zomes.hdk import Text, collect, zome_fn


def validate_note(c):
    need_keys(c, {"text"})
    need_text(c, "text", 100)


NOTES_ZOME = IntegrityZome(
    "notes",
    rules_version=1,
    entry_defs=(EntryDef("note", "write_note", validate_note),),
    costs={"write_note": 7_000},
)


@zome_fn("notes")
async def write_note(ctx, text: Annotated[str, Text()]):
    return await ctx.create("note", {"text": text})


@zome_fn("notes")
async def write_memo(
    ctx, text: Annotated[str, Text()]
):  # a coordinator bug: no integrity zome defines "memo"
    return await ctx.create("memo", {"text": text})


NOTES = App([NOTES_ZOME], collect(sys.modules[__name__]))


async def test_a_node_runs_another_app_with_its_own_costs_and_functions(tmp_path, clock):
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0], app=NOTES) as node:
        assert node.app is NOTES and node.dna.costs == {"write_note": 7_000}
        a = await node.new_agent()
        h = await a.call("notes", "write_note", {"text": "hello"})
        assert node.get_record(h)["content"] == {"text": "hello"}
        st = node.status()["agents"][-1]
        assert st["remaining_ru"] == 93.0
        with pytest.raises(UnknownFunction):
            await a.add_knowledge("a Rose Forest function this app does not have")
        with pytest.raises(InvalidInput, match="no entry type 'memo'"):
            await a.call("notes", "write_memo", {"text": "lost"})
        assert node.status()["agents"][-1]["seq"] == 1  # nothing written


async def test_the_default_app_is_rose_forest(tmp_path, clock):
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        assert node.app is ROSE_FOREST and node.dna.costs == ROSE_FOREST.costs


def test_an_app_refuses_unpriced_ops_and_two_zomes_pricing_one_op():
    with pytest.raises(ValueError, match="without a cost"):
        App([IntegrityZome("x", 1, (EntryDef("note", "free_ride", validate_note),), costs={})])
    with pytest.raises(ValueError, match="prices an op"):
        App([NOTES_ZOME, IntegrityZome("y", 1, (), costs={"write_note": 1})])
