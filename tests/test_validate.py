"""The chain validator: every rejection reason, each proven by a hand-crafted chain.

Bad actions are re-signed with the author's real key wherever the point is that the
*content* breaks a rule, so the budget/integrity rule is what catches them.
"""

from __future__ import annotations

import copy

import pytest

from node.core.action import Signed, entry_bytes, grant_hash
from node.core.crypto import blake2b_256
from node.core.dna import Dna
from node.core.encoding import encode
from node.core.errors import InvalidChain
from node.core.validate import validate_chain
from zomes import APP

from chainkit import (
    ALICE,
    BOB,
    DAY_US,
    DNA,
    KNOWLEDGE,
    MALLORY,
    STEWARD,
    T0,
    US,
    Chain,
    make_grant,
    tweak,
)


def rejects(actions, reason, seq, *, dna=DNA, entries=None, now_us=None) -> InvalidChain:
    with pytest.raises(InvalidChain) as ei:
        validate_chain(actions, dna, APP, entries, now_us)
    assert (ei.value.reason, ei.value.seq) == (reason, seq), str(ei.value)
    assert ei.value.code == "E_INVALID_CHAIN"
    return ei.value


def ok(chain: Chain, **kw):
    return validate_chain(chain.actions, chain.dna, APP, chain.entries, **kw)


def two_knowledge() -> Chain:
    c = Chain()
    c.create(ts=T0 + 1 * US)
    c.create(content={"content": "fire is hot", "tags": []}, ts=T0 + 2 * US)
    return c


# ---------------------------------------------------------------- good chains


def test_good_chain_with_grants_window_resets_and_per_result_charges():
    c = Chain()
    c.create(ts=T0 + 10 * US)  # 100 -> 67
    c.charge(7, ts=T0 + 11 * US)  # 0.7 RU -> 66.3
    c.create(
        "understanding",
        {"subject": "s", "predicate": "p", "object": "o", "context": None},
        ts=T0 + 12 * US,
    )  # 3 -> 63.3
    g, sig = make_grant(ALICE.public, 150_000, nonce=b"\x01" * 16)
    c.claim(g, sig, ts=T0 + 13 * US)  # capped at 200: +136.7
    assert c.actions[-1].action["budget"]["granted"] == 136_700
    assert c.actions[-1].action["budget"]["rem"] == 200_000
    for i in range(6):  # 6 * 33 = 198 -> 2
        c.create(content={"content": f"fact {i}", "tags": []}, ts=T0 + (20 + i) * US)
    assert c.state.remaining_mru == 2_000
    c.charge(20, ts=T0 + 30 * US)  # exactly 2 RU -> 0
    assert c.state.remaining_mru == 0
    # the next window opens exactly one day after the first one's start
    c.create(ts=T0 + DAY_US)
    assert (c.state.window_start_us, c.state.remaining_mru) == (T0 + DAY_US, 67_000)
    # a second grant in the new window, then a third window opened late
    g2, sig2 = make_grant(ALICE.public, 10_000, nonce=b"\x02" * 16)
    c.claim(g2, sig2, ts=T0 + DAY_US + US)
    c.create(
        "edge",
        {"from": b"\x01" * 32, "to": b"\x02" * 32, "relation": "rel"},
        ts=T0 + 3 * DAY_US + 5 * US,
    )
    c.create("thought_credential", {"title": "t", "body": "b"}, ts=T0 + 3 * DAY_US + 6 * US)

    cs = ok(c, now_us=T0 + 3 * DAY_US + 6 * US)
    assert cs.seq == len(c.actions) - 1
    assert cs.hash == c.head.hash
    assert cs.budget.window_start_us == T0 + 3 * DAY_US + 5 * US
    assert cs.budget.remaining_mru == 100_000 - 3_000 - 10_000
    assert cs.claimed == {grant_hash(g), grant_hash(g2)}
    # a header-only validator (no entries) derives the same budget
    assert validate_chain(c.actions, DNA, APP).budget == cs.budget


