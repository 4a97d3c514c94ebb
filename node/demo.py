"""`budgetnode demo`: a scripted day on a local cluster of real libp2p nodes (or, with
--single, on one in-process node). Budgets run on a virtual clock so the day fits in
seconds; the network is real.

Each step checks what it shows; the demo exits non-zero if any node ever disagrees
with the budget rules, so it doubles as a smoke test of an install.
"""

from __future__ import annotations

from .core.crypto import from_text
from .core.validate import validate_chain
from .sdk import InsufficientRU, LocalNode

DAY = 86_400
START = 1_730_678_400  # 2024-11-04 00:00 UTC, so the first window resets at 1730764800


class DemoFailed(Exception):
    pass


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise DemoFailed(what)


async def run_single(out=print, path: str | None = None) -> None:
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
            out(
                f"  {names.get(agent.agent_id, 'steward'):<6} {what:<46} "
                f"remaining {st.remaining_ru:6.2f} RU  used {st.used_ru:6.2f}"
            )

        out("\n08:00  the day's work")
        now[0] = START + 8 * 3600
        k1 = await alice.add_knowledge(
            "Mycorrhizal networks share carbon between trees", tags=["ecology"]
        )
        await show(alice, "add_knowledge (33 RU)")
        k2 = await alice.add_knowledge(
            "Old trees feed seedlings through fungal links", tags=["ecology"]
        )
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
            _expect(
                str(e) == "E_INSUFFICIENT_RU: need 33.00 RU, have 31.00 RU. "
                "Budget resets at 1730764800",
                "refusal text",
            )
        _expect(
            len(node.store.chain(from_text("agent", alice.agent_id))) == before,
            "a refusal must write nothing",
        )

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
            cs = validate_chain(
                node.store.chain(pub), node.dna, node.app, node.store.entries_of(pub)
            )
            agent = next(a for a in node.agents() if from_text("agent", a) == pub)
            _expect(
                cs.budget == node.cells[pub].state.budget,
                "the re-derived budget must equal the node's own",
            )
            out(
                f"  {names.get(agent, 'steward'):<6} {cs.seq + 1:3d} actions valid, "
                f"{cs.budget.remaining_mru / 1000:6.2f} RU remaining"
            )
        out("\ndemo ok")


async def _budgets(out, c, alice, bob, names) -> str:
    """The budget tree of the demo: minted on node 0, funded and delegated to bob on node 1,
    spent there, settled, traced back to the mint, and the same on every node."""
    import trio

    from .core.crypto import from_text

    async def accepted(agent, budget_id: str) -> None:
        with trio.fail_after(30):
            while from_text("budget", budget_id) not in agent._cell.ledger.budgets:
                await c.wait_changed()

    steward = c.nodes[0].steward
    root = await steward.mint_budget(
        {"ru": 500},
        holder=alice.agent_id,
        name="research",
        schema={"ops": ["*"], "can_fund": True, "can_delegate": True},
    )
    out(f"  steward mints 500 RU 'research' for alice: {root[:14]}…")
    team = await alice.fund_budget(
        root,
        {"ru": 100},
        holder=bob.agent_id,
        name="team",
        schema={"ops": ["memory.*"], "max_per_call": {"ru": 5}, "min_reserve": {"ru": 10}},
    )
    card = await alice.delegate_budget(
        root,
        holder=bob.agent_id,
        max_spend={"ru": 30},
        schema={"ops": ["memory.transmit_understanding"]},
        name="card",
    )
    await accepted(bob, team)
    await accepted(bob, card)
    out("  alice funds bob's 'team' (100 RU, memory.* only, 5 RU a call, 10 RU reserve)")
    out("  and delegates him a 30 RU card for transmit_understanding; node 1 accepts both")
    r = await bob.refine(
        instructions=[
            {
                "zome": "memory",
                "fn": "transmit_understanding",
                "payload": {"subject": "fungi", "predicate": "feed", "object": "trees"},
            }
        ],
        budgets=[card, team],
    )
    _expect(r.authorized_by == card, "the card should pay first")
    out(f"  bob refines: paid {r.spent['ru']:.2f} RU by the card (his allowance untouched)")
    async with bob.spend(team, {"ru": 20}, payee=alice.agent_id) as hold:
        hold.use({"ru": 7})
    out(
        f"  bob's two-phase spend: held 20 RU, settled {hold.hold.settled['ru']:.2f} RU to "
        f"alice's wallet, 13 RU back"
    )
    steps = await bob.lineage(r.outputs[0])
    out(
        "  lineage of bob's output: "
        + " <- ".join(f"{s['kind']} by {names.get(s['signer'], 'steward')}" for s in steps)
    )
    await c.await_consistency(timeout=30)
    views = [await n.get_budget(card) for n in c.nodes]
    _expect(all(v == views[0] for v in views), "every node must derive the same card")
    b = views[0].balance("ru")
    out(
        f"  every node sees the card: {b.spent:.2f} spent, {b.available:.2f} of "
        f"{b.funded:.2f} RU left"
    )
    return root


