"""Time witnesses and invites (node/core/witness.py): the validation rules on hand-built chains,
and the single-node surface (invites, rules, a node that reaches no steward)."""

import pytest

from node.core.action import Signed
from node.core.crypto import from_text
from node.core.dna import Dna
from node.core.errors import (
    InvalidChain,
    InvalidInput,
    InviteUsed,
    NotAuthorized,
    NoWitness,
    WrongNetwork,
)
from node.core.validate import validate_chain, validate_genesis
from node.core.warrant import proves
from node.core.witness import invite_hash, invite_text, make_invite, parse_invite, sign_witness
from node.sdk import LocalNode

from chainkit import ALICE, BOB, DAY_US, DNA, MALLORY, STEWARD, T0, US, Chain, key
from conftest import START
from zomes import APP

INVITE_DNA = Dna.for_app(APP, stewards=(STEWARD.public,), membrane="invite")


def rejects(actions, reason, seq, dna=DNA):
    with pytest.raises(InvalidChain) as ei:
        validate_chain(actions, dna, APP)
    assert (ei.value.reason, ei.value.seq) == (reason, seq), str(ei.value)
    return ei.value


def spent_chain() -> Chain:
    """Alice's chain with 99 of her 100 RU spent in the window opened at genesis."""
    c = Chain()
    for i in range(3):
        c.create(ts=T0 + (i + 1) * US)
    assert c.state.remaining_mru == 1_000
    return c


def next_create(c: Chain, ts: int, **budget) -> dict:
    a, _ = c.create_action("edge", {"from": b"\x01" * 32, "to": b"\x02" * 32, "relation": "r"}, ts)
    a["budget"].update(budget)
    return a


# ---------------------------------------------------------------- windows


def test_a_witnessed_action_opens_the_window_at_the_witness_time():
    c = spent_chain()
    ts = T0 + 3 * DAY_US
    a = next_create(c, ts)
    assert a["witness"]["at"] == ts and a["budget"]["ws"] == ts and a["budget"]["rem"] == 97_000
    c.append(a)
    assert validate_chain(c.actions, DNA, APP).budget.window_start_us == ts


def test_the_backdating_attack_opening_windows_at_the_authors_word_is_refused():
    # the attack: writes stamped a day apart, each opening a window nobody witnessed
    c = spent_chain()
    a = next_create(c, T0 + DAY_US)
    del a["witness"]
    e = rejects(c.with_(c.signed(a)), "unwitnessed_window", 4)
    assert proves(e.reason)  # the author signed it: warranted


def test_without_a_witness_the_old_window_goes_on_past_its_end():
    c = spent_chain()
    late = T0 + 5 * DAY_US
    a = next_create(c, late, ws=T0, rem=-2_000)
    del a["witness"]
    # it spends from the old window, which has 1 RU left: an edge (3 RU) over-spends it
    rejects(c.with_(c.signed(a)), "over_spend", 4)
    a = c.charge_action(1, late)  # 0.1 RU fits the old window
    del a["witness"]
    a["budget"].update(ws=T0, rem=900)
    validate_chain(c.with_(c.signed(a)), DNA, APP)


def test_a_witness_by_anyone_but_a_steward_is_refused():
    c = spent_chain()
    a = next_create(c, T0 + DAY_US)
    a["witness"] = sign_witness(MALLORY, DNA.hash, ALICE.public, c.head.hash, T0 + DAY_US)
    rejects(c.with_(c.signed(a)), "bad_witness", 4)


@pytest.mark.parametrize("what", ["prev", "agent", "dna", "at"])
def test_a_witness_signed_for_something_else_is_refused(what):
    c = spent_chain()
    at = T0 + DAY_US
    args = {"dna": DNA.hash, "agent": ALICE.public, "prev": c.head.hash, "at": at}
    args[what] = {"prev": c.actions[-2].hash, "agent": BOB.public, "dna": b"\x00" * 32}.get(
        what, at + 1
    )
    a = next_create(c, at)
    a["witness"] = sign_witness(STEWARD, args["dna"], args["agent"], args["prev"], args["at"])
    if what == "at":  # signed for another time than the one it claims
        a["witness"]["at"] = at
    rejects(c.with_(c.signed(a)), "bad_witness", 4)


def test_a_witness_before_the_window_ends_is_an_early_reset():
    c = spent_chain()
    at = T0 + DAY_US - 1
    a = next_create(c, at + 10)
    a["witness"] = sign_witness(STEWARD, DNA.hash, ALICE.public, c.head.hash, at)
    a["budget"].update(ws=at, rem=97_000)
    rejects(c.with_(c.signed(a)), "early_window_reset", 4)