def test_genesis_only_chain_is_valid_and_starts_a_full_window():
    c = Chain()
    cs = ok(c)
    assert cs.seq == 0 and cs.budget.remaining_mru == DNA.base_mru
    assert cs.budget.window_start_us == T0


def test_steward_chain_with_free_allocation_records_validates():
    s = Chain(STEWARD)
    g, sig = make_grant(ALICE.public, 50_000)
    s.create("allocation", {"grant": g, "sig": sig}, ts=T0 + US)
    s.create("allocation", {"grant": g, "sig": sig}, ts=T0 + 2 * US)
    assert ok(s).budget.remaining_mru == DNA.base_mru


def test_empty_chain_is_refused():
    with pytest.raises(InvalidChain) as ei:
        validate_chain([], DNA, APP)
    assert ei.value.reason == "empty_chain"


# ---------------------------------------------------------------- signatures & linkage


def test_bad_signature_tampered_body():
    c = two_knowledge()
    good = c.actions[2]
    # a body that claims more budget is left, carrying the old signature
    a = tweak(good.action, rem=good.action["budget"]["rem"] + 33_000)
    body = encode(a)
    forged = Signed(a, body, good.sig, blake2b_256(body))
    rejects(c.actions[:2] + [forged], "bad_signature", 2)


def test_bad_signature_signed_by_another_key():
    c = two_knowledge()
    a, body = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    rejects(c.with_(c.signed(a, MALLORY)), "bad_signature", 3)


def test_bad_signature_on_genesis():
    c = Chain()
    g = c.actions[0]
    rejects([Signed(g.action, g.body, MALLORY.sign(g.body), g.hash)], "bad_signature", 0)


def test_bad_seq_skipping_ahead():
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    a["seq"] = 4
    rejects(c.with_(c.signed(a)), "bad_seq", 4)


def test_bad_seq_replayed_action():
    c = two_knowledge()
    rejects(c.actions + [c.actions[1]], "bad_seq", 1)


def test_bad_prev():
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    a["prev"] = c.actions[1].hash  # a fork off an older action
    rejects(c.with_(c.signed(a)), "bad_prev", 3)
    a["prev"] = b"\x00" * 32
    rejects(c.with_(c.signed(a)), "bad_prev", 3)


def test_wrong_author():
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    a["author"] = BOB.public
    rejects(c.with_(Signed.sign(a, BOB)), "wrong_author", 3)


def test_timestamp_backwards():
    c = two_knowledge()
    a, _ = c.create_action("thought_credential", {"title": "t", "body": "b"}, T0 + 2 * US - 1)
    rejects(c.with_(c.signed(a)), "timestamp_backwards", 3)
    # equal timestamps are fine
    a, body = c.create_action("thought_credential", {"title": "t", "body": "b"}, T0 + 2 * US)
    c.append(a, body)
    ok(c)


def test_future_timestamp_only_with_a_clock():
    c = two_knowledge()
    now = T0 + 10 * US
    a, body = c.create_action("knowledge", KNOWLEDGE, now + DNA.max_future_us + 1)
    bad = c.with_(c.signed(a))
    rejects(bad, "future_timestamp", 3, now_us=now)
    validate_chain(bad, DNA, APP)  # without a clock the rule is not applied
    a, body = c.create_action("knowledge", KNOWLEDGE, now + DNA.max_future_us)
    validate_chain(c.with_(c.signed(a)), DNA, APP, now_us=now)  # exactly at the limit: fine


# ---------------------------------------------------------------- genesis


def test_wrong_dna_in_genesis():
    other = Dna.for_app(APP, stewards=(STEWARD.public,), base_mru=1_000_000)
    c = Chain(dna=other)
    rejects(c.actions, "wrong_dna", 0)
    ok(c)  # the same chain is fine on its own network


