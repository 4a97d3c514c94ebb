"""The rebalancing planner: which budgets give back value and which envelopes receive it. Pure.

An envelope is the set of budgets attached to one entity, ("agent" | "record", 32-byte id). Its
ROI is `edges / llm_tokens` summed over all its budgets, void ones included (what was spent and
gained stays spent and gained, so voiding a budget never erases a poor record); the tokens are
the `spent` of every resource whose name starts with "llm_tokens.". Every ratio is a Fraction
and every amount an int, so the same inputs give the same plan on every machine.

The rules (docs/SDK.md, "Rebalancing"):
- **idle**: a live budget with no spend for at least `idle_windows` windows
  (`window - last_active_window >= idle_windows`) gives back all it has available.
- **low_roi**: an envelope whose ROI counts (at least `min_llm_tokens` spent) and is below
  `low_roi_fraction` x the network's ROI (all counted envelopes' edges over their tokens) keeps
  `floor(total x low_roi_keep)` of each resource across its live, non-idle budgets; the rest is
  taken from those budgets in budget-id order.
- **receivers** (the issue's high_roi): envelopes whose ROI counts, is above 0 and at least the
  network's, with at least one live, non-idle budget; ranked by `roi x (1 + market_weight)`
  (ties: entity ascending). Market weight orders and sizes the shares; it never makes an
  envelope eligible (enthusiasm speeds work but never bypasses evidence).
- Each source's amount of each resource is split among the top `max_receivers` receivers other
  than its own entity, in proportion to their rank score, rounded down; the remainder goes to the
  top-ranked one. A source with no such receiver gives nothing: value is never planned without
  a receiver. So per resource, what leaves the sources is exactly what the receivers get.

A move is `{"from": budget id, "to": entity, "amounts": {resource: units}, "reason": "idle" |
"low_roi"}`: the reason says why the value leaves its budget; the receiver is always a high-ROI
envelope (HIGH_ROI names that side). Moves come in budget-id order, then in receiver rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, TypedDict

from .dna import MAX_RESOURCES
from .errors import InvalidInput, TooLarge
from .schema import MAX_AMOUNT, Amounts

ENTITY_KINDS = ("agent", "record")
ID_LEN = 32
MAX_BUDGETS = 4096
MAX_WINDOW = 1 << 53
LLM_PREFIX = "llm_tokens."
IDLE: Final = "idle"
LOW_ROI: Final = "low_roi"
HIGH_ROI: Final = "high_roi"  # the receiving side of every move (no move carries it)
Entity: TypeAlias = tuple[str, bytes]
Reason: TypeAlias = Literal["idle", "low_roi"]
Move = TypedDict("Move", {"from": bytes, "to": Entity, "amounts": dict[str, int], "reason": Reason})


def _id(v: object, what: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != ID_LEN:
        raise InvalidInput(f"{what} is {ID_LEN} bytes")
    return v


def _whole(v: object, what: str, lo: int = 0, hi: int = MAX_AMOUNT) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise InvalidInput(f"{what} must be a whole number from {lo} to {hi}")
    return v


def _units(v: object, what: str) -> Amounts:
    if not isinstance(v, Mapping) or len(v) > MAX_RESOURCES:
        raise InvalidInput(f"{what} is a map of at most {MAX_RESOURCES} resources to units")
    out = {}
    for k, x in v.items():
        if not isinstance(k, str) or not 0 < len(k) <= 64:
            raise InvalidInput(f"{what}: a resource is named by 1 to 64 characters")
        if _whole(x, f"{what} {k}"):
            out[k] = x
    return MappingProxyType(dict(sorted(out.items())))


def _fraction(v: object, what: str, lo: Fraction, hi: Fraction) -> Fraction:
    if not isinstance(v, (int, Fraction)) or isinstance(v, bool) or not lo <= v <= hi:
        raise InvalidInput(f"{what} must be an exact number (int or Fraction) from {lo} to {hi}")
    return Fraction(v)


@dataclass(frozen=True)
class EnvelopeBudget:
    """One budget of an envelope, as derived from the chains: what the planner reads."""

    budget: bytes
    entity: Entity
    holder: bytes
    available: Mapping[str, int]  # resource -> units ("ru" in milli-RU)
    spent: Mapping[str, int]
    edges: int  # link_edge writes the budget paid for
    last_active_window: int  # window of its last spend, or of its funding if never spent
    market_weight_milli: int  # the entity's market weight in thousandths, -500 to 500
    void: bool = False

    def __post_init__(self) -> None:
        _id(self.budget, "a budget id")
        e = self.entity
        if not isinstance(e, tuple) or len(e) != 2 or e[0] not in ENTITY_KINDS:
            raise InvalidInput(f"an entity is (kind, id) with kind one of {ENTITY_KINDS}")
        _id(e[1], "an entity id")
        _id(self.holder, "a holder")
        # frozen: the parsed maps replace what the caller passed (a dict stays the caller's)
        object.__setattr__(self, "available", _units(self.available, "available"))
        object.__setattr__(self, "spent", _units(self.spent, "spent"))
        _whole(self.edges, "edges")
        _whole(self.last_active_window, "last_active_window", 0, MAX_WINDOW)
        _whole(self.market_weight_milli, "market_weight_milli", -500, 500)
        if not isinstance(self.void, bool):
            raise InvalidInput("void is True or False")

    @property
    def llm_tokens(self) -> int:
        return sum(x for k, x in self.spent.items() if k.startswith(LLM_PREFIX))


@dataclass(frozen=True)
class Rules:
    """The planner's parameters, each with the default the docs describe."""

    idle_windows: int = 7  # the DNA's rule; a budget this many windows without spend is idle
    min_llm_tokens: int = 10_000  # an envelope's ROI counts from this much LLM-token spend on
    low_roi_fraction: Fraction = Fraction(1, 2)  # low: ROI below this x the network's ROI
    low_roi_keep: Fraction = Fraction(1, 4)  # a low-ROI envelope keeps this share of each resource
    max_receivers: int = 8  # receivers of one source's value: bounds the plan's size

    def __post_init__(self) -> None:
        _whole(self.idle_windows, "idle_windows", 1, MAX_WINDOW)
        _whole(self.min_llm_tokens, "min_llm_tokens", 1)
        _fraction(self.low_roi_fraction, "low_roi_fraction", Fraction(0), Fraction(1))
        _fraction(self.low_roi_keep, "low_roi_keep", Fraction(0), Fraction(1))
        _whole(self.max_receivers, "max_receivers", 1, 256)


