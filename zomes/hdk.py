"""What coordinator zomes are written against: a registry of callable functions.

A function declares nothing about budgets beyond its entry types (whose integrity
definition names the paying operation); the node charges, the zome never does.

Every parameter after `ctx` declares its type and range in its annotation,
`Annotated[type, Param]` (a `Param`, below; `ActionId`, `AgentId`, `Count`, `MilliRu` name the
common ones):
`ZomeFn.check` validates a caller's payload against them in one place, before the function runs
(`LocalNode.call`, for in-process calls and the app socket alike), so no function checks its own
inputs and none can forget to. A parameter without a `Param` is refused when the module loads.
"""

from __future__ import annotations

import inspect
import math
import typing
from dataclasses import dataclass, field
from collections.abc import Callable
from decimal import Decimal

from node.core.crypto import from_text
from node.core.errors import InvalidInput
from node.core.money import MRU_PER_RU


class Param:
    """A parameter's type and range. `check` returns the value the function receives (parsed:
    text ids become bytes, RU become milli-RU) or raises InvalidInput naming the parameter.
    `dna` gives the network's limits (max_results, cap_mru)."""

    def check(self, name: str, value, dna):
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Param):
    """A string of `min_bytes` to `max_bytes` UTF-8 bytes (the integrity zome may ask more)."""

    max_bytes: int = 64 * 1024
    min_bytes: int = 0

    def check(self, name, value, dna):
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be a string, not {_kind(value)}")
        if not self.min_bytes <= len(value.encode()) <= self.max_bytes:
            raise InvalidInput(
                f"{name} must be a string of {self.min_bytes} to {self.max_bytes} bytes"
            )
        return value


@dataclass(frozen=True)
class TextList(Param):
    """A list of strings, at most `max_items` of them."""

    max_items: int = 64
    item: Text = field(default_factory=Text)

    def check(self, name, value, dna):
        if not isinstance(value, (list, tuple)):
            raise InvalidInput(f"{name} must be a list of strings, not {_kind(value)}")
        if len(value) > self.max_items:
            raise InvalidInput(f"{name} holds at most {self.max_items} items")
        return [self.item.check(f"{name}[{i}]", v, dna) for i, v in enumerate(value)]


@dataclass(frozen=True)
class Id(Param):
    """A text id of `kind` ("action", "agent", …); the function receives its 32 bytes."""

    kind: str

    def check(self, name, value, dna):
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be a {self.kind} id (text), not {_kind(value)}")
        try:
            return from_text(self.kind, value)
        except InvalidInput as e:
            raise InvalidInput(f"{name}: {e.message}") from None


@dataclass(frozen=True)
class Limit(Param):
    """How many results to return: an integer from 1 to the DNA's max_results."""

    def check(self, name, value, dna):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{name} must be an integer, not {_kind(value)}")
        if not 1 <= value <= dna.max_results:
            raise InvalidInput(f"{name} must be from 1 to {dna.max_results}, not {value}")
        return value