def test_bad_genesis_first_action_not_genesis():
    c = two_knowledge()
    rejects(c.actions[1:], "bad_genesis", 1)


def test_bad_genesis_with_prev_or_seq():
    c = Chain()
    a = dict(c.actions[0].action, prev=b"\x00" * 32)
    rejects([c.signed(a)], "bad_genesis", 0)
    a = dict(c.actions[0].action, seq=1)
    rejects([c.signed(a)], "bad_genesis", 1)


# ---------------------------------------------------------------- the budget rules


def test_wrong_cost_knowledge_recorded_as_cheap():
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    # claims it cost 3 RU, and records a remaining consistent with that lie
    a = tweak(a, cost=3_000, rem=c.state.remaining_mru - 3_000)
    rejects(c.with_(c.signed(a)), "wrong_cost", 3)


def test_wrong_cost_per_result_charge_undercounted():
    c = two_knowledge()
    a = c.charge_action(50, T0 + 3 * US)
    a = tweak(a, cost=100, rem=c.state.remaining_mru - 100)  # paid for one result, got 50
    rejects(c.with_(c.signed(a)), "wrong_cost", 3)


def test_wrong_cost_claim_must_be_free():
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 10_000)
    a = tweak(c.claim_action(g, sig, T0 + 3 * US), cost=1)
    rejects(c.with_(c.signed(a)), "wrong_cost", 3)


def test_wrong_remaining_inflated():
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    assert a["budget"]["rem"] == 1_000
    rejects(c.with_(c.signed(tweak(a, rem=34_000))), "wrong_remaining", 3)
    rejects(c.with_(c.signed(tweak(a, rem=999))), "wrong_remaining", 3)  # any mismatch


def test_wrong_remaining_claim_above_cap():
    c = Chain()
    g, sig = make_grant(ALICE.public, 200_000)
    a = c.claim_action(g, sig, T0 + US)
    assert a["budget"]["granted"] == 100_000 and a["budget"]["rem"] == 200_000
    # pretends the full 200 RU was granted, landing at 300 RU
    rejects(c.with_(c.signed(tweak(a, granted=200_000, rem=300_000))), "wrong_remaining", 1)
    # honest `granted`, inflated remaining
    rejects(c.with_(c.signed(tweak(a, rem=300_000))), "wrong_remaining", 1)
    # `granted` missing entirely
    b = copy.deepcopy(a)
    del b["budget"]["granted"]
    rejects(c.with_(c.signed(b)), "wrong_remaining", 1)


def test_early_window_reset():
    c = Chain()
    for i in range(3):
        c.create(ts=T0 + (i + 1) * US)
    assert c.state.remaining_mru == 1_000
    ts = T0 + DAY_US - 1  # one microsecond before the window may reset
    body = entry_bytes("thought_credential", {"title": "t", "body": "b"})
    a = {
        "type": "create",
        **c.header(ts),
        "entry_type": "thought_credential",
        "entry": blake2b_256(body),
        "budget": {
            "op": "create_thought_credential",
            "cost": 10_000,
            "ws": ts,
            "rem": DNA.base_mru - 10_000,
        },
    }
    rejects(c.with_(c.signed(a)), "early_window_reset", 4)
    # one microsecond later the very same reset is legitimate
    a, body = c.create_action("thought_credential", {"title": "t", "body": "b"}, T0 + DAY_US)
    assert a["budget"]["ws"] == T0 + DAY_US and a["budget"]["rem"] == 90_000
    c.append(a, body)
    ok(c)


