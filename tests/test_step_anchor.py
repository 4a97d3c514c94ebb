"""Judging one step of a chain without its history: a node handed an action and the action
before it (a warrant's evidence) takes the budget the earlier one records as its starting point,
but only when it is the author-signed action the step builds on, at the seq before."""

import pytest

from chainkit import ALICE, BOB, DNA, MALLORY, T0, US, Chain, tweak
from node.core.action import Signed
from node.core.dna import Dna
from node.core.errors import InvalidChain
from node.core.validate import step_anchor, validate_chain, validate_next
from zomes import APP


def three() -> Chain:
    c = Chain(ALICE)
    c.create(ts=T0 + US)
    c.create(ts=T0 + 2 * US)
    return c


def test_a_step_is_judged_from_the_action_before_it_alone():
    c = three()
    prev, s = c.actions[-2], c.actions[-1]
    anchor = step_anchor(prev, s, DNA)
    assert anchor is not None and (anchor.seq, anchor.hash) == (prev.seq, prev.hash)
    step = validate_next(anchor, s, DNA, APP).budget
    whole = validate_chain(c.actions, DNA, APP).budget
    # what is left, and since when: the record carries these (not what was used before it)
    assert (step.window_start_us, step.remaining_mru) == (
        whole.window_start_us,
        whole.remaining_mru,
    )
    # an over-spend is caught from the step: it records more than the budget before it holds
    a, _ = c.create_action("knowledge", {"content": "x", "tags": []}, T0 + 3 * US)
    bad = c.signed(tweak(a, rem=a["budget"]["rem"] + 1))
    with pytest.raises(InvalidChain) as e:
        validate_next(step_anchor(s, bad, DNA), bad, DNA, APP)
    assert e.value.reason == "wrong_remaining"


def test_the_step_after_genesis_starts_from_the_genesis_itself():
    c = Chain(ALICE)
    s = c.create(ts=T0 + US)
    anchor = step_anchor(c.actions[0], s, DNA)
    assert anchor is not None and anchor.budget == validate_chain(c.actions[:1], DNA, APP).budget


def test_a_genesis_for_another_network_anchors_nothing():
    other = Dna.for_app(APP, stewards=(BOB.public,))
    c = Chain(ALICE, dna=other)
    s = c.create(ts=T0 + US)
    assert step_anchor(c.actions[0], s, other) is not None
    assert step_anchor(c.actions[0], s, DNA) is None


@pytest.mark.parametrize(
    "case",
    ["nothing before", "not what it builds on", "another author", "not signed by the author"],
)
def test_no_anchor_from_an_action_that_is_not_the_authors_one_before(case):
    c = three()
    _, p1, s = c.actions
    prev = {
        "nothing before": lambda: None,
        "not what it builds on": lambda: Signed.sign({**p1.action, "ts": p1.ts + 1}, ALICE),
        "another author": lambda: Signed.sign({**p1.action, "author": BOB.public}, BOB),
        "not signed by the author": lambda: Signed(
            p1.action, p1.body, MALLORY.sign(p1.body), p1.hash
        ),
    }[case]()
    assert step_anchor(prev, s, DNA) is None


@pytest.mark.parametrize(
    "spoil",
    [
        lambda a: {**a, "seq": 5},  # not the seq before
        lambda a: {k: v for k, v in a.items() if k != "budget"},  # no budget record
        lambda a: {**a, "ts": str(a["ts"])},
        lambda a: {**a, "budget": {**a["budget"], "rem": "9"}},
    ],
    ids=["not the seq before", "no budget record", "ts not an integer", "rem not an integer"],
)
def test_no_anchor_from_an_author_signed_action_before_that_records_no_usable_state(spoil):
    """The step builds on it and the author signed both: still, there is nothing to start from."""
    c = three()
    _, p1, s = c.actions
    prev = Signed.sign(spoil(p1.action), ALICE)
    s = Signed.sign({**s.action, "prev": prev.hash}, ALICE)
    assert step_anchor(prev, s, DNA) is None
