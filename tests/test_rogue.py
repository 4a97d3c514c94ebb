"""The adversaries live in sims/rogue.py and plug into neutral seams; honest nodes carry none."""

import pytest

from node.cell import Cell
from node.core.budget import InsufficientRU
from node.sdk import LocalCluster
from node.net.rogue import KNOWN, plug
from sims.rogue import RogueCell

from conftest import START


def test_plug_gives_the_seams_for_each_mode_and_refuses_unknown_ones():
    def factory(seed, handler):
        raise AssertionError("not opened here")

    assert plug(factory, (), 1) == (factory, {})
    f, kw = plug(factory, ("skip_preflight",), 1)
    assert f is factory and issubclass(kw["cell_type"], RogueCell)
    assert kw["cell_type"].modes == {"skip_preflight"} and "outgoing" not in kw
    assert set(plug(factory, ("fork",), 1)[1]) == {"cell_type", "outgoing"}
    f, kw = plug(factory, ("byzantine",), 1)  # honest node code behind a lying transport
    assert f is not factory and kw == {}
    with pytest.raises(ValueError, match="unknown rogue mode"):
        plug(factory, ("skip_preflight", "free_lunch"), 1)
    assert set(KNOWN) == {
        "skip_preflight",
        "forge_budget",
        "wrong_cost",
        "bad_signature",
        "fork",
        "byzantine",
        "backdate",
        "overspend_budget",
        "double_vote",
        "grant_without_quorum",
        "overgrant",
        "sybil",
    }


async def test_only_the_rogue_node_cheats_and_honest_nodes_use_the_plain_cell(autojump_clock):
    t = [float(START)]
    async with LocalCluster.open(n=3, clock=lambda: t[0], transport="memory", rogue=(2,)) as c:
        honest, rogue = await c.nodes[0].new_agent(), await c.nodes[2].new_agent()
        assert type(honest._cell) is Cell and c.nodes[0].outgoing is None
        assert isinstance(rogue._cell, RogueCell)
        for _ in range(3):  # 3 x 33 RU of 100
            await honest.add_knowledge("x")
            await rogue.add_knowledge("x")
        with pytest.raises(InsufficientRU):
            await honest.add_knowledge("x")
        await rogue.add_knowledge("past the budget")  # the rogue cell skips its pre-flight
        assert (await rogue.budget_status()).remaining_ru < 0
