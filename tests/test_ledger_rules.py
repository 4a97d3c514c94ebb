"""The ledger's rules as pure functions (node/core/ledger.py): every malformed or refused
ledger action, fed straight to `apply`, is refused with its code and changes nothing."""

from __future__ import annotations

import pytest

from node.core import ledger as L
from node.core.action import Signed
from node.core.errors import (
    AlreadyResolved,
    BudgetError,
    BudgetExceeded,
    BudgetVoid,
    ExistsDifferent,
    InvalidInput,
    NotAuthorized,
    UnknownBudget,
)

from chainkit import ALICE, BOB, DNA, MALLORY, STEWARD

T = 1_730_678_400_000_000
WS = T


def offer(key, body: dict, seq: int = 5, ts: int = T) -> Signed:
    return Signed.sign(
        {
            "type": "ledger",
            "author": key.public,
            "seq": seq,
            "prev": b"p" * 32,
            "ts": ts,
            "ledger": body,
            "budget": {"op": "ledger", "cost": 0, "ws": WS, "rem": 0},
        },
        key,
    )


def apply(led, key, body: dict, ts: int = T, h: bytes = b"h" * 32) -> L.Ledger:
    return L.apply(led, {"ledger": body}, key.public, 9, ts, h, WS, DNA).ledger


def accept(led, key, o: Signed, **extra) -> L.Ledger:
    return apply(led, key, {"kind": "accept", "offer": [o.body, o.sig], **extra}, h=b"a" * 32)


MINT = {
    "kind": "mint",
    "to": ALICE.public,
    "name": "r",
    "amounts": {"ru": 100_000},
    "schema": {"can_fund": True, "can_delegate": True},
}


@pytest.fixture
def alice():
    """Alice's ledger holding a 100 RU root (can fund and delegate), minted by the steward."""
    m = offer(STEWARD, MINT)
    return accept(L.LEDGER0, ALICE, m), m.hash


BAD_ACTIONS = [
    ({"kind": "steal"}, InvalidInput),
    ({"kind": "mint", "to": ALICE.public, "name": "r", "amounts": [1], "schema": {}}, InvalidInput),
    (
        {"kind": "mint", "to": ALICE.public, "name": "r", "amounts": {"gold": 1}, "schema": {}},
        InvalidInput,
    ),
    (
        {"kind": "mint", "to": ALICE.public, "name": "r", "amounts": {"ru": -1}, "schema": {}},
        InvalidInput,
    ),
    (
        {"kind": "mint", "to": ALICE.public, "name": "r", "amounts": {"ru": True}, "schema": {}},
        InvalidInput,
    ),
    ({"kind": "mint", "to": ALICE.public, "name": "r", "amounts": {}, "schema": "x"}, InvalidInput),
    (
        {"kind": "mint", "to": ALICE.public, "name": "r", "amounts": {}, "schema": {"color": 1}},
        InvalidInput,
    ),
    (
        {
            "kind": "mint",
            "to": ALICE.public,
            "name": "r",
            "amounts": {},
            "schema": {"ops": ["a.b*"]},
        },
        InvalidInput,
    ),
    (
        {"kind": "mint", "to": ALICE.public, "name": "r", "amounts": {}, "schema": {"ops": []}},
        InvalidInput,
    ),
    (
        {
            "kind": "mint",
            "to": ALICE.public,
            "name": "r",
            "amounts": {},
            "schema": {"expires_at": "soon"},
        },
        InvalidInput,
    ),
    (
        {
            "kind": "mint",
            "to": ALICE.public,
            "name": "r",
            "amounts": {},
            "schema": {"can_fund": "yes"},
        },
        InvalidInput,
    ),
    ({"kind": "mint", "to": ALICE.public, "name": 5, "amounts": {}, "schema": {}}, InvalidInput),
    ({"kind": "mint", "to": b"short", "name": "r", "amounts": {}, "schema": {}}, InvalidInput),
    (
        {"kind": "mint", "to": BOB.public, "name": "r", "amounts": {}, "schema": {}, "x": 1},
        None,
    ),  # an unknown extra field is carried, not a refusal
]


@pytest.mark.parametrize(("body", "error"), BAD_ACTIONS)
def test_malformed_ledger_actions_are_refused(body, error):
    if error is None:
        assert apply(L.LEDGER0, STEWARD, body).minted == {}
        return
    with pytest.raises(error):
        apply(L.LEDGER0, STEWARD, body)


def test_the_recipient_is_re_derived_never_trusted(alice):
    led, root = alice
    with pytest.raises(InvalidInput, match="offers to"):  # a revoke of its own root names none
        apply(led, ALICE, {"kind": "revoke", "target": root, "returned": {}, "to": BOB.public})


def test_transfers_holds_and_revokes_refused(alice):
    led, root = alice
    card = {"kind": "card", "parent": root, "to": BOB.public, "name": "c", "schema": {}}
    with pytest.raises(InvalidInput, match="max_spend"):
        apply(led, ALICE, {**card, "amounts": {}})
    narrow = {
        "kind": "fund",
        "parent": root,
        "to": BOB.public,
        "name": "n",
        "amounts": {"ru": 10},
        "schema": {"ops": ["memory.*"], "expires_at": 10**9},
    }
    led2 = apply(led, ALICE, narrow, h=b"n" * 32)
    assert led2.children[b"n" * 32].amounts == {"ru": 10}
    hold = {"kind": "hold", "budget": root, "amounts": {"ru": 5}, "task_id": "t"}
    with pytest.raises(InvalidInput):  # a timeout in the past
        apply(led, ALICE, {**hold, "expires_us": T - 1})
    held = apply(led, ALICE, {**hold, "expires_us": T + 10})
    with pytest.raises(ExistsDifferent):
        apply(held, ALICE, {**hold, "expires_us": T + 10})
    with pytest.raises(UnknownBudget):
        apply(held, ALICE, {"kind": "cancel", "task_id": "nope"})
    with pytest.raises(InvalidInput, match="budget of its hold"):
        apply(
            held,
            ALICE,
            {
                "kind": "settle",
                "task_id": "t",
                "budget": b"x" * 32,
                "amounts": {},
                "to": BOB.public,
            },
        )
    with pytest.raises(NotAuthorized):
        apply(led, ALICE, {"kind": "revoke", "target": b"z" * 32})
    void = apply(led, ALICE, {"kind": "revoke", "target": root, "returned": {}})
    with pytest.raises(BudgetVoid):
        apply(void, ALICE, {"kind": "revoke", "target": root, "returned": {}})
    with pytest.raises(InvalidInput, match="re-derived"):
        apply(led, ALICE, {"kind": "revoke", "target": root, "returned": {"ru": 1}})


