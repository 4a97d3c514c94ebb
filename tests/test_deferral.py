"""Deferral: `defer=True` queues a write refused only for lack of RU until its agent's window
resets, in a deterministic order, within bounds, in the store (a restart keeps it), and runs it
at the node's first activity at or after `runs_at` or on the running node's timer."""

import pytest
import trio

from node.core.crypto import from_text
from node.core.errors import DeferQueueFull, InvalidInput
from node.sdk import Deferred, LocalCluster, LocalNode

from conftest import START

DAY = 86_400


def chain_len(node, who) -> int:
    return len(node.store.chain(from_text("agent", who.agent_id)))


async def broke(agent):
    for _ in range(3):
        await agent.add_knowledge("a thought")  # 1 RU left


def recorder(node):
    events = []
    node.admissions.listen(events.append)
    return events


async def test_a_deferred_write_waits_for_the_window_and_runs_at_the_first_activity(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        await broke(alice)
        events = recorder(node)
        length, status = chain_len(node, alice), await alice.budget_status()
        d = await alice.add_knowledge("later", defer=True)
        assert isinstance(d, Deferred)
        assert (d.op, d.runs_at, d.position, d.code) == (
            "rose_forest.add_knowledge",
            START + DAY,
            0,
            "E_INSUFFICIENT_RU",
        )
        # queued work changes no chain and no budget
        assert chain_len(node, alice) == length and await alice.budget_status() == status
        assert await alice.deferred() == [d]
        assert [e["type"] for e in events] == ["deferred"]  # a deferral is not also a refusal
        assert (events[0]["need"], events[0]["have"], events[0]["runs_at"]) == (33, 1, START + DAY)
        clock[0] = START + DAY - 1
        await alice.budget_status()
        assert chain_len(node, alice) == length  # not yet due
        clock[0] = START + DAY
        st = await alice.budget_status()  # any activity runs due work first
        assert chain_len(node, alice) == length + 1 and st.remaining_ru == 67
        done = events[-1]
        assert done["type"] == "deferred_done" and done["id"] == d.id and done["code"] is None
        assert node.get_record(done["hash"])["content"]["content"] == "later"
        assert await alice.deferred() == []


async def test_a_write_that_fits_runs_at_once_and_other_refusals_are_not_queued(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        h = await alice.add_knowledge("now", defer=True)
        assert isinstance(h, str) and node.get_record(h)["content"]["content"] == "now"
        for _ in range(2):
            await alice.add_knowledge("more")  # 1 RU left
        with pytest.raises(InvalidInput):
            await alice.call("rose_forest", "add_knowledge", {"content": 7}, defer=True)
        node.cells[from_text("agent", alice.agent_id)].warrant = WARRANT
        with pytest.raises(BudgetErrorWithCode("E_WARRANTED")):
            await alice.add_knowledge("x", defer=True)
        assert await alice.deferred() == [] and len(node.admissions.queue) == 0


class BudgetErrorWithCode(Exception):
    """pytest.raises target: any BudgetError with this code."""

    def __new__(cls, code):
        from node.core.errors import error_class

        return error_class(code)


WARRANT = type("W", (), {"reason": "over_spend", "body": {"seq": 1}})()


async def test_the_queue_runs_in_its_total_order(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        a, b = await node.new_agent(), await node.new_agent()
        for x in (a, b):
            await broke(x)
        events = recorder(node)
        queued = [
            await b.add_knowledge("b1", defer=True),
            await a.create_thought_credential("t", "a1", defer=True),
            await a.add_knowledge("a2", defer=True),
            await b.add_knowledge("b3", defer=True),
        ]
        key = {
            q.id: (q.runs_at, from_text("agent", who.agent_id), q.op, q.code, q.id)
            for q, who in zip(queued, [b, a, a, b])
        }
        expected = sorted(key, key=key.get)
        listed = {q.id: q.position for q in await a.deferred() + await b.deferred()}
        assert sorted(listed, key=listed.get) == expected
        clock[0] = START + DAY
        await a.budget_status()
        ran = [e["id"] for e in events if e["type"] == "deferred_done"]
        assert ran == expected


async def test_the_queue_is_bounded_per_agent_and_per_node(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        a, b = await node.new_agent(), await node.new_agent()
        for x in (a, b):
            await broke(x)
        q = node.admissions.queue
        assert (q.per_agent, q.per_node) == (16, 1024)
        for i in range(16):
            await a.add_knowledge(f"a{i}", defer=True)
        with pytest.raises(DeferQueueFull, match="agent's"):
            await a.add_knowledge("one too many", defer=True)
        assert len(q) == 16 and q.overflows == 1
        q.per_node = 17  # the node's hard cap, lowered
        await b.add_knowledge("b0", defer=True)
        with pytest.raises(DeferQueueFull, match="node's"):
            await b.add_knowledge("b1", defer=True)
        assert len(q) == 17 and q.overflows == 2
        assert node.admissions.refused[("E_DEFER_QUEUE_FULL", "rose_forest.add_knowledge")] == 2


async def test_the_queue_survives_a_restart(clock, tmp_path):
    path = str(tmp_path / "n")
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        await broke(alice)
        d = await alice.add_knowledge("kept", defer=True)
        length = chain_len(node, alice)
    clock[0] = START + DAY + 5
    async with LocalNode.open(path=path, clock=lambda: clock[0]) as node:
        alice = await node.agent(alice.agent_id)
        assert [x.id for x in node.admissions.queue.entries()] == [d.id]
        await alice.budget_status()
        assert chain_len(node, alice) == length + 1 and len(node.admissions.queue) == 0
        kinds = [(e["type"], e.get("id")) for e in node.admissions.audit.read()]
        assert ("deferred", d.id) in kinds and ("deferred_done", d.id) in kinds


async def test_cancel_takes_a_write_off_the_queue_and_says_so(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice, bob = await node.new_agent(), await node.new_agent()
        await broke(alice)
        events = recorder(node)
        d = await alice.add_knowledge("never", defer=True)
        assert not await bob.cancel_deferred(d.id)  # not bob's
        assert await alice.cancel_deferred(d.id)
        assert not await alice.cancel_deferred(d.id)
        done = events[-1]
        assert (done["type"], done["id"], done["cancelled"]) == ("deferred_done", d.id, True)
        length = chain_len(node, alice)
        clock[0] = START + DAY
        await alice.budget_status()
        assert chain_len(node, alice) == length


async def test_a_write_refused_when_it_runs_is_dropped_with_its_code(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        await broke(alice)
        events = recorder(node)
        d = await alice.add_knowledge("doomed", defer=True)
        node.cells[from_text("agent", alice.agent_id)].warrant = WARRANT
        clock[0] = START + DAY
        await node.admissions.run_due()
        done = [e for e in events if e["type"] == "deferred_done"]
        assert [(e["id"], e["code"], e["hash"]) for e in done] == [(d.id, "E_WARRANTED", None)]
        assert len(node.admissions.queue) == 0 and node.admissions.deferred_refused == 1


async def test_a_grant_runs_what_it_makes_affordable(clock):
    async with LocalNode.open(clock=lambda: clock[0]) as node:
        alice = await node.new_agent()
        await broke(alice)
        await alice.add_knowledge("needs 33", defer=True)
        await alice.add_knowledge("needs 33 more", defer=True)
        length = chain_len(node, alice)
        await node.steward.allocate_budget(alice.agent_id, 40)  # 41 RU: one fits
        assert chain_len(node, alice) == length + 2  # the claim, then the first write
        assert [d.op for d in await alice.deferred()] == ["rose_forest.add_knowledge"]


async def test_the_running_nodes_timer_runs_due_work_without_activity(autojump_clock):
    # the nodes' clock is trio's (virtual) clock: sleeping moves both
    async with LocalCluster.open(
        n=1, clock=lambda: START + trio.current_time(), transport="memory"
    ) as c:
        node = c.nodes[0]
        alice = await node.new_agent()
        await broke(alice)
        await alice.add_knowledge("by the timer", defer=True)
        length = chain_len(node, alice)
        await trio.sleep(DAY - 10)
        assert chain_len(node, alice) == length
        await trio.sleep(70)
        assert chain_len(node, alice) == length + 1
        assert len(node.admissions.queue) == 0


async def test_a_restarted_network_node_runs_its_kept_queue_on_its_timer(autojump_clock, tmp_path):
    paths = [str(tmp_path / "n0")]
    clock = lambda: START + trio.current_time()  # noqa: E731 - the nodes' clock is trio's
    async with LocalCluster.open(n=1, clock=clock, transport="memory", paths=paths) as c:
        alice = await c.nodes[0].new_agent()
        await broke(alice)
        await alice.add_knowledge("kept over a restart", defer=True)
        length = chain_len(c.nodes[0], alice)
    async with LocalCluster.open(n=1, clock=clock, transport="memory", paths=paths) as c:
        node = c.nodes[0]
        assert len(node.admissions.queue) == 1
        await trio.sleep(DAY + 60)  # no call at all: the timer runs it
        assert chain_len(node, alice) == length + 1 and len(node.admissions.queue) == 0