def test_an_action_stamped_before_its_witness_is_refused():
    c = spent_chain()
    at = T0 + DAY_US + 50 * US
    a = next_create(c, at - US)
    a["witness"] = sign_witness(STEWARD, DNA.hash, ALICE.public, c.head.hash, at)
    a["budget"].update(ws=at)
    rejects(c.with_(c.signed(a)), "timestamp_before_window", 4)


@pytest.mark.parametrize(
    "bad",
    [
        "not a map",
        {"by": STEWARD.public, "at": 1},
        {"by": STEWARD.public, "at": -1, "sig": b"\x00" * 64},
        {"by": b"\x01", "at": 1, "sig": b"\x00" * 64},
        {"by": STEWARD.public, "at": True, "sig": b"\x00" * 64},
        {"by": STEWARD.public, "at": 1, "sig": b"\x00" * 64, "extra": 1},
    ],
)
def test_a_malformed_witness_is_refused(bad):
    c = spent_chain()
    a = next_create(c, T0 + DAY_US)
    a["witness"] = bad
    rejects(c.with_(c.signed(a)), "malformed", 4)


# ---------------------------------------------------------------- invites at genesis


def genesis(k=ALICE, dna=INVITE_DNA, ts=T0, **extra) -> Signed:
    a = {"type": "genesis", "author": k.public, "seq": 0, "prev": None, "ts": ts, "dna": dna.hash}
    a.update(extra)
    return Signed.sign(a, k)


def invited(k=ALICE, issuer=STEWARD, witness_by=STEWARD, at=T0, dna=INVITE_DNA, note="hi"):
    inv = make_invite(issuer, dna.hash, b"\x07" * 16, note, at)
    w = sign_witness(witness_by, dna.hash, k.public, None, at, invite_hash(inv))
    return inv, w


def test_an_invited_genesis_starts_its_window_at_the_witness_time():
    inv, w = invited(at=T0 + 5 * US)
    cs = validate_genesis(genesis(ts=T0 + 6 * US, invite=inv, witness=w), INVITE_DNA)
    assert cs.budget.window_start_us == T0 + 5 * US


def test_an_uninvited_genesis_is_refused_and_not_warranted():
    e = pytest.raises(InvalidChain, validate_genesis, genesis(), INVITE_DNA).value
    assert e.reason == "not_invited" and not proves(e.reason)
    # a steward needs no invite; an open network needs none
    validate_genesis(genesis(k=STEWARD), INVITE_DNA)
    validate_genesis(genesis(dna=DNA), DNA)


@pytest.mark.parametrize(
    "case,reason",
    [
        ("issuer not a steward", "not_invited"),
        ("no witness", "not_invited"),
        ("witness by another steward", "bad_witness"),
        ("witness over another invite", "bad_witness"),
        ("invite for another network", "wrong_dna"),
        ("stamped before the witness", "timestamp_before_window"),
    ],
)
def test_a_bad_invite_is_refused(case, reason):
    other = key(9)
    dna2 = Dna.for_app(APP, stewards=(STEWARD.public, other.public), membrane="invite")
    dna = INVITE_DNA
    inv, w = invited()
    ts = T0
    if case == "issuer not a steward":
        inv, w = invited(issuer=MALLORY, witness_by=MALLORY)
    elif case == "no witness":
        w = None
    elif case == "witness by another steward":
        dna = dna2
        inv, w = invited(witness_by=other, dna=dna2)
    elif case == "witness over another invite":
        w = invited(note="another")[1]
    elif case == "invite for another network":
        inv = invited(dna=dna2)[0]
    else:
        ts = T0 - 1
    extra = {"invite": inv} if w is None else {"invite": inv, "witness": w}
    with pytest.raises(InvalidChain) as ei:
        validate_genesis(genesis(dna=dna, ts=ts, **extra), dna)
    assert ei.value.reason == reason, str(ei.value)


def test_invite_text_round_trips_and_damage_is_a_clear_error():
    inv = make_invite(STEWARD, DNA.hash, b"\x01" * 16, "for the lab", T0)
    assert parse_invite(invite_text(inv)) == inv
    for bad in ["", "hello", "inv_", "inv_!!!!", "inv_" + "A" * 2000, 7, invite_text(inv)[:-6]]:
        with pytest.raises(InvalidInput):
            parse_invite(bad)
    with pytest.raises(InvalidInput):
        make_invite(STEWARD, DNA.hash, b"\x01" * 16, "x" * 257, T0)


# ---------------------------------------------------------------- the single-node surface