def test_wrong_window_not_reset_when_it_must_be():
    c = two_knowledge()
    ts = T0 + DAY_US + 5 * US
    a, _ = c.create_action("edge", {"from": b"\x01" * 32, "to": b"\x02" * 32, "relation": "r"}, ts)
    assert a["budget"]["ws"] == ts
    # keeps the old (exhausted-ish) window instead of opening the new one
    a = tweak(a, ws=T0, rem=c.state.remaining_mru - 3_000)
    rejects(c.with_(c.signed(a)), "wrong_window", 3)
    # and a window starting anywhere but the opening action's timestamp
    a = tweak(a, ws=T0 + DAY_US, rem=97_000)
    rejects(c.with_(c.signed(a)), "wrong_window", 3)


def test_over_spend_create():
    c = Chain()
    for i in range(3):
        c.create(ts=T0 + (i + 1) * US)
    # a fourth knowledge entry in the window: honest cost, the arithmetic it implies
    a = {
        "type": "create",
        **c.header(T0 + 4 * US),
        "entry_type": "knowledge",
        "entry": blake2b_256(entry_bytes("knowledge", KNOWLEDGE)),
        "budget": {"op": "add_knowledge", "cost": 33_000, "ws": T0, "rem": 1_000 - 33_000},
    }
    rejects(c.with_(c.signed(a)), "over_spend", 4)
    # also when it records a plausible non-negative remaining
    rejects(c.with_(c.signed(tweak(a, rem=0))), "over_spend", 4)


def test_over_spend_per_result_charge_by_one_result():
    c = Chain()
    for i in range(3):
        c.create(ts=T0 + (i + 1) * US)
    c.charge(9, ts=T0 + 4 * US)  # 1.0 - 0.9 = 0.1 RU left
    a = c.charge_action(1, T0 + 5 * US)  # exactly affordable
    assert a["budget"]["rem"] == 0
    a2 = {
        "type": "charge",
        **c.header(T0 + 5 * US),
        "count": 2,
        "budget": {"op": "recall_understandings", "cost": 200, "ws": T0, "rem": -100},
    }
    rejects(c.with_(c.signed(a2)), "over_spend", 5)
    c.append(a)
    ok(c)


def test_not_paid_create_without_budget_record():
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    del a["budget"]
    rejects(c.with_(c.signed(a)), "not_paid", 3)
    a["budget"] = "33 RU, honest"
    rejects(c.with_(c.signed(a)), "not_paid", 3)


def test_not_paid_by_the_wrong_op():
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    # a 33 RU knowledge entry paid as a 3 RU edge, with consistent arithmetic
    a = tweak(a, op="link_edge", cost=3_000, rem=c.state.remaining_mru - 3_000)
    rejects(c.with_(c.signed(a)), "not_paid", 3)
    # paid as the free allocation
    a = tweak(a, op="allocate_budget", cost=0, rem=c.state.remaining_mru)
    rejects(c.with_(c.signed(a)), "not_paid", 3)


def test_not_paid_charge_for_a_non_per_result_op():
    c = two_knowledge()
    a = c.charge_action(1, T0 + 3 * US)
    a = tweak(a, op="claim_allocation", cost=0, rem=c.state.remaining_mru)
    rejects(c.with_(c.signed(a)), "not_paid", 3)


def test_not_paid_claim_recorded_as_another_op():
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 10_000)
    a = tweak(c.claim_action(g, sig, T0 + 3 * US), op="allocate_budget")
    rejects(c.with_(c.signed(a)), "not_paid", 3)


def test_non_steward_allocation_record_is_not_free():
    """An allocation entry costs nothing because only a steward writes one; anyone else
    writing them would get unlimited free writes."""
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 10_000, signer=MALLORY)
    a, body = c.create_action("allocation", {"grant": g, "sig": sig}, T0 + 3 * US)
    assert a["budget"]["cost"] == 0
    rejects(c.with_(c.signed(a)), "not_paid", 3)


def test_unknown_entry_type():
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    a["entry_type"] = "gold"
    rejects(c.with_(c.signed(a)), "unknown_entry_type", 3)


def test_unknown_action_type():
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    a["type"] = "delete"
    rejects(c.with_(c.signed(a)), "unknown_action_type", 3)


