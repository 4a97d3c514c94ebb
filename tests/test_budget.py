"""The budget engine: exact refusals, window rolling, the cap, and property tests that
drive both the pure engine and a real in-process node against an independent model."""

from __future__ import annotations

import math

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings, strategies as st

from node.core import budget
from node.core.budget import BudgetState, BudgetStatus, InsufficientRU
from node.core.crypto import from_text
from node.core.dna import Dna
from node.core.errors import BudgetError, BudgetExceeded
from node.core.validate import validate_chain
from node.sdk import LocalNode
from zomes import APP

US = 1_000_000
W = 86_400 * US
T0_S = 1_730_678_400
T0 = T0_S * US
DNA = Dna.for_app(APP)


# ---------------------------------------------------------------- the refusal


def test_insufficient_ru_exact_message_and_fields():
    state = BudgetState(T0, 5_000, 95_000)
    now = T0 + 3_600 * US
    with pytest.raises(InsufficientRU) as ei:
        budget.charge(state, 33_000, now, DNA)
    e = ei.value
    assert str(e) == ("E_INSUFFICIENT_RU: need 33.00 RU, have 5.00 RU. Budget resets at 1730764800")
    assert e.code == "E_INSUFFICIENT_RU"
    assert isinstance(e, BudgetError)
    assert e.need == 33.0 and e.have == 5.0
    assert (e.need_mru, e.have_mru) == (33_000, 5_000)
    assert type(e.resets_at) is int and e.resets_at == 1_730_764_800
    assert type(e.retry_after_s) is int and e.retry_after_s == 86_400 - 3_600
    assert e.to_dict() == {
        "code": "E_INSUFFICIENT_RU",
        "message": "need 33.00 RU, have 5.00 RU. Budget resets at 1730764800",
        "need_mru": 33_000,
        "have_mru": 5_000,
        "resets_at": 1_730_764_800,
        "retry_after_s": 82_800,
    }


@pytest.mark.parametrize(
    "offset_us,retry",
    [
        (0, 86_400),
        (1, 86_400),
        (US, 86_399),
        (US + 1, 86_399),
        (W - US, 1),
        (W - 1, 1),
    ],
)
def test_retry_after_is_the_whole_seconds_until_the_reset(offset_us, retry):
    with pytest.raises(InsufficientRU) as ei:
        budget.charge(BudgetState(T0, 0, 100_000), 1, T0 + offset_us, DNA)
    assert ei.value.retry_after_s == retry
    assert ei.value.resets_at == T0_S + 86_400
    # waiting that long is enough, and one second less is not
    now = T0 + offset_us
    assert now + retry * US >= T0 + W
    assert now + (retry - 1) * US < T0 + W


def test_resets_at_rounds_a_fractional_window_start_up():
    ws = T0 + 250_000  # window opened at .25 s
    with pytest.raises(InsufficientRU) as ei:
        budget.charge(BudgetState(ws, 0, 100_000), 100, ws + 10 * US, DNA)
    assert ei.value.resets_at == T0_S + 86_401
    assert ei.value.retry_after_s == 86_390
    assert budget.status(BudgetState(ws, 0, 100_000), ws, DNA).window_start == T0_S


@pytest.mark.parametrize(
    "need,have,text",
    [
        (100, 0, "need 0.10 RU, have 0.00 RU"),
        (33_001, 33_000, "need 33.01 RU, have 33.00 RU"),
        (55, 54, "need 0.06 RU, have 0.05 RU"),  # need rounds up, have rounds down
        (1, 0, "need 0.01 RU, have 0.00 RU"),
        (200_000, 199_999, "need 200.00 RU, have 199.99 RU"),
    ],
)
def test_amounts_never_flatter(need, have, text):
    with pytest.raises(InsufficientRU) as ei:
        budget.charge(BudgetState(T0, have, 0), need, T0, DNA)
    assert str(ei.value) == f"E_INSUFFICIENT_RU: {text}. Budget resets at 1730764800"
    assert ei.value.need == need / 1000 and ei.value.have == have / 1000


def test_a_refused_charge_leaves_the_state_alone():
    s = BudgetState(T0, 5_000, 95_000)
    with pytest.raises(InsufficientRU):
        budget.charge(s, 5_001, T0 + US, DNA)
    assert s == BudgetState(T0, 5_000, 95_000)
    assert budget.charge(s, 5_000, T0 + US, DNA) == BudgetState(T0, 0, 100_000)


