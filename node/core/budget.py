"""The budget engine: pure integer arithmetic over milli-RU and microsecond timestamps.

The author's node and every validator call the same `charge`/`claim` functions, so
"what the author wrote" and "what the network re-derives" cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dna import Dna

# InsufficientRU is raised here and defined with every refusal; it and fmt_ru are re-exported
# (explicitly: `as`), as this was their import path
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


def roll(state: BudgetState, ts_us: int, dna: Dna) -> BudgetState:
    """The first event at or after the window's end opens a fresh window at that event."""
    if ts_us >= state.window_start_us + dna.window_us:
        return BudgetState(ts_us, dna.base_mru, 0)
    return state


def charge(state: BudgetState, cost_mru: int, ts_us: int, dna: Dna) -> BudgetState:
    s = roll(state, ts_us, dna)
    if cost_mru > s.remaining_mru:
        end_us = s.window_start_us + dna.window_us
        raise InsufficientRU(
            cost_mru, s.remaining_mru, ceil_s(end_us), max(0, ceil_s(end_us - ts_us))
        )
    return BudgetState(s.window_start_us, s.remaining_mru - cost_mru, s.used_mru + cost_mru)


def claim(state: BudgetState, amount_mru: int, ts_us: int, dna: Dna) -> tuple[BudgetState, int]:
    """Add a grant, never above the cap; returns the new state and what was actually granted."""
    s = roll(state, ts_us, dna)
    after = min(s.remaining_mru + amount_mru, max(dna.cap_mru, s.remaining_mru))
    return BudgetState(s.window_start_us, after, s.used_mru), after - s.remaining_mru


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
