"""The rebalancing planner (node/core/rebalance.py): each rule on a case worked out by hand, the
idle boundary, market weight in the ranking, and properties over random envelopes: value is
conserved per resource, no budget gives more than it has, void budgets never give, and the plan
does not depend on the order of its input."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.errors import InvalidInput, TooLarge
from node.core.rebalance import MAX_BUDGETS, EnvelopeBudget, Rules, plan

LARGE, SMALL = "llm_tokens.large", "llm_tokens.small"


def bid(n: int) -> bytes:
    return n.to_bytes(32, "big")


def rec(n: int) -> tuple[str, bytes]:
    return ("record", bid(1000 + n))


def eb(
    n: int,
    entity: tuple[str, bytes],
    available: dict | None = None,
    spent: dict | None = None,
    edges: int = 0,
    active: int = 10,
    mw: int = 0,
    void: bool = False,
) -> EnvelopeBudget:
    return EnvelopeBudget(
        budget=bid(n),
        entity=entity,
        holder=bid(5000),
        available=available or {},
        spent=spent or {},
        edges=edges,
        last_active_window=active,
        market_weight_milli=mw,
        void=void,
    )


def move(src: int, to, amounts: dict, reason: str) -> dict:
    return {"from": bid(src), "to": to, "amounts": amounts, "reason": reason}


# -- each rule by hand


def idle_case(window: int) -> list[EnvelopeBudget]:
    # ROI: A 20/10k = 0.002, B 30/10k = 0.003, C 40/20k = 0.002; the network's 90/40k = 0.00225.
    # B alone is at or above it; nobody is below half of it.
    return [
        eb(1, rec(1), {"ru": 1000, LARGE: 900}, {LARGE: 10_000}, edges=20, active=0),
        eb(2, rec(2), {LARGE: 100}, {LARGE: 10_000}, edges=30, active=window),
        eb(3, rec(3), {"ru": 50}, {SMALL: 20_000}, edges=40, active=window - 1),
    ]


def test_an_idle_budget_gives_all_it_has_to_the_high_roi_envelope():
    assert plan(idle_case(7), window=7) == [move(1, rec(2), {"ru": 1000, LARGE: 900}, "idle")]


def test_a_budget_is_idle_from_idle_windows_without_spend_not_one_window_before():
    assert plan(idle_case(6), window=6) == []  # 6 windows since A's last spend: not idle yet
    assert plan(idle_case(7), window=7, rules=Rules(idle_windows=8)) == []
    assert plan(idle_case(7), window=8, rules=Rules(idle_windows=8)) != []


def test_a_low_roi_envelope_keeps_its_cap_and_the_rest_goes_to_the_high_roi_one():
    low, high, young = ("agent", bid(7001)), rec(2), rec(3)
    budgets = [
        # the low envelope, two live budgets: ROI 4/40k = 0.0001
        eb(1, low, {"ru": 1000}, {SMALL: 40_000}, edges=4),
        eb(2, low, {"ru": 203, "api_calls": 10}),
        # the high one: 50/10k = 0.005; the network's: 54/50k = 0.00108, half of it 0.00054
        eb(3, high, {}, {LARGE: 10_000}, edges=50),
        # too little spent for its ROI to count: it neither gives nor receives
        eb(4, young, {"ru": 5000}, {LARGE: 500}, edges=100),
    ]
    # low holds 1203 RU-milli and 10 api_calls; it keeps floor(1/4 of each) = 300 and 2,
    # given from its budgets in id order: 903 from budget 1, then the 8 api_calls from budget 2
    assert plan(budgets, window=10) == [
        move(1, high, {"ru": 903}, "low_roi"),
        move(2, high, {"api_calls": 8}, "low_roi"),
    ]
    # a stricter bar: 0.0001 is not below 1/20 of 0.00108, so nothing is low
    assert plan(budgets, window=10, rules=Rules(low_roi_fraction=Fraction(1, 20))) == []


def ranking_case(mw_y: int, ru: int = 100) -> list[EnvelopeBudget]:
    # X 30/10k = 0.003, Y 50/20k = 0.0025, A (idle) 10/10k; the network's 90/40k = 0.00225
    return [
        eb(1, rec(1), {"ru": ru}, {LARGE: 10_000}, edges=10, active=0),
        eb(2, rec(24), {}, {LARGE: 10_000}, edges=30),
        eb(3, rec(25), {}, {SMALL: 20_000}, edges=50, mw=mw_y),
    ]


def test_value_is_shared_by_roi_times_market_weight_with_the_remainder_to_the_top():
    x, y = rec(24), rec(25)
    # scores 0.003 and 0.0025: X floor(100 x 6/11) = 54 + the 1 left, Y floor(100 x 5/11) = 45
    assert plan(ranking_case(0), window=10) == [
        move(1, x, {"ru": 55}, "idle"),
        move(1, y, {"ru": 45}, "idle"),
    ]
    # Y's market weight +0.5 makes its score 0.00375, so it ranks first: 55 + 1 and 44
    assert plan(ranking_case(500), window=10) == [
        move(1, y, {"ru": 56}, "idle"),
        move(1, x, {"ru": 44}, "idle"),
    ]
    assert plan(ranking_case(500), window=10, rules=Rules(max_receivers=1)) == [
        move(1, y, {"ru": 100}, "idle")
    ]
    # one unit cannot be shared: the top-ranked gets it, and nobody gets an empty move
    assert plan(ranking_case(0, ru=1), window=10) == [move(1, x, {"ru": 1}, "idle")]
    # a negative weight lowers Y's score but never stops it receiving: 0.00125 against 0.003
    assert plan(ranking_case(-500), window=10) == [
        move(1, x, {"ru": 71}, "idle"),
        move(1, y, {"ru": 29}, "idle"),
    ]


def test_a_zero_roi_envelope_never_receives_however_strong_its_market_weight():
    budgets = [
        eb(1, rec(1), {"ru": 100}, {LARGE: 10_000}, active=0),
        eb(2, rec(2), {}, {LARGE: 10_000}, mw=500),
    ]
    assert plan(budgets, window=10) == []  # the network's ROI is 0: nobody earns more
    budgets.append(eb(3, rec(3), {}, {LARGE: 10_000}, edges=1, mw=-500))
    assert plan(budgets, window=10) == [move(1, rec(3), {"ru": 100}, "idle")]


def test_no_receiver_means_an_empty_plan_and_an_envelope_never_pays_itself():
    # B is the only high-ROI envelope and its own budget is idle: nobody else to give it to
    budgets = [
        eb(1, rec(2), {"ru": 100}, {LARGE: 10_000}, edges=30, active=0),
        eb(2, rec(2), {}, {}, active=10),
        eb(3, rec(3), {}, {LARGE: 10_000}, edges=1),
    ]
    assert plan(budgets, window=10) == []
    # with every budget idle or spent-free, no envelope is live to receive
    assert plan([eb(1, rec(1), {"ru": 5}, {LARGE: 10_000}, edges=9, active=0)], window=10) == []


def test_void_budgets_never_give_but_their_record_counts_in_their_envelopes_roi():
    low = rec(1)
    budgets = [
        eb(1, low, {"ru": 900}, {LARGE: 30_000}, active=0, void=True),  # would be idle
        eb(2, low, {"ru": 400}),  # nothing spent from it, but its envelope spent 30k for 0
        eb(3, rec(2), {}, {LARGE: 10_000}, edges=10),
    ]
    assert plan(budgets, window=10) == [move(2, rec(2), {"ru": 300}, "low_roi")]


# -- bad input


def test_bad_input_is_refused_with_a_clear_error():
    good = idle_case(7)
    with pytest.raises(InvalidInput, match="listed twice"):
        plan(good + [good[0]], window=7)
    with pytest.raises(InvalidInput, match="active after window"):
        plan(good, window=6)  # B spent in window 7
    with pytest.raises(InvalidInput, match="differ in market weight"):
        plan([eb(1, rec(1)), eb(2, rec(1), mw=10)], window=10)
    with pytest.raises(TooLarge, match="at most 4096"):
        plan([eb(n, rec(1)) for n in range(MAX_BUDGETS + 1)], window=10)
    with pytest.raises(InvalidInput, match="a list of budgets"):
        plan(iter(good), window=7)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="window"):
        plan(good, window=-1)
    with pytest.raises(InvalidInput, match="EnvelopeBudget"):
        plan([{"budget": bid(1)}], window=10)  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="Rules"):
        plan(good, window=7, rules={"idle_windows": 3})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("budget", b"short", "budget id"),
        ("entity", ("hypothesis", bid(1)), "kind"),
        ("entity", ("record", b"x"), "entity id"),
        ("holder", "alice", "holder"),
        ("available", {"ru": -1}, "available ru"),
        ("available", {"ru": 1.5}, "available ru"),
        ("spent", {LARGE: True}, "spent"),
        ("spent", [1], "map"),
        ("available", {"": 1}, "named"),
        ("available", {f"r{i}": 1 for i in range(17)}, "at most 16"),
        ("edges", -1, "edges"),
        ("last_active_window", None, "last_active_window"),
        ("market_weight_milli", 501, "market_weight_milli"),
        ("void", 0, "void"),
    ],
)
def test_a_malformed_budget_is_refused(field, value, match):
    fields = {
        "budget": bid(1),
        "entity": rec(1),
        "holder": bid(2),
        "available": {},
        "spent": {},
        "edges": 0,
        "last_active_window": 0,
        "market_weight_milli": 0,
        "void": False,
    }
    with pytest.raises(InvalidInput, match=match):
        EnvelopeBudget(**{**fields, field: value})


@pytest.mark.parametrize(
    "kw",
    [
        {"idle_windows": 0},
        {"min_llm_tokens": 0},
        {"low_roi_fraction": 0.5},
        {"low_roi_fraction": Fraction(3, 2)},
        {"low_roi_keep": True},
        {"max_receivers": 0},
    ],
)
def test_bad_rules_are_refused(kw):
    with pytest.raises(InvalidInput):
        Rules(**kw)


def test_amounts_are_kept_as_read_only_copies_without_zeros():
    src = {"ru": 5, LARGE: 0}
    b = eb(1, rec(1), src)
    src["ru"] = 99
    assert dict(b.available) == {"ru": 5}
    with pytest.raises(TypeError):
        b.available["ru"] = 6  # type: ignore[index]


# -- properties over random envelopes

RESOURCES = ["ru", LARGE, SMALL, "api_calls"]
AMOUNTS = st.dictionaries(st.sampled_from(RESOURCES), st.integers(0, 50_000), max_size=4)
WINDOW = 20


@st.composite
def budget_sets(draw) -> list[EnvelopeBudget]:
    n_entities = draw(st.integers(1, 6))
    weights = [draw(st.integers(-500, 500)) for _ in range(n_entities)]
    out = []
    for n in range(draw(st.integers(0, 24))):
        e = draw(st.integers(0, n_entities - 1))
        out.append(
            eb(
                n,
                ("agent" if e % 2 else "record", bid(100 + e)),
                draw(AMOUNTS),
                draw(AMOUNTS),
                edges=draw(st.integers(0, 300)),
                active=draw(st.integers(0, WINDOW)),
                mw=weights[e],
                void=draw(st.booleans()),
            )
        )
    return out


RULES = st.builds(
    Rules,
    idle_windows=st.integers(1, 12),
    min_llm_tokens=st.integers(1, 20_000),
    low_roi_fraction=st.fractions(0, 1),
    low_roi_keep=st.fractions(0, 1),
    max_receivers=st.integers(1, 4),
)


@settings(max_examples=300, deadline=None)
@given(budget_sets(), RULES, st.randoms(use_true_random=False))
def test_plans_conserve_value_and_never_overdraw_or_touch_a_void_budget(budgets, rules, rnd):
    moves = plan(budgets, WINDOW, rules)
    by_id = {b.budget: b for b in budgets}
    given_back: dict[bytes, dict[str, int]] = {}
    received: dict[tuple[str, bytes], dict[str, int]] = {}
    for m in moves:
        src = by_id[m["from"]]
        assert not src.void
        assert m["to"] != src.entity and m["reason"] in ("idle", "low_roi")
        assert m["amounts"] and all(x > 0 for x in m["amounts"].values())
        given_back[m["from"]] = total([given_back.get(m["from"], {}), m["amounts"]])
        received[m["to"]] = total([received.get(m["to"], {}), m["amounts"]])
    for b, out in given_back.items():
        assert all(x <= by_id[b].available.get(k, 0) for k, x in out.items())
    # apply the plan: what the sources lose the receivers gain, resource by resource
    live = [b for b in budgets if not b.void]
    left = [
        {k: x - given_back.get(b.budget, {}).get(k, 0) for k, x in b.available.items()}
        for b in live
    ]
    assert total(left + list(received.values())) == total(b.available for b in live)
    # every receiver earned something: a receiver's envelope spent LLM tokens and gained edges
    for entity in received:
        mine = [b for b in budgets if b.entity == entity]
        assert sum(b.edges for b in mine) > 0 and any(b.llm_tokens for b in mine)
    # the order of the input does not change the plan
    shuffled = list(budgets)
    rnd.shuffle(shuffled)
    assert plan(shuffled, WINDOW, rules) == moves


def total(maps) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, x in m.items():
            out[k] = out.get(k, 0) + x
    return {k: x for k, x in sorted(out.items()) if x}


@settings(max_examples=200, deadline=None)
@given(budget_sets())
def test_an_idle_budget_gives_back_everything_when_anyone_else_may_receive(budgets):
    moves = plan(budgets, WINDOW)
    receivers = {m["to"] for m in moves}
    for b in budgets:
        if b.void or WINDOW - b.last_active_window < 7 or not b.available:
            continue
        mine = [m for m in moves if m["from"] == b.budget]
        if receivers - {b.entity}:
            assert total(m["amounts"] for m in mine) == dict(b.available)
            assert {m["reason"] for m in mine} == {"idle"}


def test_a_large_plan_is_the_same_every_time():
    rnd = random.Random(7)
    budgets = [
        eb(
            n,
            rec(n % 300),
            {"ru": rnd.randrange(10**6), LARGE: rnd.randrange(10**7)},
            {LARGE: rnd.randrange(10**6), SMALL: rnd.randrange(10**5)},
            edges=rnd.randrange(500) if n % 300 >= 30 else 0,  # a tenth earn nothing
            active=rnd.randrange(20),
            mw=(n % 300) - 150,
        )
        for n in range(MAX_BUDGETS)
    ]
    moves = plan(budgets, 20)
    assert moves and plan(list(reversed(budgets)), 20) == moves
    reasons = {m["reason"] for m in moves}
    assert reasons == {"idle", "low_roi"}