@dataclass
class _Envelope:
    entity: Entity
    weight_milli: int
    edges: int = 0
    tokens: int = 0
    live: list[EnvelopeBudget] = field(default_factory=list)  # neither void nor idle

    def roi(self, rules: Rules) -> Fraction | None:
        """None until the envelope has spent `min_llm_tokens`: too little to judge it by."""
        return Fraction(self.edges, self.tokens) if self.tokens >= rules.min_llm_tokens else None


def plan(budgets: Sequence[EnvelopeBudget], window: int, rules: Rules | None = None) -> list[Move]:
    """The moves that rebalance `budgets` at allowance window `window` (module docstring)."""
    rules = Rules() if rules is None else rules
    if not isinstance(budgets, Sequence):
        raise InvalidInput("a plan takes a list of budgets")
    if len(budgets) > MAX_BUDGETS:
        raise TooLarge(f"a plan takes at most {MAX_BUDGETS} budgets")
    _whole(window, "window", 0, MAX_WINDOW)
    if not isinstance(rules, Rules):
        raise InvalidInput("rules is a rebalance.Rules")
    envs, idle = _envelopes(budgets, window, rules)
    bar = _network_roi(envs.values(), rules)
    rank = _receivers(envs.values(), bar, rules)
    if bar is None or not rank:
        return []
    sources: list[tuple[EnvelopeBudget, Mapping[str, int], Reason]] = [
        (b, b.available, IDLE) for b in idle
    ]
    for env in envs.values():
        sources += [(b, a, LOW_ROI) for b, a in _over_cap(env, bar, rules)]
    moves: list[Move] = []
    for b, amounts, reason in sorted(sources, key=lambda s: s[0].budget):
        # its own envelope is at most one of the first max_receivers + 1
        to = [(e, w) for e, w in rank[: rules.max_receivers + 1] if e != b.entity]
        moves += _split(b.budget, amounts, reason, to[: rules.max_receivers])
    return moves