# ---------------------------------------------------------------- windows


def test_initial_state_is_a_full_window_at_genesis():
    assert budget.initial(T0 + 7, DNA) == BudgetState(T0 + 7, 100_000, 0)


def test_charge_exactly_at_window_end_opens_a_new_window_there():
    # roll: the author's pre-flight when a steward witnesses the new window at that time
    s = BudgetState(T0, 1_000, 99_000)
    assert budget.due(s, T0 + W, DNA)
    after = budget.charge(budget.roll(s, T0 + W, DNA), 33_000, T0 + W, DNA)
    assert after == BudgetState(T0 + W, 67_000, 33_000)


def test_one_microsecond_earlier_does_not_reset():
    s = BudgetState(T0, 1_000, 99_000)
    assert not budget.due(s, T0 + W - 1, DNA)
    assert budget.roll(s, T0 + W - 1, DNA) is s
    with pytest.raises(InsufficientRU):
        budget.charge(s, 33_000, T0 + W - 1, DNA)
    assert budget.charge(s, 1_000, T0 + W - 1, DNA) == BudgetState(T0, 0, 100_000)


def test_a_late_charge_opens_the_window_at_its_own_timestamp():
    s = BudgetState(T0, 0, 100_000)
    late = T0 + 5 * W + 1234
    after = budget.charge(budget.roll(s, late, DNA), 3_000, late, DNA)
    assert after == BudgetState(late, 97_000, 3_000)
    # so the next reset is a full window after *that* charge, not on the old grid
    assert budget.roll(after, late + W - 1, DNA) is after
    assert budget.roll(after, late + W, DNA) == BudgetState(late + W, 100_000, 0)


def test_status_shows_an_expired_window_as_the_fresh_one():
    s = BudgetState(T0, 0, 100_000)
    st_ = budget.status(s, T0 + W - 1, DNA)
    assert st_ == BudgetStatus(0, 100_000, T0_S, T0_S + 86_400)
    st_ = budget.status(s, T0 + W, DNA)
    assert st_ == BudgetStatus(100_000, 0, T0_S + 86_400, T0_S + 2 * 86_400)
    assert (st_.remaining_ru, st_.used_ru) == (100.0, 0.0)
    assert st_.to_dict() == {
        "remaining_ru": 100.0,
        "used_ru": 0.0,
        "remaining_mru": 100_000,
        "used_mru": 0,
        "window_start": T0_S + 86_400,
        "resets_at": T0_S + 2 * 86_400,
    }


# ---------------------------------------------------------------- claims and the cap


@pytest.mark.parametrize(
    "rem,amount,after,granted",
    [
        (100_000, 150_000, 200_000, 100_000),
        (100_000, 100_000, 200_000, 100_000),
        (100_000, 50_000, 150_000, 50_000),
        (0, 200_000, 200_000, 200_000),
        (200_000, 1, 200_000, 0),
        (199_999, 200_000, 200_000, 1),
    ],
)
def test_claim_never_exceeds_the_cap_and_reports_what_it_granted(rem, amount, after, granted):
    s, g = budget.claim(BudgetState(T0, rem, 100_000 - rem), amount, DNA)
    assert (s.remaining_mru, g) == (after, granted)
    assert s.window_start_us == T0 and s.used_mru == 100_000 - rem


def test_charge_never_opens_a_window_by_itself():
    # only a witness opens one (validate.py); without it the old window goes on, past its end
    s = BudgetState(T0, 5_000, 95_000)
    assert budget.charge(s, 5_000, T0 + 3 * W, DNA) == BudgetState(T0, 0, 100_000)
    with pytest.raises(InsufficientRU) as ei:
        budget.charge(s, 5_001, T0 + 3 * W, DNA)
    assert ei.value.retry_after_s == 0 and ei.value.resets_at == T0_S + 86_400


def test_claim_after_the_window_end_rolls_first():
    s, g = budget.claim(budget.roll(BudgetState(T0, 0, 100_000), T0 + W, DNA), 150_000, DNA)
    assert s == BudgetState(T0 + W, 200_000, 0) and g == 100_000


