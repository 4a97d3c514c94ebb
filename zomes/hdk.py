"""What coordinator zomes are written against: a registry of callable functions.

A function declares nothing about budgets beyond its entry types (whose integrity
definition names the paying operation); the node charges, the zome never does.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from collections.abc import Callable


@dataclass(frozen=True)
class ZomeFn:
    zome: str
    name: str
    fn: Callable
    params: tuple  # parameter names after ctx
    required: frozenset
    writes: bool


def zome_fn(zome: str, writes: bool = True):
    def wrap(fn):
        sig = list(inspect.signature(fn).parameters.values())[1:]
        fn.__zome_fn__ = ZomeFn(
            zome,
            fn.__name__,
            fn,
            tuple(p.name for p in sig),
            frozenset(p.name for p in sig if p.default is p.empty),
            writes,
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
