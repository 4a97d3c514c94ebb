"""Issue 15 through the public surface, across nodes: a window opens only with a steward's
witness (so a node's clock cannot backdate or backfill windows), and under `membrane: invite`
only a steward's single-use invite admits an agent. In-memory clusters under trio's virtual
clock; then the same over real libp2p, the app socket and the command line (real time, every
wait bounded).
"""

import pytest
import trio

from chainkit import Chain, key

from node.cell import Cell
from node.core import warrant as W
from node.core.action import Signed
from node.core.crypto import SigningKey, from_text
from node.core.witness import sign_witness
from node.net import protocol as P
from sims.rogue import sybil_agent
from node.sdk import (
    InsufficientRU,
    InviteUsed,
    LocalCluster,
    NotAuthorized,
    NoWitness,
    UnknownAgent,
)

DAY = 86_400
US = 1_000_000
RETRY_S = 60  # past the wait before a node that got no usable witness asks again


def pub(agent) -> bytes:
    return from_text("agent", agent.agent_id)


def head_action(node, agent) -> dict:
    return node.store.chain(pub(agent))[-1].action


async def budgets_everywhere(c, agent) -> set:
    return {
        (s.remaining_mru, s.window_start)
        for s in [await n.get_budget_state(agent.agent_id) for n in c.nodes]
    }


def spent_as_held_by(node, agent) -> tuple[int, set]:
    """(mRU spent, window starts) of `agent`'s chain as `node` holds it."""
    chain = node.dht.records(pub(agent), 0, 1 << 20)
    actions = [Signed.from_store(b, sig).action for b, sig, _ in chain]
    budgets = [a["budget"] for a in actions if "budget" in a]
    return sum(b["cost"] for b in budgets), {b["ws"] for b in budgets}


# -- a. backdating: an agent's windows are as far apart as the stewards' clocks say
class BackdatingCell(Cell):
    """A modified node's writer: it stamps its actions by its own clock, set back `behind`
    seconds (which the test winds forward a day between writes), and takes any witness it
    gets. Its node's clock (the one it checks a steward's witness against) is the true one."""

    behind = [10 * DAY]

    @classmethod
    async def create(cls, key, store, dna, app, now_us, **kw):
        return await super().create(
            key, store, dna, app, lambda: now_us() - cls.behind[0] * US, **kw
        )


async def test_a_backdating_node_gets_no_more_windows_than_real_time_allows(clock, autojump_clock):
    """Issue 15's attack: a node set 10 days back stamps writes a day apart. It got 1,089 RU in
    11 windows in 0 s of real time; now every window but the first needs a steward's witness,
    and the steward's clock says no time has passed."""
    async with LocalCluster.open(n=3, clock=lambda: clock[0], transport="memory") as c:
        n0, n1, n2 = c.nodes
        n2.cell_type = BackdatingCell
        mallory = await n2.new_agent()
        assert head_action(n2, mallory)["ts"] == int((clock[0] - 10 * DAY) * US)
        spent = 0
        with pytest.raises(InsufficientRU):
            for day in range(11):
                BackdatingCell.behind[0] = (10 - day) * DAY  # its clock: a day on, each write
                await mallory.add_knowledge(f"day {day}")
                spent += 33
        assert spent <= 200  # its genesis window and one witnessed window, in 0 s real time
        await c.await_consistency(timeout=60)
        for honest in (n0, n1):
            cost, windows = spent_as_held_by(honest, mallory)
            assert cost == spent * 1000 and len(windows) == 2
            st = await honest.get_budget_state(mallory.agent_id)
            assert (st.window_start, st.remaining_mru, st.used_mru) == (
                int(clock[0]),
                1_000,
                99_000,
            )
        assert not any(n.warrants() for n in c.nodes)  # it broke no rule: it just got nothing


