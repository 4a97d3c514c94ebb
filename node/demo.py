"""`budgetnode demo`: one in-process node, three agents, a scripted day on a virtual clock.

Each step checks what it shows; the demo exits non-zero if the node ever disagrees
with the budget rules, so it doubles as a smoke test of an install.
"""
from __future__ import annotations

from .core.crypto import from_text
from .core.validate import validate_chain
from .sdk import InsufficientRU, LocalNode
from zomes import APP

DAY = 86_400
START = 1_730_678_400  # 2024-11-04 00:00 UTC, so the first window resets at 1730764800


class DemoFailed(Exception):
    pass


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise DemoFailed(what)


async def run(out=print, path: str | None = None) -> None:
    now = [float(START)]
    async with LocalNode.open(path=path, clock=lambda: now[0]) as node:
        steward = node.steward
        alice, bob, carol = [await node.new_agent() for _ in range(3)]
        names = {alice.agent_id: "alice", bob.agent_id: "bob", carol.agent_id: "carol"}
        out(f"network {node.dna.hash_text}  (100 RU per agent per 24 h window, cap 200 RU)")
        for a in (alice, bob, carol):
            out(f"  {names[a.agent_id]:<6} {a.agent_id}")

        async def show(agent, what: str) -> None:
            st = await agent.budget_status()
            out(f"  {names.get(agent.agent_id, 'steward'):<6} {what:<46} "
                f"remaining {st.remaining_ru:6.2f} RU  used {st.used_ru:6.2f}")

        out("\n08:00  the day's work")
        now[0] = START + 8 * 3600
        k1 = await alice.add_knowledge("Mycorrhizal networks share carbon between trees",
                                       tags=["ecology"])
        await show(alice, "add_knowledge (33 RU)")
        k2 = await alice.add_knowledge("Old trees feed seedlings through fungal links",
                                       tags=["ecology"])
        await show(alice, "add_knowledge (33 RU)")
        await alice.link_edge(from_hash=k2, to_hash=k1, relation="supports")
        await show(alice, "link_edge (3 RU)")
        for obj in ("carbon", "nitrogen", "water"):
            await bob.transmit_understanding("mycorrhiza", "transports", obj, context="forest")
        await show(bob, "transmit_understanding x3 (3 RU each)")
        rows = await carol.recall_understandings(subject="mycorrhiza", limit=10)
        _expect(len(rows) == 3, "carol should recall bob's three understandings")
        await show(carol, f"recall_understandings -> {len(rows)} rows (0.1 RU each)")
        await carol.compose_memories(other_agent_id=bob.agent_id)
        await show(carol, "compose_memories (5 RU)")
        await carol.validate_triple("mycorrhiza", "transports", "carbon")
        await show(carol, "validate_triple (2 RU)")

        out("\n14:00  alice tries a third add_knowledge with 31 RU left")
        now[0] = START + 14 * 3600
        before = len(node.store.chain(from_text("agent", alice.agent_id)))
        try:
            await alice.add_knowledge("A third idea")
            raise DemoFailed("the over-spend was accepted")
        except InsufficientRU as e:
            out(f"  refused: {e}")
            out(f"  (retry in {e.retry_after_s} s; nothing was written)")
            _expect(str(e) == "E_INSUFFICIENT_RU: need 33.00 RU, have 31.00 RU. "
                    "Budget resets at 1730764800", "refusal text")
        _expect(len(node.store.chain(from_text("agent", alice.agent_id))) == before,
                "a refusal must write nothing")

        out("\n15:00  the steward grants RU (remaining can rise to 200 RU at most)")
        g = await steward.allocate_budget(bob.agent_id, 150)
        out(f"  bob asked for 150 RU, granted {g.granted_ru:.2f} RU (capped at 200)")
        _expect(g.granted_ru == 109.0, "the grant should be cut at the 200 RU cap")
        await show(bob, "after the grant")

        out("\n+24 h  a new window opens at the first call after the reset")
        now[0] = START + DAY + 9 * 3600
        st = await alice.budget_status()
        _expect(st.remaining_ru == 100.0, "the budget should be back to 100 RU")
        await alice.add_knowledge("A third idea")
        await show(alice, "add_knowledge succeeds again")

        out("\nevery chain re-derived from its signed actions:")
        for pub in node.store.authors():
            cs = validate_chain(node.store.chain(pub), node.dna, APP, node.store.entries_of(pub))
            agent = next(a for a in node.agents() if from_text("agent", a) == pub)
            _expect(cs.budget == node.cells[pub].state.budget,
                    "the re-derived budget must equal the node's own")
            out(f"  {names.get(agent, 'steward'):<6} {cs.seq + 1:3d} actions valid, "
                f"{cs.budget.remaining_mru / 1000:6.2f} RU remaining")
        out("\ndemo ok")