# ---------------------------------------------------------------- grants


def test_grant_claimed_twice():
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 10_000)
    c.claim(g, sig, ts=T0 + 3 * US)
    ok(c)
    a = c.claim_action(g, sig, T0 + 4 * US)
    rejects(c.with_(c.signed(a)), "grant_claimed_twice", 4)
    # a second grant of the same amount but a different nonce is a different grant
    g2, sig2 = make_grant(ALICE.public, 10_000, nonce=b"\x07" * 16)
    c.claim(g2, sig2, ts=T0 + 4 * US)
    ok(c)


def test_grant_claimed_twice_across_a_window_reset():
    c = Chain()
    g, sig = make_grant(ALICE.public, 10_000)
    c.claim(g, sig, ts=T0 + US)
    a = c.claim_action(g, sig, T0 + 5 * DAY_US)
    rejects(c.with_(c.signed(a)), "grant_claimed_twice", 2)


def test_grant_by_a_key_that_is_not_a_steward():
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 100_000, signer=MALLORY)  # names and signed by mallory
    a = c.claim_action(g, sig, T0 + 3 * US)
    rejects(c.with_(c.signed(a)), "grant_not_by_steward", 3)


def test_grant_naming_the_steward_but_signed_by_another_key():
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 100_000, signer=MALLORY, steward=STEWARD.public)
    a = c.claim_action(g, sig, T0 + 3 * US)
    rejects(c.with_(c.signed(a)), "grant_not_by_steward", 3)
    # self-granted: alice signs a grant naming the steward
    g, sig = make_grant(ALICE.public, 100_000, signer=ALICE, steward=STEWARD.public)
    rejects(c.with_(c.signed(c.claim_action(g, sig, T0 + 3 * US))), "grant_not_by_steward", 3)


def test_grant_amount_changed_after_signing():
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 1_000)
    g = dict(g, amount=100_000)
    rejects(c.with_(c.signed(c.claim_action(g, sig, T0 + 3 * US))), "grant_not_by_steward", 3)


def test_grant_for_another_agent():
    c = two_knowledge()
    g, sig = make_grant(BOB.public, 100_000)
    a = c.claim_action(g, sig, T0 + 3 * US)
    rejects(c.with_(c.signed(a)), "grant_wrong_grantee", 3)


def test_grant_for_another_network():
    other = Dna.for_app(APP, stewards=(STEWARD.public,), version=2)
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 10_000, dna=other)
    rejects(c.with_(c.signed(c.claim_action(g, sig, T0 + 3 * US))), "wrong_dna", 3)


def test_grant_amount_out_of_range_is_malformed():
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, DNA.cap_mru + 1)
    rejects(c.with_(c.signed(c.claim_action(g, sig, T0 + 3 * US))), "malformed", 3)
    g, sig = make_grant(ALICE.public, 0)
    rejects(c.with_(c.signed(c.claim_action(g, sig, T0 + 3 * US))), "malformed", 3)


# ---------------------------------------------------------------- entries


def test_entry_bytes_not_matching_the_hash():
    c = two_knowledge()
    eh = c.actions[2].action["entry"]
    entries = dict(c.entries)
    entries[eh] = entry_bytes("knowledge", {"content": "water is dry", "tags": []})
    rejects(c.actions, "entry_hash_mismatch", 2, entries=entries)


def test_entry_of_another_type_than_the_action_says():
    c = two_knowledge()
    # a knowledge-typed action whose committed bytes are an edge
    body = entry_bytes("edge", {"from": b"\x01" * 32, "to": b"\x02" * 32, "relation": "r"})
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    a["entry"] = blake2b_256(body)
    entries = c.entries | {a["entry"]: body}
    rejects(c.with_(c.signed(a)), "entry_mismatch", 3, entries=entries)