async def test_a_node_whose_clock_is_behind_uses_no_witness_from_its_future(clock, autojump_clock):
    """The unmodified code on a clock 10 days slow: a steward's witness is 10 days ahead of it,
    so it keeps to the window it has, then E_NO_WITNESS (its actions would read as the future
    to itself)."""
    async with LocalCluster.open(n=3, clock=lambda: clock[0], transport="memory") as c:
        n0, n1, n2 = c.nodes
        behind = [10 * DAY]
        n2.clock = lambda: clock[0] - behind[0]
        mallory = await n2.new_agent()
        spent = 0
        with pytest.raises(NoWitness):
            for day in range(11):
                behind[0] = (10 - day) * DAY
                await mallory.add_knowledge(f"day {day}")
                spent += 33
        assert spent == 99 and n2.metrics["witnesses_ahead"] >= 1
        await c.await_consistency(timeout=60)
        assert spent_as_held_by(n0, mallory)[0] == 99_000


async def test_a_hand_built_backdated_chain_is_refused_and_warranted(clock, autojump_clock):
    """Windows an author opens itself (no witness), or with a witness a non-steward signed,
    published to honest nodes: refused and warranted everywhere."""
    async with LocalCluster.open(n=3, clock=lambda: clock[0], transport="memory") as c:
        n0, n1, n2 = c.nodes
        t0 = int((clock[0] - 10 * DAY) * US)
        cases = {}
        for n, reason in ((20, "unwitnessed_window"), (21, "bad_witness")):
            ch = Chain(key(n), dna=n0.dna, ts=t0)
            ch.create(ts=t0 + 1)
            # a day later by its own clock: chainkit has a non-steward witness the new window
            a, body = ch.create_action(
                "knowledge", {"content": "a free window", "tags": []}, t0 + DAY * US
            )
            if reason == "unwitnessed_window":
                del a["witness"]
            cases[reason] = (ch, ch.signed(a), body)
        for ch, bad, body in cases.values():
            ops = [
                [s.body, s.sig, ch.entries.get(s.action.get("entry")), None, [n0.id, n1.id], None]
                for s in ch.actions
            ]
            ops.append(
                [
                    bad.body,
                    bad.sig,
                    body,
                    [ch.head.body, ch.head.sig],  # the action before it
                    [n0.id, n1.id],
                    None,
                ]
            )
            for honest in (n0, n1):
                batch = W.sign_batch(ops, honest.id, n2.now_us(), n2.node_key)
                rep = await n2._request(honest.id, "publish", ops=ops, batch=batch)
                assert [r.status for r in rep.results] == ["valid", "valid", "invalid"]
        await c.await_consistency(timeout=120)
        for node in c.nodes:
            got = {w.offender: w.reason for w in node.warrants()}
            assert got == {ch.key.public: r for r, (ch, _, _) in cases.items()}
        for honest in (n0, n1):
            for ch, _, _ in cases.values():
                assert honest._head(ch.key.public)[0] == 1  # nothing past its last valid action


# -- c. a window rolls with the steward's witness, asked across the network
async def test_a_window_opens_with_the_stewards_witness_from_another_node(clock, autojump_clock):
    async with LocalCluster.open(n=3, clock=lambda: clock[0], transport="memory") as c:
        steward = c.nodes[0].steward
        bob = await c.nodes[1].new_agent()
        await bob.add_knowledge("day one")
        clock[0] += DAY
        await bob.add_knowledge("day two")
        w = head_action(c.nodes[1], bob)["witness"]
        assert w["by"] == pub(steward) and w["at"] == int(clock[0] * 1_000_000)
        await c.await_consistency(timeout=60)
        # every node re-derives the same fresh window from bob's chain
        assert await budgets_everywhere(c, bob) == {(100_000 - 33_000, int(clock[0]))}
        assert len(set(c.state_hashes())) == 1


async def test_without_a_reachable_steward_the_old_window_is_spent_and_no_new_one_opens(
    clock, autojump_clock
):
    async with LocalCluster.open(n=3, clock=lambda: clock[0], transport="memory") as c:
        n0, n1, n2 = c.nodes
        bob = await n1.new_agent()
        await bob.add_knowledge("before the cut")  # 67 RU left in this window
        await c.await_consistency(timeout=60)
        c.network.partition([n0.id], [n1.id, n2.id])
        clock[0] += DAY  # the window has ended; only node 0 can witness the next one
        await bob.add_knowledge("from the old window")  # 34 left
        await bob.add_knowledge("still the old window")  # 1 left
        assert "witness" not in head_action(n1, bob)
        before = n1.store.head(pub(bob))
        with pytest.raises(NoWitness):
            await bob.add_knowledge("needs the new window")
        assert n1.store.head(pub(bob)) == before  # nothing written
        c.network.heal()
        clock[0] += RETRY_S
        await bob.add_knowledge("after the heal")
        assert head_action(n1, bob)["witness"]["by"] == pub(n0.steward)
        await c.await_consistency(timeout=120)
        assert await budgets_everywhere(c, bob) == {(100_000 - 33_000, int(clock[0]))}


