"""What an integrity zome declares: entry types, the operation that pays for each, how
its content is validated, and which index keys make it findable."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import InvalidInput


@dataclass(frozen=True)
class EntryDef:
    name: str
    op: str                                   # the cost-table operation that pays for it
    validate: Callable[[dict], None]          # raises InvalidInput; must be deterministic
    index: Callable[[dict], list] = lambda content: []   # [(kind, key)] for local lookups


class App:
    def __init__(self, entry_defs: list[EntryDef]):
        self.entry_defs = {d.name: d for d in entry_defs}
        if len(self.entry_defs) != len(entry_defs):
            raise ValueError("duplicate entry type")

    def entry_def(self, name: str) -> EntryDef | None:
        return self.entry_defs.get(name)


# Small validation helpers the integrity zomes share.
def need_text(content: dict, key: str, max_len: int, optional: bool = False) -> None:
    v = content.get(key)
    if v is None and optional:
        return
    if not isinstance(v, str) or not v or len(v.encode()) > max_len:
        raise InvalidInput(f"{key} must be a non-empty string of at most {max_len} bytes")


def need_hash(content: dict, key: str) -> None:
    v = content.get(key)
    if not isinstance(v, bytes) or len(v) != 32:
        raise InvalidInput(f"{key} must be a 32-byte hash")


def need_keys(content, allowed: set) -> None:
    if not isinstance(content, dict):
        raise InvalidInput("entry content must be a map")
    extra = set(content) - allowed
    if extra:
        raise InvalidInput(f"unexpected fields: {sorted(extra)}")