def test_invalid_entry_content():
    c = two_knowledge()
    bad = {"content": "", "tags": ["x"]}  # empty knowledge
    a, body = c.create_action("knowledge", bad, T0 + 3 * US)
    rejects(c.with_(c.signed(a)), "entry_invalid", 3, entries=c.entries | {a["entry"]: body})
    bad = {"content": "x", "tags": [], "owner": "me"}  # an unexpected field
    a, body = c.create_action("knowledge", bad, T0 + 3 * US)
    rejects(c.with_(c.signed(a)), "entry_invalid", 3, entries=c.entries | {a["entry"]: body})
    bad = {"from": b"\x01" * 31, "to": b"\x02" * 32, "relation": "r"}
    a, body = c.create_action("edge", bad, T0 + 3 * US)
    rejects(c.with_(c.signed(a)), "entry_invalid", 3, entries=c.entries | {a["entry"]: body})


def test_entry_missing():
    c = two_knowledge()
    entries = dict(c.entries)
    del entries[c.actions[1].action["entry"]]
    rejects(c.actions, "entry_missing", 1, entries=entries)


# ---------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "field,value",
    [
        ("seq", "3"),
        ("seq", True),
        ("ts", "1.5"),
        ("ts", None),
        ("author", b"\x01" * 31),
        ("type", 7),
        ("entry", "not bytes"),
        ("entry", [1, 2]),
        ("entry_type", None),
    ],
)
def test_malformed_header_fields(field, value):
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    a[field] = value
    with pytest.raises(InvalidChain) as ei:
        validate_chain(c.with_(c.signed(a)), DNA, APP, c.entries)
    assert ei.value.reason == "malformed"


@pytest.mark.parametrize("k,v", [("cost", "33"), ("rem", True), ("ws", None), ("rem", "x")])
def test_malformed_budget_record(k, v):
    c = two_knowledge()
    a, _ = c.create_action("knowledge", KNOWLEDGE, T0 + 3 * US)
    rejects(c.with_(c.signed(tweak(a, **{k: v}))), "malformed", 3)


@pytest.mark.parametrize("count", [0, -1, DNA.max_results + 1])
def test_malformed_charge_count(count):
    c = two_knowledge()
    a = c.charge_action(1, T0 + 3 * US)
    a["count"] = count
    a = tweak(a, cost=100 * count)
    rejects(c.with_(c.signed(a)), "malformed", 3)


def test_malformed_claim_without_signature():
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 10_000)
    a = c.claim_action(g, sig, T0 + 3 * US)
    a["grant_sig"] = None
    rejects(c.with_(c.signed(a)), "malformed", 3)


def test_charge_count_at_max_results_is_fine():
    c = Chain()
    g, sig = make_grant(ALICE.public, 100_000)
    c.claim(g, sig, ts=T0 + US)
    c.charge(DNA.max_results, ts=T0 + 2 * US)  # 100 RU of reads
    assert ok(c).budget.remaining_mru == 100_000


@pytest.mark.parametrize(
    "field,value",
    [("steward", STEWARD.public.hex()), ("steward", None), ("amount", True), ("amount", "10000")],
)
def test_malformed_grant_fields(field, value):
    """Signed by the steward, so it is the shape that is refused, not the signature."""
    c = two_knowledge()
    g, sig = make_grant(ALICE.public, 10_000)
    a = c.claim_action(g, sig, T0 + 3 * US)
    a["grant"] = {**g, field: value}
    a["grant_sig"] = STEWARD.sign(encode(a["grant"]))
    rejects(c.with_(c.signed(a)), "malformed", 3)


def test_a_chain_longer_than_the_bound_is_refused_before_any_work(monkeypatch):
    from node.core import validate

    c = two_knowledge()
    monkeypatch.setattr(validate, "MAX_CHAIN", len(c.actions))
    assert ok(c).seq == 2
    c.create(ts=T0 + 3 * US)
    rejects(c.actions, "chain_too_long", None, entries=c.entries)