def _envelopes(
    budgets: Iterable[EnvelopeBudget], window: int, rules: Rules
) -> tuple[dict[Entity, _Envelope], list[EnvelopeBudget]]:
    envs: dict[Entity, _Envelope] = {}
    idle, seen = [], set()
    for b in sorted(budgets, key=_budget_id):
        if b.budget in seen:
            raise InvalidInput(f"budget {b.budget.hex()} is listed twice")
        seen.add(b.budget)
        if b.last_active_window > window:
            raise InvalidInput(f"budget {b.budget.hex()} was active after window {window}")
        env = envs.setdefault(b.entity, _Envelope(b.entity, b.market_weight_milli))
        if env.weight_milli != b.market_weight_milli:
            raise InvalidInput(
                f"the budgets of {b.entity[0]} {b.entity[1].hex()} differ in market weight"
            )
        env.edges += b.edges
        env.tokens += b.llm_tokens
        if b.void:
            continue
        if window - b.last_active_window >= rules.idle_windows:
            idle.append(b)
        else:
            env.live.append(b)
    return envs, idle


def _budget_id(b: object) -> bytes:
    if not isinstance(b, EnvelopeBudget):
        raise InvalidInput("each budget is a rebalance.EnvelopeBudget")
    return b.budget


def _network_roi(envs: Iterable[_Envelope], rules: Rules) -> Fraction | None:
    counted = [e for e in envs if e.roi(rules) is not None]
    tokens = sum(e.tokens for e in counted)
    return Fraction(sum(e.edges for e in counted), tokens) if tokens else None


def _receivers(
    envs: Iterable[_Envelope], bar: Fraction | None, rules: Rules
) -> list[tuple[Entity, Fraction]]:
    """The high-ROI envelopes, best first, each with its rank score roi x (1 + market weight)."""
    out = []
    for env in envs:
        roi = env.roi(rules)
        if roi is not None and bar is not None and roi > 0 and roi >= bar and env.live:
            out.append((env.entity, roi * (1 + Fraction(env.weight_milli, 1000))))
    return sorted(out, key=lambda r: (-r[1], r[0]))


def _over_cap(
    env: _Envelope, bar: Fraction, rules: Rules
) -> list[tuple[EnvelopeBudget, Mapping[str, int]]]:
    """What a low-ROI envelope gives back from its live budgets: all above its cap (none from
    an envelope whose ROI is not low, or does not count yet)."""
    roi = env.roi(rules)
    if roi is None or roi >= rules.low_roi_fraction * bar:
        return []
    total: dict[str, int] = {}
    for b in env.live:
        for k, x in b.available.items():
            total[k] = total.get(k, 0) + x
    excess = {k: x - int(x * rules.low_roi_keep) for k, x in total.items()}
    out: list[tuple[EnvelopeBudget, Mapping[str, int]]] = []
    for b in env.live:  # in budget-id order (_envelopes sorted them)
        take = {k: min(x, excess[k]) for k, x in b.available.items() if min(x, excess[k])}
        for k, x in take.items():
            excess[k] -= x
        if take:
            out.append((b, take))
    return out


def _split(
    source: bytes, amounts: Mapping[str, int], reason: Reason, to: list[tuple[Entity, Fraction]]
) -> list[Move]:
    """`amounts` shared among `to` by score, rounded down, the remainder to the first."""
    if not to:
        return []
    total_score = sum(w for _, w in to)
    shares: list[dict[str, int]] = [{} for _ in to]
    for k, x in amounts.items():
        parts = [int(x * w / total_score) for _, w in to]
        parts[0] += x - sum(parts)
        for share, part in zip(shares, parts):
            if part:
                share[k] = part
    return [
        {"from": source, "to": e, "amounts": share, "reason": reason}
        for (e, _), share in zip(to, shares)
        if share
    ]