async def _governance(out, c, alice, bob, root: str, evidence: str) -> None:
    """A proposal filed on node 0 for bob's envelope, a stake that raises its market weight,
    the steward's vote (the default DNA: stewards vote, quorum 1), the grant, and the same
    proposal and envelope on every node."""
    import trio

    steward = c.nodes[0].steward
    await steward.endorse("agent", bob.agent_id, 4)
    out("  the steward stakes 4 RU of its allowance endorsing bob: market weight +0.142")
    pid = await alice.propose_allocation(
        "agent", bob.agent_id, {"ru": 40}, "bob's triples hold up", [evidence], root
    )
    out(
        f"  alice proposes 40 RU from 'research' for bob's envelope, citing her record: {pid[:14]}…"
    )
    await steward.vote(
        pid, "approve", {"evidence": 0.9, "novelty": 0.6, "alignment": 0.8, "community": 0.7}
    )
    with trio.fail_after(30):
        while (await alice.get_proposal(pid)).state != "granted":
            await c.wait_changed()
    await c.await_consistency(timeout=30)
    views = [await n.get_proposal(pid) for n in c.nodes]
    _expect(all(v == views[0] for v in views), "every node must derive the same proposal")
    p = views[0]
    _expect(p.granted == {"ru": 45.68}, "40 RU x (1 + 0.142) should be granted")
    out(
        f"  the steward approves (score {p.score:.3f} >= 0.5): granted {p.granted['ru']:.2f} RU "
        f"(40 x 1.142), the same on every node"
    )
    with trio.fail_after(30):
        while not (await bob.get_envelope("agent", bob.agent_id)).budgets:
            await c.wait_changed()
    await c.await_consistency(timeout=30)
    envs = [await n.get_envelope("agent", bob.agent_id) for n in c.nodes]
    _expect(all(e == envs[0] for e in envs), "every node must derive the same envelope")
    out(
        f"  bob's envelope: {len(envs[0].budgets)} budget, priority {envs[0].priority_score:.3f},"
        f" market weight {envs[0].market_weight:+.3f}"
    )