async def test_invite_membrane_admits_one_agent_per_invite(clock, tmp_path):
    path = str(tmp_path / "n")
    async with LocalNode.open(path, clock=lambda: clock[0], dna={"membrane": "invite"}) as node:
        assert node.dna.membrane == "invite"
        steward = node.steward
        with pytest.raises(NotAuthorized):
            await node.new_agent()
        assert len(node.agents()) == 1  # the steward only: nothing was written
        text = await steward.invite(note="for alice")
        alice = await node.new_agent(invite=text)
        with pytest.raises(InviteUsed):
            await node.new_agent(invite=text)
        with pytest.raises(InvalidInput):
            await node.new_agent(invite="inv_garbage")
        with pytest.raises(NotAuthorized):
            await alice.invite()  # only a steward invites
        assert len(node.agents()) == 2
        g = node.store.chain(from_text("agent", alice.agent_id))[0]
        assert g.action["witness"]["by"] == node.dna.stewards[0]
    # the invite stays used across a restart; the same rules reopen the network
    async with LocalNode.open(path, clock=lambda: clock[0], dna={"membrane": "invite"}) as node:
        with pytest.raises(InviteUsed):
            await node.new_agent(invite=text)
        assert len(node.agents()) == 2
    with pytest.raises(WrongNetwork):
        async with LocalNode.open(path, clock=lambda: clock[0], dna={"membrane": "open"}):
            pass


async def test_an_invite_from_another_network_is_refused(clock):
    async with LocalNode.open(clock=lambda: clock[0], dna={"membrane": "invite"}) as a:
        async with LocalNode.open(clock=lambda: clock[0], dna={"membrane": "invite"}) as b:
            text = await b.steward.invite()
            with pytest.raises(NotAuthorized):
                await a.new_agent(invite=text)
            assert len(a.agents()) == 1


@pytest.mark.parametrize(
    "rules", [{"membrane": "closed"}, {"windw_s": 60}, {"window_s": "60"}, {"stewards": []}]
)
async def test_bad_rules_are_refused(clock, rules):
    with pytest.raises(InvalidInput):
        async with LocalNode.open(clock=lambda: clock[0], dna=rules):
            pass


async def test_the_steward_witnesses_its_own_nodes_rolls(clock):
    async with LocalNode.open(clock=lambda: clock[0], dna={"window_s": 60}) as node:
        alice = await node.new_agent()
        await alice.add_knowledge(content="a")
        clock[0] += 61
        h = await alice.add_knowledge(content="b")
        s = node.store.record(from_text("action", h))[0]
        assert s.action["witness"]["at"] == int(clock[0] * US)
        assert (await alice.budget_status()).remaining_mru == 67_000


async def test_a_node_that_reaches_no_steward_keeps_the_old_window(clock, tmp_path):
    # a second node on the same network, without the steward's key and without a network
    async with LocalNode.open(str(tmp_path / "a"), clock=lambda: clock[0]) as first:
        dna = first.dna
    async with LocalNode.open(str(tmp_path / "b"), clock=lambda: clock[0], dna=dna) as node:
        assert node.witness_service is None
        alice = await node.new_agent()
        h = await alice.add_knowledge(content="k0")
        await alice.add_knowledge(content="k1")
        for i in range(3):
            await alice.create_thought_credential(title=f"t{i}", body="b")  # 96 RU spent
        clock[0] += 2 * 86_400
        pub = from_text("agent", alice.agent_id)
        head = node.store.head(pub)
        with pytest.raises(NoWitness) as ei:
            await alice.add_knowledge(content="needs the next window")
        assert ei.value.code == "E_NO_WITNESS"
        assert node.store.head(pub) == head  # nothing written
        # what fits the old window is still written, in the old window
        edge = await alice.link_edge(from_hash=h, to_hash=h, relation="again")
        assert node.store.head(pub)[1] == from_text("action", edge)
        b = node.cells[pub].state.budget
        assert (b.window_start_us, b.remaining_mru) == (START * US, 1_000)


async def test_a_node_that_reached_no_steward_asks_again_only_after_a_while(clock, tmp_path):
    async with LocalNode.open(str(tmp_path / "a"), clock=lambda: clock[0]) as first:
        dna = first.dna
    async with LocalNode.open(str(tmp_path / "b"), clock=lambda: clock[0], dna=dna) as node:
        asked = []

        async def nobody(agent, prev, invite):
            asked.append(clock[0])
            return None

        node._remote_witness = nobody
        alice = await node.new_agent()
        clock[0] += 86_400
        for _ in range(3):
            await alice.create_thought_credential(title="t", body="b")
        assert len(asked) == 1  # three writes, one round of asking
        clock[0] += 31
        await alice.create_thought_credential(title="t", body="b")
        assert len(asked) == 2
