"""Adversarial test modes by name, and the one gateway that plugs them into a node: the modes a
rogue Cell cheats with on budgets, `fork` (its publisher sends twins), and `byzantine` (its
transport lies on the wire while the node code stays honest). One table, so the simulator,
LocalCluster and `budgetnode up` accept and refuse the same names (`backdate`: stamps in the past
and opens windows without a witness; `sybil`: agents without invites). The adversaries themselves
live in sims/ (sims/rogue.py, sims/byzantine.py) and are imported only when a mode is asked for:
production code holds no way to cheat."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from .transport import TransportFactory

CELL_MODES = (
    "skip_preflight",
    "forge_budget",
    "wrong_cost",
    "bad_signature",
    "backdate",
    "overspend_budget",  # writes paid by a budget or card past its balance
    # governance (issue 18): a second vote on one proposal; a grant before the proposer's chain
    # tallied an approving quorum; a grant above what the proposal was approved for
    "double_vote",
    "grant_without_quorum",
    "overgrant",
)
# makes agents without invites (sims.rogue.sybil_agent); an open network has nothing to refuse
IDENTITY_MODES = ("sybil",)
NODE_MODES = ("fork",)  # the publisher sends twins
WIRE_MODES = ("byzantine",)  # the transport misbehaves; the node code stays honest
KNOWN = CELL_MODES + IDENTITY_MODES + NODE_MODES + WIRE_MODES


def check(modes: str | Iterable[str]) -> tuple[str, ...]:
    """The modes as a tuple; ValueError naming the known ones if any is unknown."""
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    bad = [m for m in modes if m not in KNOWN]
    if bad:
        raise ValueError(
            f"unknown rogue mode(s) {', '.join(map(repr, bad))}; known modes: {', '.join(KNOWN)}"
        )
    return modes


def plug(
    factory: TransportFactory, modes: str | Iterable[str], seed: str | bytes
) -> tuple[TransportFactory, dict[str, Any]]:
    """(transport factory, NetNode.open keyword arguments) for a node in `modes`: unchanged and
    {} for an honest one. `seed` seeds the Byzantine transport's lies."""
    modes = check(modes)
    kwargs: dict[str, Any] = {}
    own = [m for m in modes if m not in WIRE_MODES]
    if own:
        from sims.rogue import node_kwargs

        kwargs = node_kwargs(own)
    if "byzantine" in modes:
        from sims.byzantine import byzantine_factory

        factory = byzantine_factory(factory, random.Random(seed))
    return factory, kwargs
