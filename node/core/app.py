"""What an application declares, as data the node is given (the node imports no application):
its integrity zomes (entry types, the operation that pays for each, how content is validated,
which index keys make it findable, the cost table, the rules' version) and its coordinator
functions. `zomes/` defines the Rose Forest app this way."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from collections.abc import Callable, Iterable
from typing import Any

from .crypto import blake2b_256, to_text
from .encoding import Plain, PlainMap, encode
from .errors import InvalidInput


@dataclass(frozen=True)
class EntryDef:
    name: str
    op: str  # the cost-table operation that pays for it
    # raises InvalidInput (on anything, not only a map); must be deterministic
    validate: Callable[[Plain], None]
    # [(kind, key)] for local lookups
    index: Callable[[PlainMap], list[tuple[str, str]]] = lambda content: []
    keys: tuple[str, ...] = ()  # the kinds `index` may return (in the DNA hash)
    steward_only: bool = False  # only a DNA steward may write it (its op is free)
    present: Callable[[PlainMap], PlainMap] | None = None  # content as reads show it (readable ids)

    def index_of(self, content: PlainMap) -> list[tuple[str, str]]:
        """The index keys of valid `content`; a kind the zome did not declare is its bug."""
        out = self.index(content)
        if any(kind not in self.keys for kind, _ in out):
            raise ValueError(
                f"{self.name}: index kinds {sorted({k for k, _ in out})} "
                f"beyond the declared {list(self.keys)}"
            )
        return out


@dataclass(frozen=True)
class IntegrityZome:
    """One integrity zome. `rules_version` names its validation rules: bump it with any change
    to `validate` or `index` behaviour, so nodes running other rules are another network (the
    code itself cannot be hashed portably; the version is the author's word for it)."""

    name: str
    rules_version: int
    entry_defs: tuple[EntryDef, ...]
    costs: dict[str, int]  # op -> milli-RU (per result for `per_result` ops)
    per_result: tuple[str, ...] = ()  # read ops charged per result returned
    grant_entry: str | None = None  # the entry a steward records each grant in
    claim_op: str | None = None  # the op a grantee's claim records (free)


class App:
    def __init__(
        self,
        integrity: Iterable[IntegrityZome],
        functions: dict[tuple[str, str], Any] | None = None,
    ):
        self.integrity = tuple(integrity)
        defs = [d for z in self.integrity for d in z.entry_defs]
        self.entry_defs = {d.name: d for d in defs}
        if len(self.entry_defs) != len(defs):
            raise ValueError("duplicate entry type")
        self.costs: dict[str, int] = {}
        for z in self.integrity:
            if self.costs.keys() & z.costs.keys():
                raise ValueError(f"zome {z.name} prices an op another zome prices")
            self.costs.update(z.costs)
        self.per_result = tuple(op for z in self.integrity for op in z.per_result)
        self.grant_entry: str | None = _one(self.integrity, "grant_entry")
        self.claim_op: str | None = _one(self.integrity, "claim_op")
        unpriced = ({d.op for d in defs} | set(self.per_result) | {self.claim_op}) - {None}
        if unpriced - self.costs.keys():
            raise ValueError(f"ops without a cost: {sorted(unpriced - self.costs.keys())}")
        if self.grant_entry is not None and not self.entry_defs[self.grant_entry].steward_only:
            raise ValueError("the grant entry must be steward-only")
        self.functions = dict(functions or {})  # (zome, fn) -> hdk.ZomeFn

    @cached_property
    def fingerprint(self) -> bytes:
        """A canonical hash of what the integrity zomes decide: entry types with their paying
        op, index kinds and steward-only flag, costs, per-result ops, the grant entry and claim
        op, and each zome's rules version. The DNA carries it, so nodes whose validation
        rules differ are on different networks."""
        return blake2b_256(
            encode(
                [
                    {
                        "zome": z.name,
                        "rules_version": z.rules_version,
                        "entries": [
                            [d.name, d.op, sorted(d.keys), d.steward_only]
                            for d in sorted(z.entry_defs, key=lambda d: d.name)
                        ],
                        "costs": dict(z.costs),
                        "per_result": sorted(z.per_result),
                        "grant_entry": z.grant_entry,
                        "claim_op": z.claim_op,
                    }
                    for z in sorted(self.integrity, key=lambda z: z.name)
                ]
            )
        )

    @cached_property
    def _op_zome(self) -> dict[str, str]:
        return {op: z.name for z in self.integrity for op in z.costs}

    def op_name(self, op: str) -> str:
        """An op as a budget's schema names it, "zome.fn" (the zome that prices it)."""
        return f"{self._op_zome.get(op, '?')}.{op}"

    def entry_def(self, name: str) -> EntryDef | None:
        return self.entry_defs.get(name)

    def present(self, entry_type: str, content: PlainMap) -> PlainMap:
        edef = self.entry_defs.get(entry_type)
        return edef.present(content) if edef is not None and edef.present else dict(content)


def _one(zomes: Iterable[IntegrityZome], attr: str) -> Any:
    found = [getattr(z, attr) for z in zomes if getattr(z, attr) is not None]
    if len(found) > 1:
        raise ValueError(f"more than one zome declares {attr}")
    return found[0] if found else None


def readable_ids(**kinds: str) -> Callable[[PlainMap], PlainMap]:
    """A `present` that shows the named 32-byte fields (or lists of them) as text ids of `kind`."""

    def present(content: PlainMap) -> PlainMap:
        out = dict(content)
        for name, kind in kinds.items():
            v = out[name]  # present() sees validated content, which holds every named field
            out[name] = [to_text(kind, x) for x in v] if isinstance(v, list) else to_text(kind, v)
        return out

    return present


# Small validation helpers the integrity zomes share.
def need_text(content: PlainMap, key: str, max_len: int, optional: bool = False) -> None:
    v = content.get(key)
    if v is None and optional:
        return
    if not isinstance(v, str) or not v or len(v.encode()) > max_len:
        raise InvalidInput(f"{key} must be a non-empty string of at most {max_len} bytes")


def need_hash(content: PlainMap, key: str) -> None:
    v = content.get(key)
    if not isinstance(v, bytes) or len(v) != 32:
        raise InvalidInput(f"{key} must be a 32-byte hash")


def need_keys(content: Plain, allowed: set[str]) -> None:
    if not isinstance(content, dict):
        raise InvalidInput("entry content must be a map")
    extra = set(content) - allowed
    if extra:
        raise InvalidInput(f"unexpected fields: {sorted(extra)}")
