"""Adversarial test modes by name: the ones the Cell cheats with on budgets, and `byzantine`, a
node that misbehaves on the wire (sims/byzantine.py wraps its transport). One table, so the
simulator, LocalCluster and `budgetnode up` accept and refuse the same names."""
from __future__ import annotations

import random

CELL_MODES = ("skip_preflight", "forge_budget", "wrong_cost", "bad_signature")
NODE_MODES = ("fork",)            # publishing.py sends twins
WIRE_MODES = ("byzantine",)       # the transport misbehaves; the node code stays honest
KNOWN = CELL_MODES + NODE_MODES + WIRE_MODES


def check(modes) -> tuple:
    """The modes as a tuple; ValueError naming the known ones if any is unknown."""
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    bad = [m for m in modes if m not in KNOWN]
    if bad:
        raise ValueError(f"unknown rogue mode(s) {', '.join(map(repr, bad))}; known modes: "
                         f"{', '.join(KNOWN)}")
    return modes


def node_modes(modes) -> tuple:
    """What NetNode.open(rogue=...) takes: the modes its own code cheats with."""
    return tuple(m for m in check(modes) if m not in WIRE_MODES)


def transport_factory(factory, modes, seed):
    """`factory`, wrapped so its node misbehaves on the wire if `byzantine` is among `modes`.
    The Byzantine wrapper is test machinery: it is imported only when asked for."""
    if "byzantine" not in check(modes):
        return factory
    from sims.byzantine import byzantine_factory
    return byzantine_factory(factory, random.Random(seed))