async def run_cluster(out=print, nodes: int = 3) -> None:
    from .core.crypto import to_text
    from .sdk import LocalCluster, Warranted

    now = [float(START)]
    out(
        f"starting {nodes} libp2p nodes on 127.0.0.1 (Noise, Yamux); node {nodes - 1} runs in "
        f"adversarial mode: it skips its own pre-flight budget check"
    )
    async with LocalCluster.open(n=nodes, clock=lambda: now[0], rogue=(nodes - 1,)) as c:
        for i, node in enumerate(c.nodes):
            out(f"  node {i}  {node.transport.listen_addrs()[0]}")
        alice = await c.nodes[0].new_agent()
        bob = await c.nodes[1].new_agent()
        mallory = await c.nodes[nodes - 1].new_agent()
        names = {
            alice.agent_id: "alice@0",
            bob.agent_id: "bob@1",
            mallory.agent_id: f"mallory@{nodes - 1}",
        }
        out(f"network {c.nodes[0].dna.hash_text}; steward on node 0")

        async def seen(agent, what: str, honest_only: bool = False) -> None:
            await c.await_consistency(timeout=30)
            nodes_ = c.nodes[: nodes - 1] if honest_only else c.nodes
            views = [await n.get_budget_state(agent.agent_id) for n in nodes_]
            _expect(
                len({v.remaining_mru for v in views}) == 1,
                "every node must re-derive the same budget",
            )
            who = "every honest node sees" if honest_only else "every node sees"
            out(
                f"  {names[agent.agent_id]:<10} {what:<40} {who} "
                f"{views[0].remaining_ru:6.2f} RU left"
            )

        out("\n08:00  writes on one node, BudgetState re-derived on every node")
        now[0] = START + 8 * 3600
        k1 = await alice.add_knowledge("Mycorrhizal networks share carbon", tags=["ecology"])
        await seen(alice, "add_knowledge (33 RU)")
        k2 = await alice.add_knowledge("Old trees feed seedlings", tags=["ecology"])
        await alice.link_edge(from_hash=k2, to_hash=k1, relation="supports")
        await seen(alice, "add_knowledge + link_edge (36 RU)")
        for obj in ("carbon", "nitrogen", "water"):
            await bob.transmit_understanding("mycorrhiza", "transports", obj)
        await seen(bob, "transmit_understanding x3 (9 RU)")
        await alice.compose_memories(other_agent_id=bob.agent_id)
        await seen(alice, "compose_memories of bob's (5 RU)")

        out("\n14:00  alice over-spends: refused before anything is written")
        now[0] = START + 14 * 3600
        try:
            await alice.add_knowledge("A third idea")
            raise DemoFailed("the over-spend was accepted")
        except InsufficientRU as e:
            out(f"  refused: {e}")

        out("\n15:00  the steward on node 0 grants bob (node 1) 150 RU; the cap is 200")
        g = await c.nodes[0].steward.allocate_budget(bob.agent_id, 150)
        _expect(g.claimed and g.granted_ru == 109.0, "the grant should cross and be capped")
        out(f"  granted {g.granted_ru:.2f} RU, claimed on node 1")
        await seen(bob, "after the grant")

        out("\n15:30  budgets: a funded team budget, a card, a refine, a two-phase spend")
        root = await _budgets(out, c, alice, bob, names)

        out("\n15:45  governance: a stake, a proposal on evidence, a vote, a grant")
        await _governance(out, c, alice, bob, root, k1)

        out(f"\n16:00  mallory's node {nodes - 1} lets her over-spend; the validators refuse it")
        for i in range(4):
            try:
                await mallory.add_knowledge(f"mallory's note {i}")
                out(f"  mallory add_knowledge #{i + 1} accepted by her own node")
            except Warranted as e:
                out(f"  mallory refused: {e}")
                break
        await c.await_consistency(timeout=30)
        for i, node in enumerate(c.nodes[: nodes - 1]):
            ws = [w for w in node.warrants() if w.agent_id == mallory.agent_id]
            _expect(bool(ws), f"node {i} should hold a warrant for mallory")
            out(
                f"  node {i} holds {len(ws)} warrant(s) for mallory: {ws[0].reason} at seq "
                f"{ws[0].body['seq']}, issued by {to_text('agent', ws[0].issuer)[:14]}…"
            )
        _expect(
            all(w.agent_id == mallory.agent_id for n in c.nodes for w in n.warrants()),
            "no honest agent may be warranted",
        )
        try:
            await mallory.transmit_understanding("x", "y", "z")
            raise DemoFailed("a warranted agent wrote")
        except Warranted as e:
            out(f"  mallory's node is told why: {e}")
        await seen(mallory, "her valid history, re-derived", honest_only=True)

        out("\n+24 h  a new window opens at the first call after the reset")
        now[0] = START + DAY + 9 * 3600
        await alice.add_knowledge("A third idea")
        await seen(alice, "add_knowledge succeeds again")

        out("\nper node: ops published / validated / rejected, receipts, gossip rounds, warrants")
        for i, node in enumerate(c.nodes):
            m = node.metrics
            out(
                f"  node {i}  {m['ops_published']:4d} {m['ops_validated']:4d} "
                f"{m['ops_rejected']:3d} {m['receipts']:4d} {m['gossip_rounds']:4d} "
                f"{len(node.warrants()):3d}"
            )
    out("\ndemo ok")