def test_remaining_above_cap_is_kept_but_not_raised():
    dna = Dna.for_app(APP, base_mru=300_000)  # a network whose base exceeds the cap
    s, g = budget.claim(budget.initial(T0, dna), 50_000, dna)
    assert (s.remaining_mru, g) == (300_000, 0)


def test_grants_last_only_for_their_window():
    s, _ = budget.claim(BudgetState(T0, 100_000, 0), 100_000, DNA)
    assert s.remaining_mru == 200_000
    assert budget.status(s, T0 + W, DNA).remaining_mru == 100_000


# ---------------------------------------------------------------- properties of the engine


class Model:
    """An independent re-statement of the rules, in plain integers."""

    def __init__(self, dna: Dna, t0: int):
        self.dna, self.ws, self.rem = dna, t0, dna.base_mru
        self.claims = 0  # grants claimed in the window

    def _roll(self, ts):
        if ts - self.ws >= self.dna.window_s * US:
            self.ws, self.rem, self.claims = ts, self.dna.base_mru, 0

    def peek(self, ts):
        ws, rem = self.ws, self.rem
        self._roll(ts)
        out = (self.ws, self.rem)
        self.ws, self.rem = ws, rem
        return out

    def charge(self, cost, ts) -> bool:
        """A refused charge writes nothing, so it does not open a window either."""
        ws, rem = self.peek(ts)
        if cost > rem:
            return False
        self.ws, self.rem = ws, rem - cost
        return True

    def claim(self, amount, ts) -> int | None:
        """What the grant adds; None if it is refused (it would add nothing, or the window
        holds max_grants_per_window claims), which writes nothing and opens no window."""
        ws, rem = self.peek(ts)
        claims = self.claims if ws == self.ws else 0
        new = rem if rem >= self.dna.cap_mru else min(rem + amount, self.dna.cap_mru)
        if new == rem or claims >= self.dna.max_grants_per_window:
            return None
        self.ws, self.rem, self.claims = ws, new, claims + 1
        return new - rem


dnas = st.one_of(
    st.just(DNA),
    st.builds(
        lambda w, b, c: Dna.for_app(APP, window_s=w, base_mru=b, cap_mru=c),
        st.integers(1, 50),
        st.integers(0, 50_000),
        st.integers(0, 100_000),
    ),
)


def steps(window_s_max=86_400):
    dt = st.one_of(
        st.integers(0, 3 * US),
        st.sampled_from([-1, 0, 1]).map(lambda d: ("w", d)),
        st.integers(0, 3 * window_s_max * US),
    )
    return st.lists(
        st.one_of(
            st.tuples(
                st.just("charge"),
                st.one_of(st.integers(0, 40_000), st.sampled_from([100, 3_000, 33_000])),
            ),
            st.tuples(st.just("claim"), st.integers(1, 200_000)),
            st.tuples(st.just("advance"), dt),
        ),
        max_size=60,
    )


@settings(max_examples=300, deadline=None)
@given(dnas, steps())
def test_engine_properties(dna, ops):
    state = budget.initial(T0, dna)
    model = Model(dna, T0)
    ts = T0
    charged = granted = 0  # in the current window
    claims, claims_ws = 0, None  # grants claimed in the window starting at claims_ws
    for kind, arg in ops:
        if kind == "advance":
            if isinstance(arg, tuple):  # land exactly on (or 1 us around) the window's end
                ts = max(ts, state.window_start_us + dna.window_us + arg[1])
            else:
                ts += arg
            continue
        before = state
        if kind == "charge":
            try:
                state = budget.charge(budget.roll(state, ts, dna), arg, ts, dna)
                ok = True
            except InsufficientRU as e:
                ok = False
                ws, rem = model.peek(ts)
                assert (e.need_mru, e.have_mru) == (arg, rem)
                assert e.resets_at == math.ceil((ws + dna.window_us) / US)
                assert e.retry_after_s >= 0
                assert ts + e.retry_after_s * US >= ws + dna.window_us
                assert state is before
            assert ok == model.charge(arg, ts)
        else:
            # the engine's claim adds what fits under the cap; admission refuses one that adds
            # nothing (E_BUDGET_EXCEEDED) and one past max_grants_per_window
            window = budget.roll(state, ts, dna)
            expect = model.claim(arg, ts)
            in_window = claims if claims_ws == window.window_start_us else 0
            try:
                admitted = budget.admit_grant(window, in_window, arg, ts, dna)
            except BudgetExceeded as e:
                assert expect is None and (e.need_units, e.have_units) == (arg, 0)
                assert state is before
                g = 0
            else:
                state, g = budget.claim(window, arg, dna)
                claims, claims_ws = in_window + 1, window.window_start_us
                assert g == admitted == expect
                assert 0 < g <= arg
        # (c) a window only ever resets once a full window has passed, at the event's time
        if state.window_start_us != before.window_start_us:
            assert state.window_start_us - before.window_start_us >= dna.window_us
            assert state.window_start_us == ts
            charged = granted = 0
        if kind == "charge" and ok:
            charged += arg
        elif kind == "claim":
            granted += g
        assert (state.window_start_us, state.remaining_mru) == (model.ws, model.rem)
        # (a) never negative, never above the larger of the cap and the base
        assert 0 <= state.remaining_mru <= max(dna.cap_mru, dna.base_mru)
        # (b) never more spent in a window than its base plus what was granted in it
        assert charged <= dna.base_mru + granted
        assert state.used_mru == charged
        assert state.remaining_mru == dna.base_mru + granted - charged


