"""The budget engine: pure integer arithmetic over milli-RU and microsecond timestamps.

The author's node and every validator call the same `charge`/`claim` functions, so
"what the author wrote" and "what the network re-derives" cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dna import Dna

# InsufficientRU is raised here and defined with every refusal; it and fmt_ru are re-exported
# (explicitly: `as`), as this was their import path
from .errors import BudgetExceeded
from .errors import InsufficientRU as InsufficientRU
from .money import MRU_PER_RU
from .money import fmt_ru as fmt_ru

US = 1_000_000


def ceil_s(us: int) -> int:
    return -(-us // US)


@dataclass(frozen=True, slots=True)
class BudgetState:
    window_start_us: int
    remaining_mru: int
    used_mru: int  # charged in this window; remaining = base + granted - used

    def resets_at(self, dna: Dna) -> int:
        return ceil_s(self.window_start_us + dna.window_us)


def initial(genesis_ts_us: int, dna: Dna) -> BudgetState:
    return BudgetState(genesis_ts_us, dna.base_mru, 0)


def due(state: BudgetState, ts_us: int, dna: Dna) -> bool:
    """Whether the window has ended by `ts_us`, so a witness may open the next one."""
    return ts_us >= state.window_start_us + dna.window_us


def open_window(state: BudgetState, at_us: int, dna: Dna) -> BudgetState:
    """The fresh window a witness opens at `at_us` (its own clock, at least a window after the
    last one started: validate.py checks that before calling this)."""
    return BudgetState(at_us, dna.base_mru, 0)


def roll(state: BudgetState, ts_us: int, dna: Dna) -> BudgetState:
    """What the window looks like at `ts_us` if a witness opens the next one when it is due:
    for display and for the author's pre-flight, never for validation."""
    return open_window(state, ts_us, dna) if due(state, ts_us, dna) else state


def charge(state: BudgetState, cost_mru: int, ts_us: int, dna: Dna) -> BudgetState:
    """Spend from the window `state` is in (opening windows is the witness's, see
    open_window); InsufficientRU says when it ends."""
    if cost_mru > state.remaining_mru:
        end_us = state.window_start_us + dna.window_us
        raise InsufficientRU(
            cost_mru, state.remaining_mru, ceil_s(end_us), max(0, ceil_s(end_us - ts_us))
        )
    return BudgetState(
        state.window_start_us, state.remaining_mru - cost_mru, state.used_mru + cost_mru
    )


def claim(state: BudgetState, amount_mru: int, dna: Dna) -> tuple[BudgetState, int]:
    """Add a grant, never above the cap; returns the new state and what was actually granted."""
    after = min(state.remaining_mru + amount_mru, max(dna.cap_mru, state.remaining_mru))
    return BudgetState(state.window_start_us, after, state.used_mru), after - state.remaining_mru


def grants_fit(claims_in_window: int, dna: Dna) -> bool:
    """Whether one window may hold this many claimed grants (`dna.max_grants_per_window`)."""
    return dna.max_grants_per_window is None or claims_in_window <= dna.max_grants_per_window


def admit_grant(
    state: BudgetState, claims_in_window: int, amount_mru: int, ts_us: int, dna: Dna
) -> int:
    """What claiming a grant of `amount_mru` in `state`'s window would add; BudgetExceeded
    (nothing is written) if it would add nothing, at the cap, or the window holds its
    `max_grants_per_window` already. A grant that fits partly adds what fits."""
    end = ceil_s(state.window_start_us + dna.window_us)
    if not grants_fit(claims_in_window + 1, dna):
        limit = f"max_grants_per_window {dna.max_grants_per_window} reached; resets at {end}"
        raise BudgetExceeded(amount_mru, 0, None, "ru", limit)
    granted = claim(state, amount_mru, dna)[1]
    if granted == 0:
        limit = f"cap {fmt_ru(dna.cap_mru)} RU reached; resets at {end}"
        raise BudgetExceeded(amount_mru, 0, None, "ru", limit)
    return granted


@dataclass(frozen=True)
class BudgetStatus:
    remaining_mru: int
    used_mru: int
    window_start: int  # unix seconds
    resets_at: int  # unix seconds

    @property
    def remaining_ru(self) -> float:
        return self.remaining_mru / MRU_PER_RU

    @property
    def used_ru(self) -> float:
        return self.used_mru / MRU_PER_RU

    def to_dict(self) -> dict[str, object]:
        return {
            "remaining_ru": self.remaining_ru,
            "used_ru": self.used_ru,
            "remaining_mru": self.remaining_mru,
            "used_mru": self.used_mru,
            "window_start": self.window_start,
            "resets_at": self.resets_at,
        }


def status(state: BudgetState, now_us: int, dna: Dna) -> BudgetStatus:
    """What a charge made now would see: an expired window shows as the fresh one it would open."""
    s = roll(state, now_us, dna)
    return BudgetStatus(s.remaining_mru, s.used_mru, s.window_start_us // US, s.resets_at(dna))
