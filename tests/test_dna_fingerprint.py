"""The DNA hash covers the integrity zomes' fingerprint: nodes whose validation rules differ are
on different networks, and refuse each other instead of warranting each other's honest agents."""

import dataclasses

import pytest

from node.core.app import App
from node.core.dna import Dna
from node.core.errors import WrongNetwork
from node.net.node import NetNode, fetch_dna
from node.sdk import LocalCluster, LocalNode
from zomes import ROSE_FOREST
from zomes.budget import integrity as budget_i
from zomes.memory import integrity as memory_i
from zomes.rose_forest import integrity as rf_i


def rose_forest_with(zome) -> App:
    """The Rose Forest app with one integrity zome replaced (same coordinators)."""
    zomes = [zome if z.name == zome.name else z for z in ROSE_FOREST.integrity]
    return App(zomes, ROSE_FOREST.functions)


NEW_RULES = rose_forest_with(dataclasses.replace(memory_i.ZOME, rules_version=2))


def test_every_integrity_change_changes_the_fingerprint_and_the_dna_hash():
    edge = rf_i.ZOME.entry_defs[1]
    variants = {
        "rules_version": NEW_RULES,
        "cost": rose_forest_with(
            dataclasses.replace(rf_i.ZOME, costs={**rf_i.ZOME.costs, "link_edge": 2_000})
        ),
        "index keys": rose_forest_with(
            dataclasses.replace(
                rf_i.ZOME,
                entry_defs=(
                    rf_i.ZOME.entry_defs[0],
                    dataclasses.replace(edge, keys=("edge_to",)),
                    rf_i.ZOME.entry_defs[2],
                ),
            )
        ),
        "paying op": rose_forest_with(
            dataclasses.replace(
                rf_i.ZOME,
                entry_defs=(
                    rf_i.ZOME.entry_defs[0],
                    dataclasses.replace(edge, op="add_knowledge"),
                    rf_i.ZOME.entry_defs[2],
                ),
            )
        ),
        "steward only": rose_forest_with(
            dataclasses.replace(
                budget_i.ZOME,
                entry_defs=(dataclasses.replace(budget_i.ZOME.entry_defs[0], steward_only=False),),
                grant_entry=None,
            )
        ),
    }
    base = Dna.for_app(ROSE_FOREST, stewards=(b"s" * 32,))
    for what, app in variants.items():
        assert app.fingerprint != ROSE_FOREST.fingerprint, what
        assert Dna.for_app(app, stewards=(b"s" * 32,)).hash != base.hash, what
    # the coordinators are not part of it: other functions, same rules, same network
    same = App(list(ROSE_FOREST.integrity), {})
    assert same.fingerprint == ROSE_FOREST.fingerprint
    assert Dna.for_app(same, stewards=(b"s" * 32,)).hash == base.hash
    assert Dna.from_dict(base.to_dict()) == base


async def test_nodes_with_other_integrity_zomes_do_not_talk(clock, autojump_clock):
    async with LocalCluster.open(n=1, clock=lambda: clock[0], transport="memory") as c:
        a = c.nodes[0]
        addr = a.transport.listen_addrs()
        # Joining with its own network: every request is refused for naming another DNA.
        async with NetNode.open(
            c.network.transport, clock=lambda: clock[0], bootstrap=addr, app=NEW_RULES
        ) as b:
            assert b.dna.hash != a.dna.hash
            assert "another network" in b.peer_table.last_join_error
            assert b.id not in a.peers and a.id not in b.peers
            assert a.metrics["messages_refused"] >= 1
        # Taking the network's DNA (as `budgetnode up --bootstrap` does) is refused at once.
        dna = await fetch_dna(c.network.transport, addr[0])
        assert dna.hash == a.dna.hash
        with pytest.raises(WrongNetwork, match="other integrity zomes"):
            async with NetNode.open(
                c.network.transport, clock=lambda: clock[0], bootstrap=addr, dna=dna, app=NEW_RULES
            ):
                pass


async def test_a_store_made_with_other_rules_is_refused(tmp_path, clock):
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]):
        pass
    with pytest.raises(WrongNetwork, match="other integrity zomes"):
        async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0], app=NEW_RULES):
            pass
    async with LocalNode.open(path=str(tmp_path), clock=lambda: clock[0]) as node:
        assert node.dna.integrity == ROSE_FOREST.fingerprint  # refused, and left as it was
