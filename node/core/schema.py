"""Amounts and schemas of budgets (node/core/ledger.py): a budget's resources as integer units
(milli-RU for "ru"), and its schema, the constitution a child's must narrow. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

from .dna import Dna
from .errors import InvalidInput

MAX_AMOUNT = 1 << 53
MAX_OPS = 32
Amounts: TypeAlias = "MappingProxyType[str, int]"  # resource -> units (milli-RU for "ru")
EMPTY: Amounts = MappingProxyType({})
Plain: TypeAlias = dict[str, Any]


def none() -> Any:
    """A field defaulting to no amounts (a mapping proxy is unhashable, so not a default)."""
    return field(default_factory=lambda: EMPTY)


# -- amounts
def amounts(v: Any, dna: Dna, what: str, positive: bool = False) -> Amounts:
    """A map of resource -> integer units, each a resource the DNA lists."""
    if not isinstance(v, dict) or len(v) > len(dna.resources):
        raise InvalidInput(f"{what} is a map of resource names to amounts")
    out = {}
    for k, x in v.items():
        if k not in dna.resources:
            raise InvalidInput(
                f"{what}: unknown resource {k!r} (the DNA lists {list(dna.resources)})"
            )
        if type(x) is not int or not 0 <= x <= MAX_AMOUNT or (positive and x == 0):
            raise InvalidInput(f"{what}: {k} must be a whole number of units, 0 to 2^53")
        if x:
            out[k] = x
    if positive and not out:
        raise InvalidInput(f"{what} moves nothing")
    return MappingProxyType(dict(sorted(out.items())))


def add(a: Amounts, b: Amounts, sign: int = 1) -> Amounts:
    out = dict(a)
    for k, x in b.items():
        out[k] = out.get(k, 0) + sign * x
    return MappingProxyType({k: x for k, x in sorted(out.items()) if x})


def covers(have: Amounts, need: Amounts) -> str | None:
    """The first resource `have` lacks for `need`, or None."""
    for k, x in need.items():
        if have.get(k, 0) < x:
            return k
    return None


# -- schemas
@dataclass(frozen=True)
class Schema:
    """A budget's constitution: what it may pay for and how."""

    ops: tuple[str, ...] = ("*",)
    max_per_call: Amounts = none()
    min_reserve: Amounts = none()
    can_fund: bool = False
    can_delegate: bool = False
    expires_at: int | None = None  # unix seconds
    funding_target: Amounts = none()

    @classmethod
    def parse(cls, v: Any, dna: Dna) -> Schema:
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise InvalidInput("a schema is a map")
        bad = set(v) - set(SCHEMA_KEYS)
        if bad:
            raise InvalidInput(f"unknown schema field(s) {sorted(bad)}; fields: {SCHEMA_KEYS}")
        ops = v.get("ops", ["*"])
        if (
            not isinstance(ops, (list, tuple))
            or not 1 <= len(ops) <= MAX_OPS
            or not all(isinstance(p, str) and _pattern_ok(p) for p in ops)
        ):
            raise InvalidInput('schema ops: 1-32 patterns "zome.fn", "zome.*" or "*"')
        exp = v.get("expires_at")
        if exp is not None and (type(exp) is not int or not 0 < exp < MAX_AMOUNT):
            raise InvalidInput("schema expires_at: unix seconds or None")
        for k in ("can_fund", "can_delegate"):
            if not isinstance(v.get(k, False), bool):
                raise InvalidInput(f"schema {k}: true or false")
        return cls(
            tuple(sorted(set(ops))),
            amounts(v.get("max_per_call", {}), dna, "schema max_per_call"),
            amounts(v.get("min_reserve", {}), dna, "schema min_reserve"),
            v.get("can_fund", False),
            v.get("can_delegate", False),
            exp,
            amounts(v.get("funding_target", {}), dna, "schema funding_target"),
        )

    def plain(self) -> Plain:
        return {
            "ops": list(self.ops),
            "max_per_call": dict(self.max_per_call),
            "min_reserve": dict(self.min_reserve),
            "can_fund": self.can_fund,
            "can_delegate": self.can_delegate,
            "expires_at": self.expires_at,
            "funding_target": dict(self.funding_target),
        }

    def permits(self, op: str) -> str | None:
        """The pattern that allows `op` ("zome.fn"), or None."""
        zome = op.split(".", 1)[0]
        for p in self.ops:
            if p == "*" or p == op or p == f"{zome}.*":
                return p
        return None

    def narrowing_fault(self, parent: Schema) -> str | None:
        """Why this schema is not a narrowing of `parent`'s, or None."""
        for p in self.ops:
            if not _covered(p, parent.ops):
                return f"ops {p!r} is not within the parent's {list(parent.ops)}"
        for k, x in parent.max_per_call.items():
            if self.max_per_call.get(k, MAX_AMOUNT + 1) > x:
                return f"max_per_call {k} must be at most the parent's {x}"
        if parent.expires_at is not None and (
            self.expires_at is None or self.expires_at > parent.expires_at
        ):
            return f"expires_at must be at most the parent's {parent.expires_at}"
        if self.can_fund and not parent.can_fund:
            return "can_fund needs a parent that can fund"
        if self.can_delegate and not parent.can_delegate:
            return "can_delegate needs a parent that can delegate"
        return None


SCHEMA_KEYS = (
    "ops",
    "max_per_call",
    "min_reserve",
    "can_fund",
    "can_delegate",
    "expires_at",
    "funding_target",
)


def _pattern_ok(p: str) -> bool:
    if p == "*":
        return True
    zome, dot, fn = p.partition(".")
    return (
        bool(dot and zome and fn)
        and len(p) <= 128
        and "*" not in zome
        and ("*" not in fn or fn == "*")
    )


def _covered(p: str, parent_ops: tuple[str, ...]) -> bool:
    if "*" in parent_ops or p in parent_ops:
        return True
    return p != "*" and not p.endswith(".*") and p.split(".", 1)[0] + ".*" in parent_ops