def answer_witness_with(c, node, forge):
    """Make `node` answer every witness request with `forge(request)`'s witness."""
    real = c.network.handlers[node.id]

    async def handler(peer, raw):
        t, msg = P.parse_request(raw, node.dna.hash)
        if t == "witness":
            return P.reply(**forge(msg))
        return await real(peer, raw)

    c.network.handlers[node.id] = handler


async def test_the_issuers_refusal_of_an_invite_reaches_the_caller_as_itself(clock, autojump_clock):
    async with LocalCluster.open(
        n=2, clock=lambda: clock[0], transport="memory", dna={"membrane": "invite"}
    ) as c:
        n0, n1 = c.nodes
        real = c.network.handlers[n0.id]

        async def refusing(peer, raw):
            if P.parse_request(raw, n0.dna.hash)[0] == "witness":
                return P.error_reply(NotAuthorized("this steward has stopped inviting"))
            return await real(peer, raw)

        c.network.handlers[n0.id] = refusing
        with pytest.raises(NotAuthorized, match="^E_NOT_AUTHORIZED: this steward has stopped"):
            await n1.new_agent(invite=await n0.steward.invite())
        assert list(n1.cells) == [] and n1.metrics["malformed_replies"] == 0


async def test_a_false_witness_is_a_malformed_reply_and_is_not_used(clock, autojump_clock):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory") as c:
        n0, n1 = c.nodes
        bob = await n1.new_agent()
        await bob.add_knowledge("day one")
        impostor = SigningKey(b"\x09" * 32)  # not a steward of this network
        answer_witness_with(
            c,
            n0,
            lambda m: sign_witness(impostor, n0.dna.hash, m.agent, m.prev, n0.now_us()),
        )
        clock[0] += DAY
        await bob.add_knowledge("from the old window")  # not in a window a forger opened
        assert "witness" not in head_action(n1, bob)
        assert n1.metrics["malformed_replies"] == 1 and n1.peer_table.malformed_count(n0.id) == 1
        # a witness for another action (bob's genesis, not his head) proves nothing either
        answer_witness_with(
            c, n0, lambda m: sign_witness(n0.witness_service.key, n0.dna.hash, m.agent, None, 5)
        )
        clock[0] += RETRY_S
        await bob.add_knowledge("still the old window")
        assert "witness" not in head_action(n1, bob)
        # ...and garbage is garbage: no answer, counted the same way
        answer_witness_with(c, n0, lambda m: {"by": b"short", "at": -1, "sig": b""})
        clock[0] += RETRY_S
        with pytest.raises(NoWitness):  # 1 RU left: this write needs the window
            await bob.add_knowledge("the old window is spent")
        assert n1.peer_table.malformed_count(n0.id) == 3


async def test_a_witness_too_far_ahead_of_this_nodes_clock_is_not_used(clock, autojump_clock):
    async with LocalCluster.open(n=2, clock=lambda: clock[0], transport="memory") as c:
        n0, n1 = c.nodes
        bob = await n1.new_agent()
        await bob.add_knowledge("day one")
        n0.clock = lambda: clock[0] + 3600  # the steward's clock runs an hour fast
        clock[0] += DAY
        await bob.add_knowledge("from the old window")
        assert "witness" not in head_action(n1, bob)
        assert n1.metrics["witnesses_ahead"] == 1
        n0.clock = lambda: clock[0] + 60  # within the DNA's skew bound: used
        clock[0] += RETRY_S
        await bob.add_knowledge("a new window")
        assert head_action(n1, bob)["witness"]["at"] == int((clock[0] + 60) * 1_000_000)


