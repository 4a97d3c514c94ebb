"""Two processes' worth of nodes on one directory: what one does, the other sees."""

import pytest

from node.sdk import LocalNode, StoreCorrupted

START = 1_730_678_400


async def test_grant_by_one_handle_is_seen_by_the_other(tmp_path):
    t = [float(START)]
    async with LocalNode.open(path=str(tmp_path), clock=lambda: t[0]) as n1:
        async with LocalNode.open(path=str(tmp_path), clock=lambda: t[0]) as n2:
            a1 = await n1.new_agent()
            a2 = await n2.agent(a1.agent_id)  # created by the other handle
            for _ in range(33):
                await a1.transmit_understanding("s", "p", "o")
            await n2.steward.allocate_budget(a1.agent_id, 50)
            assert (await a1.budget_status()).remaining_ru == 51.0
            await a1.add_knowledge("paid by the grant")
            assert (await a2.budget_status()).remaining_ru == 18.0


async def test_missing_chain_store_with_keys_is_refused(tmp_path):
    async with LocalNode.open(path=str(tmp_path)) as n:
        await n.new_agent()
    for f in tmp_path.glob("chain.db*"):
        f.unlink()
    with pytest.raises(StoreCorrupted):
        async with LocalNode.open(path=str(tmp_path)):
            pass


async def test_unreadable_dna_is_reported_as_corruption(tmp_path):
    import sqlite3

    async with LocalNode.open(path=str(tmp_path)):
        pass
    db = sqlite3.connect(tmp_path / "chain.db")
    db.execute("UPDATE meta SET v=x'ff' WHERE k='dna'")
    db.commit()
    db.close()
    with pytest.raises(StoreCorrupted):
        async with LocalNode.open(path=str(tmp_path)):
            pass
