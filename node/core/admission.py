"""Admission: the one order of the checks a call meets, and the pure pre-flight of a chain.

Every refusal has exactly one code: that of the first check, in `PRECEDENCE`'s order, that
fails (seed 004: "exactly one code"; TigerBeetle's one ordered list of result codes per
operation). The real call and the dry run (`check`) run the same checks in the same order:
the function and its payload (LocalNode.call), then the function's own target and authority
checks, then the chain's (Cell.check_writable, then the budget: `charge_at`/`claim_at` here).

The table is data: docs/SDK.md prints it, tests/test_admission.py checks a conflicting pair of
every two checks that can both fail, the explicit budgets' codes included
(tests/test_budgets.py, test_budget_precedence_*).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import budget
from .budget import BudgetState
from .dna import Dna
from .errors import BudgetExceeded
from .validate import ChainState


@dataclass(frozen=True)
class Check:
    name: str
    codes: tuple[str, ...]  # the codes this check refuses with, any one of them
    what: str


PRECEDENCE: tuple[Check, ...] = (
    Check("function", ("E_UNKNOWN_FUNCTION",), "the zome and function exist in the app"),
    Check(
        "input",
        ("E_INVALID_INPUT", "E_MALFORMED", "E_TOO_LARGE"),
        "the payload fits the function's parameters and the entry its integrity zome",
    ),
    Check(
        "target",
        (
            "E_UNKNOWN_AGENT",
            "E_UNKNOWN_BUDGET",
            "E_UNKNOWN_TARGET",
            "E_EXISTS_DIFFERENT",
            "E_NO_EVIDENCE",
        ),
        "every agent (budget, target, hold, evidence) the call names is known; a task_id reused "
        "names the same hold",
    ),
    Check("warrant", ("E_WARRANTED",), "the caller is not warranted (nor a grant's grantee)"),
    Check(
        "authority",
        ("E_NOT_AUTHORIZED", "E_NOT_NARROWING"),
        "the caller may do this (a steward's function, a grant for it, a budget whose schema "
        "allows the op, can_fund or can_delegate; a child's schema within its parent's)",
    ),
    Check(
        "void",
        ("E_BUDGET_VOID", "E_HOLD_EXPIRED", "E_ALREADY_RESOLVED", "E_ALREADY_VOTED"),
        "the budget paying is not void or expired; a hold is still pending; a vote is the "
        "voter's first on its proposal",
    ),
    Check(
        "balance",
        ("E_INSUFFICIENT_RU", "E_NO_WITNESS", "E_BUDGET_EXCEEDED"),
        "the allowance covers the cost (E_INSUFFICIENT_RU; E_NO_WITNESS when only the next "
        "window would, and no steward opens it); an explicit budget's balance, the cap, "
        "max_grants_per_window, and an op priced beyond RU paid by the allowance, which holds "
        "only RU (E_BUDGET_EXCEEDED)",
    ),
    Check("solvency", ("E_UNSOLVABLE",), "after the spend every resource keeps its reserve"),
    Check(
        "deferral",
        ("E_DEFER_QUEUE_FULL",),
        "with defer=True, a write refused only by the balance is queued if the queues have room",
    ),
)

RANK: dict[str, int] = {code: i for i, c in enumerate(PRECEDENCE) for code in c.codes}
DEFERRABLE = frozenset({"E_INSUFFICIENT_RU"})  # the one refusal a deferral waits out


def rank(code: str) -> int:
    """The place of the check that refuses with `code` (codes outside admission: past all)."""
    return RANK.get(code, len(PRECEDENCE))


def window_at(cs: ChainState, now_us: int, dna: Dna) -> tuple[int, BudgetState]:
    """(timestamp, window) a write at `now_us` would be charged in: a due window as the one a
    witness opens (the author's view: validation opens windows only with a witness)."""
    ts = max(now_us, cs.ts)
    return ts, budget.roll(cs.budget, ts, dna)


def claims_in(cs: ChainState, window: BudgetState) -> int:
    """Grants `cs`'s chain claimed in `window` (none yet in one about to open)."""
    same = window.window_start_us == cs.budget.window_start_us
    return cs.window_claims if same else 0


def allowance_pays(op: str, dna: Dna, name: str) -> None:
    """BudgetExceeded naming the resource if `op` (`name`: as "zome.fn") costs more than RU
    (the DNA's resource_costs): the allowance holds only RU, so only a budget holding it pays."""
    for k, x in dna.resource_cost(op).items():
        raise BudgetExceeded(
            x, 0, None, k, f"the allowance holds only RU: refine {name} with a budget holding {k}"
        )


def charge_at(cs: ChainState, cost_mru: int, now_us: int, dna: Dna) -> BudgetState:
    """The budget after charging `cost_mru` now; InsufficientRU if it does not fit."""
    ts, window = window_at(cs, now_us, dna)
    return budget.charge(window, cost_mru, ts, dna)


def claim_at(cs: ChainState, amount_mru: int, now_us: int, dna: Dna) -> int:
    """What claiming a grant of `amount_mru` now would add; BudgetExceeded if nothing."""
    ts, window = window_at(cs, now_us, dna)
    return budget.admit_grant(window, claims_in(cs, window), amount_mru, ts, dna)