# -- b. free agents: under `membrane: invite` only a steward's single-use invite admits one
async def test_an_invite_made_on_one_node_admits_one_agent_on_another(clock, autojump_clock):
    async with LocalCluster.open(
        n=3, clock=lambda: clock[0], transport="memory", dna={"membrane": "invite"}
    ) as c:
        n0, n1, n2 = c.nodes
        assert all(n.dna.membrane == "invite" for n in c.nodes)
        invite = await n0.steward.invite(note="for bob")
        bob = await n1.new_agent(invite=invite)
        g = n1.store.chain(pub(bob))[0].action
        assert g["witness"]["by"] == pub(n0.steward) and g["invite"]["body"]["note"] == "for bob"
        await bob.add_knowledge("bob was invited")
        before = (set(n2.cells), set(n2.store.authors()))
        with pytest.raises(InviteUsed):
            await n2.new_agent(invite=invite)
        with pytest.raises(NotAuthorized, match="invited agents only"):
            await n2.new_agent()
        assert (set(n2.cells), set(n2.store.authors())) == before  # nothing written
        # the issuer out of reach: no agent, and the invite is still good once it is back
        later = await n0.steward.invite(note="for carol")
        c.network.partition([n0.id], [n1.id, n2.id])
        with pytest.raises(NoWitness):
            await n2.new_agent(invite=later)
        assert (set(n2.cells), set(n2.store.authors())) == before
        c.network.heal()
        carol = await n2.new_agent(invite=later)
        assert n2.store.chain(pub(carol))[0].action["witness"]["by"] == pub(n0.steward)
        await c.await_consistency(timeout=60)
        assert await budgets_everywhere(c, bob) == {(100_000 - 33_000, int(clock[0]))}


async def test_a_modified_nodes_uninvited_agents_count_nowhere(clock, autojump_clock):
    async with LocalCluster.open(
        n=3,
        clock=lambda: clock[0],
        transport="memory",
        dna={"membrane": "invite"},
        rogue={2: "sybil"},
    ) as c:
        n0, n1, n2 = c.nodes
        # what its new_agent would do, without the membrane's check
        sybils = [await sybil_agent(n2) for _ in range(3)]
        for a in sybils:
            await a.add_knowledge("free")  # its own node lets it write
            await a.transmit_understanding("free", "agents", "count")
        honest_agent = await n1.new_agent(invite=await n0.steward.invite())
        await honest_agent.add_knowledge("an invited write")
        c.accountable = [n0, n1]  # node 2's agents are never held: it cannot converge
        await c.await_consistency(timeout=120)
        for honest in (n0, n1):
            assert n0.dht.records(pub(honest_agent), 0, 8)
            for a in sybils:
                assert pub(a) not in honest.chains and not honest.dht.records(pub(a), 0, 8)
                with pytest.raises(UnknownAgent):
                    await honest.get_budget_state(a.agent_id)
        assert not any(n.warrants() for n in c.nodes)  # refused, never warranted
        assert all(h.metrics["ops_rejected"] >= len(sybils) for h in (n0, n1))  # they got them


async def test_invites_and_witnesses_over_real_libp2p():
    """Real libp2p hosts, real time: every wait is on a condition, bounded by a timeout."""
    t = [float(1_730_678_400)]
    async with LocalCluster.open(n=3, clock=lambda: t[0], dna={"membrane": "invite"}) as c:
        n0, n1, n2 = c.nodes
        invite = await n0.steward.invite(note="x")
        bob = await n1.new_agent(invite=invite)
        with pytest.raises(InviteUsed):
            await n2.new_agent(invite=invite)
        await bob.add_knowledge("day one")
        t[0] += DAY
        await bob.add_knowledge("day two")
        assert head_action(n1, bob)["witness"]["by"] == pub(n0.steward)
        await c.await_consistency(timeout=20)
        assert await budgets_everywhere(c, bob) == {(67_000, int(t[0]))}