def test_offers_refused_on_acceptance(alice):
    led, root = alice
    m = offer(STEWARD, MINT)
    with pytest.raises(AlreadyResolved):
        accept(led, ALICE, m)
    with pytest.raises(InvalidInput):  # made to alice, taken by bob
        accept(L.LEDGER0, BOB, m)
    with pytest.raises(NotAuthorized):  # a mint by someone who is no steward
        accept(L.LEDGER0, ALICE, offer(MALLORY, MINT))
    with pytest.raises(InvalidInput):
        apply(L.LEDGER0, ALICE, {"kind": "accept", "offer": "x"})
    forged = offer(STEWARD, MINT)
    bad = Signed(forged.action, forged.body, bytes(64), forged.hash)
    with pytest.raises(NotAuthorized, match="signature"):
        accept(L.LEDGER0, ALICE, bad)
    with pytest.raises(InvalidInput, match="not an offer"):
        accept(L.LEDGER0, ALICE, offer(BOB, {"kind": "hold", "to": ALICE.public}))
    with pytest.raises(InvalidInput):  # a fund offer that carries a return
        accept(L.LEDGER0, ALICE, offer(STEWARD, MINT, seq=6), returned={"ru": 1})
    # a revoke notice from someone who did not fund it
    with pytest.raises(NotAuthorized):
        accept(
            led,
            ALICE,
            offer(BOB, {"kind": "revoke", "target": root, "to": ALICE.public, "amounts": {}}),
        )
    # a notice for an offer never taken returns all it moved, and the offer can never be taken
    never = offer(
        BOB, {"kind": "revoke", "target": b"q" * 32, "to": ALICE.public, "amounts": {"ru": 7}}
    )
    with pytest.raises(InvalidInput):
        accept(L.LEDGER0, ALICE, never, returned={}, to=BOB.public)
    led3 = accept(L.LEDGER0, ALICE, never, returned={"ru": 7}, to=BOB.public)
    assert b"q" * 32 in led3.accepted


def test_returns_are_bounded_by_what_was_moved(alice):
    led, root = alice
    fund = {
        "kind": "fund",
        "parent": root,
        "to": BOB.public,
        "name": "c",
        "amounts": {"ru": 10_000},
        "schema": {},
    }
    led = apply(led, ALICE, fund, h=b"c" * 32)
    too_much = offer(
        BOB, {"kind": "revoke", "target": b"c" * 32, "returned": {"ru": 10_001}, "to": ALICE.public}
    )
    with pytest.raises(BudgetExceeded):
        accept(led, ALICE, too_much)
    stranger = offer(
        MALLORY, {"kind": "revoke", "target": b"c" * 32, "returned": {}, "to": ALICE.public}
    )
    with pytest.raises(NotAuthorized):
        accept(led, ALICE, stranger)
    back = offer(
        BOB, {"kind": "revoke", "target": b"c" * 32, "returned": {"ru": 4_000}, "to": ALICE.public}
    )
    after = accept(led, ALICE, back)
    assert after.budgets[root].available == {"ru": 94_000}
    assert after.children[b"c" * 32].returned == {"ru": 4_000}


def test_every_refusal_changes_nothing(alice):
    led, root = alice
    before = L.dump(led)
    for body in (
        {
            "kind": "fund",
            "parent": root,
            "to": BOB.public,
            "name": "x",
            "amounts": {"ru": 10**9},
            "schema": {},
        },
        {"kind": "cancel", "task_id": "none"},
    ):
        with pytest.raises(BudgetError):
            apply(led, ALICE, body)
    assert L.dump(led) == before
    assert L.load(L.dump(led)) == led


@pytest.mark.parametrize("decision", [None, "maybe", 1])
def test_a_vote_taken_without_a_valid_decision_is_refused(alice, decision):
    """The vote a proposer's chain embeds is checked as its voter's chain checks it: a
    hostile proposer embedding one without a decision gets a refusal, not a KeyError."""
    led, root = alice
    proposal = {
        "kind": "propose",
        "entity": ["agent", BOB.public],
        "holder": BOB.public,
        "amounts": {"ru": 5_000},
        "justification": "j",
        "evidence": [b"e" * 32],
        "from_budget": root,
    }
    led = apply(led, ALICE, proposal, h=b"p" * 32)
    scores = {"evidence": 900, "novelty": 900, "alignment": 900, "community": 900}
    vote = {"kind": "vote", "proposal": b"p" * 32, "scores": scores, "to": ALICE.public}
    if decision is not None:
        vote["decision"] = decision
    with pytest.raises(InvalidInput, match="decision"):
        accept(led, ALICE, offer(STEWARD, vote))
    approved = accept(led, ALICE, offer(STEWARD, {**vote, "decision": "approve"}))
    assert approved.gov.proposals[b"p" * 32].state == "approved"