# ---------------------------------------------------------------- a real node, randomly driven

UNDERSTANDING = ("sky", "is", "blue")
OPS = {  # name -> cost in mRU
    "add_knowledge": 33_000,
    "transmit_understanding": 3_000,
    "create_thought_credential": 10_000,
    "link_edge": 3_000,
    "validate_triple": 2_000,
    "compose_memories": 5_000,
}

node_ops = st.lists(
    st.one_of(
        # a write, repeated a few times (so budgets run out and refusals happen)
        st.tuples(st.sampled_from(sorted(OPS) + ["add_knowledge"] * 2), st.integers(1, 5)),
        st.tuples(st.just("recall"), st.integers(1, 30)),
        st.tuples(st.just("allocate"), st.sampled_from(["0.1", "1", "33", "99.9", "150", "200"])),
        st.tuples(
            st.just("advance"),
            st.one_of(
                st.integers(0, 5 * US),
                st.sampled_from([W - 1, W, W + 1, 2 * W, 3_600 * US]),
                st.just("to_end"),
                st.just("just_before_end"),
            ),
        ),
        st.tuples(st.just("back"), st.integers(1, 2 * W)),  # the wall clock may step backwards
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(node_ops)
def test_node_driven_by_random_ops_keeps_a_valid_chain(ops):
    trio.run(_drive_node, ops)


async def _drive_node(ops):
    now = [T0]
    async with LocalNode.open(clock=lambda: now[0] / US) as node:
        alice = await node.new_agent()
        steward = node.steward
        pub = from_text("agent", alice.agent_id)
        assert node.now_us() == T0
        model = Model(node.dna, T0)
        last_ts = T0
        understandings = 0
        flat = [
            (k, None) if k in OPS else (k, a) for k, a in ops for _ in range(a if k in OPS else 1)
        ]
        for kind, arg in flat:
            if kind == "advance":
                if arg == "to_end":
                    now[0] = max(now[0], model.ws + W)
                elif arg == "just_before_end":
                    now[0] = max(now[0], model.ws + W - 1)
                else:
                    now[0] += arg
                continue
            if kind == "back":
                now[0] -= arg
                continue
            assert node.now_us() == now[0]
            ts = max(now[0], last_ts)
            length = len(node.store.chain(pub))
            if kind == "allocate":
                expect = model.claim(int(round(float(arg) * 1000)), ts)
                steward_length = len(node.store.chain(node.steward._cell.key.public))
                try:
                    g = await steward.allocate_budget(alice.agent_id, float(arg))
                except BudgetExceeded as e:
                    event("a grant was refused")
                    assert expect is None
                    assert e.have_units == 0 and e.need_units == int(round(float(arg) * 1000))
                    # nothing written: neither the steward's record nor the claim
                    assert len(node.store.chain(node.steward._cell.key.public)) == steward_length
                    wrote = False
                else:
                    assert expect is not None and g.granted_ru == expect / 1000
                    assert g.requested_ru == float(arg)
                    wrote = True
            else:
                if kind == "recall":
                    count = min(arg, understandings)
                    cost = 100 * count
                else:
                    cost = OPS[kind]
                # nothing to pay (a recall that finds nothing) writes nothing
                expected_ok = model.charge(cost, ts) if cost else True
                try:
                    result = await _call(alice, kind, arg, steward.agent_id)
                    succeeded = True
                except InsufficientRU as e:
                    succeeded = False
                    event("node refused a write")
                    assert e.need_mru == cost and e.have_mru == model.peek(ts)[1]
                    assert e.resets_at == math.ceil((model.peek(ts)[0] + W) / US)
                assert succeeded == expected_ok, (kind, cost)
                if kind == "recall" and succeeded:
                    assert len(result) == count
                if kind == "transmit_understanding" and succeeded:
                    understandings += 1
                wrote = succeeded and cost > 0
            after = len(node.store.chain(pub))
            assert after == length + (1 if wrote else 0)
            if wrote:
                last_ts = ts
            s = await alice.budget_status()
            ws, rem = model.peek(max(now[0], last_ts))
            assert (s.remaining_mru, s.window_start) == (rem, ws // US)
            assert s.resets_at == math.ceil((ws + W) / US)

        # every peer re-derives exactly what the node reports
        for who in (alice, steward):
            key = from_text("agent", who.agent_id)
            chain = node.store.chain(key)
            cs = validate_chain(
                chain, node.dna, APP, node.store.entries_of(key), now_us=max(now[0], chain[-1].ts)
            )  # the clock may have stepped back
            assert (
                budget.status(cs.budget, max(now[0], cs.ts), node.dna) == await who.budget_status()
            )
        windows = _check_windows(node.store.chain(pub), node.dna)
        event(f"windows on alice's chain: {min(windows, 3)}{'+' if windows >= 3 else ''}")


async def _call(alice, kind, arg, other):
    if kind == "add_knowledge":
        return await alice.add_knowledge(content="fact", tags=("t",))
    if kind == "transmit_understanding":
        return await alice.transmit_understanding(*UNDERSTANDING, context="ctx")
    if kind == "create_thought_credential":
        return await alice.create_thought_credential("title", "body")
    if kind == "link_edge":
        h = "ac" + "A" * 43
        return await alice.link_edge(h, h, "relates")
    if kind == "validate_triple":
        return await alice.validate_triple(*UNDERSTANDING)
    if kind == "compose_memories":
        return await alice.compose_memories(other)
    if kind == "recall":
        return await alice.recall_understandings(limit=arg)
    raise AssertionError(kind)


def _check_windows(chain, dna):
    """Properties (a)-(c) read straight off the stored chain's budget records."""
    ws, charged, granted, windows = chain[0].ts, 0, 0, 1
    for s in chain[1:]:
        b = s.action["budget"]
        if b["ws"] != ws:
            assert b["ws"] - ws >= dna.window_us and b["ws"] == s.ts
            ws, charged, granted, windows = b["ws"], 0, 0, windows + 1
        charged += b["cost"]
        granted += b.get("granted", 0)
        assert charged <= dna.base_mru + granted
        assert 0 <= b["rem"] <= dna.cap_mru
        assert b["rem"] == dna.base_mru + granted - charged
    return windows


async def test_node_refusal_message_and_nothing_written():
    now = [T0_S + 0.5]
    async with LocalNode.open(clock=lambda: now[0]) as node:
        alice = await node.new_agent()
        pub = from_text("agent", alice.agent_id)
        for _ in range(3):
            await alice.add_knowledge(content="x")
        now[0] = T0_S + 3_600.5
        n = len(node.store.chain(pub))
        with pytest.raises(InsufficientRU) as ei:
            await alice.add_knowledge(content="x")
        assert str(ei.value) == (
            "E_INSUFFICIENT_RU: need 33.00 RU, have 1.00 RU. Budget resets at 1730764801"
        )
        assert ei.value.retry_after_s == 86_400 - 3_600
        assert len(node.store.chain(pub)) == n
        s = await alice.budget_status()
        assert (s.remaining_ru, s.used_ru, s.window_start, s.resets_at) == (
            1.0,
            99.0,
            T0_S,
            T0_S + 86_401,
        )
        # exactly a window after genesis the budget is back
        now[0] = T0_S + 86_400.5
        await alice.add_knowledge(content="x")
        s = await alice.budget_status()
        assert (s.remaining_ru, s.window_start) == (67.0, T0_S + 86_400)
