"""The adversaries live in sims/rogue.py and plug into neutral seams; honest nodes carry none."""
import pytest

from node.cell import Cell
from node.core.budget import InsufficientRU
from node.sdk import LocalCluster
from sims.rogue import MODES, RogueCell, plug

from conftest import START


def test_plug_gives_the_seams_for_each_mode_and_refuses_unknown_ones():
    assert plug(()) == {}
    kw = plug(("skip_preflight",))
    assert issubclass(kw["cell_type"], RogueCell) and kw["cell_type"].modes == {"skip_preflight"}
    assert "outgoing" not in kw
    assert set(plug(("fork",))) == {"cell_type", "outgoing"}
    with pytest.raises(ValueError, match="unknown rogue modes"):
        plug(("skip_preflight", "free_lunch"))
    assert MODES == {"skip_preflight", "forge_budget", "wrong_cost", "bad_signature", "fork"}


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
