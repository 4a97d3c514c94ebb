"""Two deliveries of one action racing through a history fetch must not warrant its author."""

import trio

from node.core.crypto import from_text
from node.sdk import LocalCluster


async def test_duplicate_delivery_during_history_fetch(autojump_clock):
    async with LocalCluster.open(
        n=2, transport="memory", r=2, gossip_interval=3600, publish_interval=3600
    ) as c:
        a, b = c.nodes
        c.network.partition([a.id], [b.id])
        agent = await a.new_agent()
        for i in range(7):
            await agent.transmit_understanding(f"s{i}", "p", f"o{i}")
        c.network.heal()
        pub = from_text("agent", agent.agent_id)
        s = a.store.chain(pub)[-1]
        e = a.store.entries_of(pub)[s.action["entry"]]
        results = []

        async def deliver():
            results.append(await b._accept(s, e, a.id))

        async with trio.open_nursery() as n:
            n.start_soon(deliver)
            n.start_soon(deliver)
        assert results == ["valid", "valid"]
        assert b.warrants() == [] and pub not in b.warranted
        assert b._head(pub) == (s.seq, s.hash)