# -- the app socket and the command line
async def test_invites_over_the_app_socket_and_the_cli(tmp_path):
    """A steward's invite made over node 0's socket (the SDK, then `budgetnode invite --url`)
    admits a new agent over node 1's (`AgentClient.connect(..., invite=)`, then `budgetnode
    new-agent --url --invite`); each refusal arrives as its own error, and `max_agents` caps a
    node. Real sockets, so real time; every wait is bounded."""
    from test_app import bn  # the CLI in a subprocess, off the event loop

    from node.app.server import AppServer
    from node.sdk import AgentClient

    async with LocalCluster.open(n=2, transport="memory", dna={"membrane": "invite"}) as c:
        n0, n1 = c.nodes
        async with trio.open_nursery() as nursery:
            s0, s1 = [await nursery.start(AppServer(n).serve, "127.0.0.1", 0) for n in c.nodes]
            with trio.fail_after(60):
                steward = AgentClient.connect(s0.app_url, token=s0.token, agent=n0.steward.agent_id)
                async with steward as st:
                    invite = await st.invite(note="over the socket")
                async with AgentClient.connect(s1.app_url, token=s1.token, invite=invite) as bob:
                    await bob.add_knowledge("admitted over the socket")
                assert bob.agent_id in n1.agents()
                with pytest.raises(InviteUsed):
                    async with AgentClient.connect(s1.app_url, token=s1.token, invite=invite):
                        pass
                with pytest.raises(NotAuthorized, match="invited agents only"):
                    async with AgentClient.connect(s1.app_url, token=s1.token):
                        pass
                url0 = ("--url", s0.app_url, "--token", s0.token)
                text = (await bn("invite", *url0, "--note", "from the cli")).stdout.strip()
                assert text.startswith("inv_") and text != invite
                url1 = ("--url", s1.app_url, "--token", s1.token)
                carol = (await bn("new-agent", *url1, "--invite", text)).stdout.strip()
                assert carol in n1.agents()
                used = await bn("new-agent", *url1, "--invite", text, check=False)
                assert used.returncode == 1 and used.stderr.startswith("E_INVITE_USED: ")
                assert len(used.stderr.strip().splitlines()) == 1
                none = await bn("invite", *url1, check=False)  # node 1 holds no steward
                assert none.returncode == 1 and none.stderr.startswith("E_NOT_AUTHORIZED: ")
                n1.max_agents = len(n1.cells)  # as `up --max-agents` sets it
                extra = await bn(
                    "new-agent", *url1, "--invite", await n0.steward.invite(), check=False
                )
                assert extra.returncode == 1 and "at most 2 agents" in extra.stderr
            nursery.cancel_scope.cancel()


def test_cli_init_membrane_invite_and_new_agent_with_an_invite(tmp_path):
    from test_cli import bn

    d = str(tmp_path / "node")
    bn("init", "--path", d, "--membrane", "invite")
    refused = bn("new-agent", "--path", d, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("E_NOT_AUTHORIZED: ")
    invite = bn("invite", "--path", d, "--note", "bob").stdout.strip()
    agent = bn("new-agent", "--path", d, "--invite", invite).stdout.strip()
    assert agent.startswith("ag")
    again = bn("new-agent", "--path", d, "--invite", invite, check=False)
    assert again.returncode == 1 and again.stderr.startswith("E_INVITE_USED: ")
    other = bn("init", "--path", d, "--membrane", "open", check=False)
    assert other.returncode == 1 and other.stderr.startswith("E_WRONG_NETWORK: ")
    bad = bn("up", "--max-agents", "0", check=False)
    assert bad.returncode == 2 and "at least 1" in bad.stderr


async def test_up_max_agents_caps_the_agents_a_node_creates(tmp_path):
    import json
    import signal
    import subprocess
    import sys

    from node.sdk import AgentClient

    p = await trio.lowlevel.open_process(
        [sys.executable, "-m", "node.cli", "up", "--listen", "/ip4/127.0.0.1/tcp/0"]
        + ["--path", str(tmp_path / "n"), "--max-agents", "2", "--json"],
        stdout=subprocess.PIPE,
    )
    try:
        with trio.fail_after(60):
            line = b""
            while not line.endswith(b"\n"):  # the node is up once it prints its line
                chunk = await p.stdout.receive_some(4096)
                assert chunk, "`budgetnode up` exited before it printed its line"
                line += chunk
            node = json.loads(line)["nodes"][0]
            assert len(node["agents"]) == 1  # its steward, which counts
            async with AgentClient.connect(node["app_url"], token=node["token"]) as a:
                await a.add_knowledge("the one agent left room for")
            with pytest.raises(NotAuthorized, match="at most 2 agents"):
                async with AgentClient.connect(node["app_url"], token=node["token"]):
                    pass
    finally:
        p.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await p.wait() == 0