@dataclass(frozen=True)
class Ru(Param):
    """An amount of RU (a number, more than 0, at most the DNA's cap): the function receives it
    in integer milli-RU, rounded down."""

    def check(self, name, value, dna):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{name} must be a number of RU, not {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{name} must be a finite number")
        mru = int(Decimal(str(value)) * MRU_PER_RU)
        if not 0 < mru <= dna.cap_mru:
            raise InvalidInput(
                f"{name} must be more than 0 and at most {dna.cap_mru / MRU_PER_RU:g}"
            )
        return mru


def units_of(resource: str, value, name: str) -> int:
    """An amount of one resource as integer units: RU given in RU (at most 3 decimals) become
    milli-RU; any other resource is counted in whole units."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name}: {resource} must be a number, not {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{name}: {resource} must be a finite number")
    if resource != "ru":
        if not isinstance(value, int) and not float(value).is_integer():
            raise InvalidInput(f"{name}: {resource} is counted in whole units")
        return int(value)
    exact = Decimal(str(value)) * MRU_PER_RU
    if exact != exact.to_integral_value():
        raise InvalidInput(f"{name}: RU have at most 3 decimals")
    return int(exact)


@dataclass(frozen=True)
class Amounts(Param):
    """A map of resource name -> amount (RU in RU): the function receives integer units (RU in
    milli-RU), each between 0 and 2^53, every resource one the DNA lists."""

    positive: bool = False

    def check(self, name, value, dna):
        if not isinstance(value, dict):
            raise InvalidInput(f'{name} must be a map of resources to amounts, e.g. {{"ru": 5}}')
        out = {}
        for k, v in value.items():
            if k not in dna.resources:
                raise InvalidInput(
                    f"{name}: unknown resource {k!r}; the network has {list(dna.resources)}"
                )
            u = units_of(k, v, name)
            if not 0 <= u <= 1 << 53:
                raise InvalidInput(f"{name}: {k} must be between 0 and 2^53 units")
            out[k] = u
        if self.positive and not any(out.values()):
            raise InvalidInput(f"{name} must move some amount")
        return out


SCHEMA_AMOUNTS = ("max_per_call", "min_reserve", "funding_target")


@dataclass(frozen=True)
class BudgetSchema(Param):
    """A budget's schema (node/core/ledger.py Schema): its amount fields given like Amounts."""

    def check(self, name, value, dna):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidInput(f"{name} must be a map (ops, max_per_call, min_reserve, ...)")
        out = dict(value)
        for k in SCHEMA_AMOUNTS:
            if k in out:
                out[k] = Amounts().check(f"{name}.{k}", out[k], dna)
        return out


@dataclass(frozen=True)
class Seconds(Param):
    """A number of seconds, more than 0 and at most `most`."""

    most: float = 366 * 86_400

    def check(self, name, value, dna):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{name} must be a number of seconds, not {_kind(value)}")
        if not 0 < value <= self.most:
            raise InvalidInput(f"{name} must be more than 0 and at most {self.most:g} s")
        return value


@dataclass(frozen=True)
class UnixSeconds(Param):
    """A moment as whole unix seconds."""

    def check(self, name, value, dna):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1 << 40:
            raise InvalidInput(f"{name} must be whole unix seconds")
        return value


@dataclass(frozen=True)
class Ids(Param):
    """A list of text ids of one kind (or one id alone), at most `max_items`: bytes."""

    kind: str
    max_items: int = 64

    def check(self, name, value, dna):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or len(value) > self.max_items:
            raise InvalidInput(f"{name} must be a list of at most {self.max_items} ids")
        return [Id(self.kind).check(name, v, dna) for v in value]


@dataclass(frozen=True)
class Instructions(Param):
    """One instruction {"zome", "fn", "payload"} or a list of 1-16 of them."""

    def check(self, name, value, dna):
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not 1 <= len(value) <= 16:
            raise InvalidInput(f"{name}: one instruction or a list of 1 to 16")
        for ins in value:
            if (
                not isinstance(ins, dict)
                or set(ins) - {"zome", "fn", "payload"}
                or not isinstance(ins.get("zome"), str)
                or not isinstance(ins.get("fn"), str)
            ):
                raise InvalidInput(f'{name}: an instruction is {{"zome", "fn", "payload"}}')
        return [(i["zome"], i["fn"], i.get("payload")) for i in value]


@dataclass(frozen=True)
class Optional(Param):
    """`inner`, or None."""

    inner: Param

    def check(self, name, value, dna):
        return None if value is None else self.inner.check(name, value, dna)


def _param(hint) -> Param | None:
    found = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Param)]
    return found[0] if len(found) == 1 else None


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


ActionId = typing.Annotated[bytes, Id("action")]
AgentId = typing.Annotated[bytes, Id("agent")]
Count = typing.Annotated[int, Limit()]
MilliRu = typing.Annotated[int, Ru()]  # given in RU, received in milli-RU
BudgetId = typing.Annotated[bytes, Id("budget")]


@dataclass(frozen=True)
class ZomeFn:
    zome: str
    name: str
    fn: Callable
    params: tuple  # parameter names after ctx
    required: frozenset
    writes: bool
    specs: tuple = ()  # (name, Param) per parameter, in order
    names: frozenset = frozenset()

    def check(self, payload, dna) -> dict:
        """The payload as the function receives it (every value checked and parsed), or
        InvalidInput: not a map, an unknown or missing name, a bad type or range."""
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise InvalidInput("the payload must be a map of parameter names to values")
        keys = payload.keys()
        unknown = keys - self.names
        missing = self.required - keys
        if unknown or missing:
            raise InvalidInput(
                f"{self.zome}.{self.name} takes {list(self.params)}; "
                + (f"unknown {sorted(map(str, unknown))} " if unknown else "")
                + (f"missing {sorted(missing)}" if missing else "")
            )
        return {n: p.check(n, payload[n], dna) for n, p in self.specs if n in payload}


def zome_fn(zome: str, writes: bool = True):
    def wrap(fn):
        sig = list(inspect.signature(fn).parameters.values())[1:]
        hints = typing.get_type_hints(fn, include_extras=True)
        spec = {p.name: _param(hints.get(p.name)) for p in sig}
        bare = [n for n, v in spec.items() if v is None]
        if bare:
            raise TypeError(
                f"{zome}.{fn.__name__}: declare a Param (zomes.hdk) for {bare}: every "
                f"parameter's type and range is checked before the function runs"
            )
        fn.__zome_fn__ = ZomeFn(
            zome,
            fn.__name__,
            fn,
            tuple(p.name for p in sig),
            frozenset(p.name for p in sig if p.default is p.empty),
            writes,
            tuple(spec.items()),
            frozenset(p.name for p in sig),
        )
        return fn

    return wrap


def collect(*modules) -> dict:
    table = {}
    for m in modules:
        for obj in vars(m).values():
            zf = getattr(obj, "__zome_fn__", None)
            if zf is not None:
                table[(zf.zome, zf.name)] = zf
    return table
