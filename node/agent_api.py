"""The agent API in one place: the method table every agent handle shares (in process and
remote), the result types its methods return (the app socket carries them as `RESULT_TYPES`),
and the count of refusals by code. It imports only the core, so the node, the app server and
the remote client all build on it without importing each other.

The typed methods name the Rose Forest functions (a convenience for agent code); `call(zome,
fn, payload)` reaches any function of whatever app the node runs.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass

from .core.budget import BudgetStatus
from .core.money import MRU_PER_RU

# the node's own functions, beside the app's: dry runs, the deferral queue, alerts
# (node/admission.py); reached through `call` like any function, in process and remote
NODE_ZOME = "admission"


@dataclass(frozen=True)
class AllocationResult:
    requested_ru: float
    granted_ru: float | None  # None while the grant waits to be claimed (claimed False)
    grant: str  # the grant's hash, text form
    allocation: str  # the steward's action recording it
    claimed: bool = True  # False while a grant to an unreachable agent waits to be claimed

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Admission:
    """What `check` says a call would meet now: `ok`, or the one `code` the call would be
    refused with (node/core/admission.py: the first failing check), and the budget it met:
    `need` (its cost) and `have` (the RU left) in RU, when the window `resets_at` (unix s) and
    how long until then (`retry_after_s`, for a refusal a wait can lift)."""

    ok: bool
    code: str | None
    need_mru: int
    have_mru: int
    resets_at: int
    retry_after_s: int
    message: str = ""

    @property
    def need(self) -> float:
        return self.need_mru / MRU_PER_RU

    @property
    def have(self) -> float:
        return self.have_mru / MRU_PER_RU

    def to_dict(self) -> dict:
        return {**self.__dict__, "need": self.need, "have": self.have}


@dataclass(frozen=True)
class Deferred:
    """A write queued until its agent's window resets (`defer=True`): its queue `id`, the
    operation (`zome.fn`), when it runs (`runs_at`, unix s: the agent's `resets_at`), and its
    `position` in the node's queue then (0: first)."""

    id: int
    op: str
    runs_at: int
    position: int
    code: str = "E_INSUFFICIENT_RU"  # the refusal it waits out

    def to_dict(self) -> dict:
        return dict(self.__dict__)


RESULT_TYPES = {
    "BudgetStatus": BudgetStatus,
    "AllocationResult": AllocationResult,
    "Admission": Admission,
    "Deferred": Deferred,
}


class AgentMethods:
    """The one method table of an agent handle, shared by the in-process `AgentClient` and the
    remote client (`AgentClient.connect`), so the two cannot drift: every method is a
    `call(zome, fn, payload)`; a subclass supplies `call` and `_get_record`."""

    agent_id: str

    async def _call(self, zome: str, fn: str, payload: dict | None):
        raise NotImplementedError

    async def _get_record(self, action_hash: str) -> dict:
        raise NotImplementedError

    async def call(self, zome: str, fn: str, payload: dict | None = None, *, defer: bool = False):
        """Any function of the node's app. `defer=True`: a write refused only for lack of RU
        is queued until the agent's window resets and a `Deferred` is returned instead."""
        if defer:
            payload = {"zome": zome, "fn": fn, "payload": payload}
            return await self._call(NODE_ZOME, "defer", payload)
        return await self._call(zome, fn, payload)

    # -- admission (node/admission.py)
    async def check(
        self, zome: str, fn: str, payload: dict | None = None, budgets=None
    ) -> Admission:
        """Whether `call(zome, fn, payload)` would be admitted now, and if not the code it would
        be refused with: a dry run that writes nothing, costs nothing and emits no event."""
        p = {"zome": zome, "fn": fn, "payload": payload, "budgets": budgets}
        return await self._call(NODE_ZOME, "check", p)

    async def has_budget(self, op: str, count: int = 1) -> bool:
        """Whether this agent could pay for `op` ("zome.fn" or the op's name; `count` results
        for a per-result op) now."""
        return await self._call(NODE_ZOME, "has_budget", {"op": op, "count": count})

    async def deferred(self) -> list[Deferred]:
        """This agent's queued writes, in the order they will run."""
        return await self._call(NODE_ZOME, "deferred", {})

    async def cancel_deferred(self, id: int) -> bool:
        """Drop a queued write (its `deferred_done` event says `cancelled`); False if it is
        not queued (any more)."""
        return await self._call(NODE_ZOME, "cancel_deferred", {"id": id})

    async def set_alert(self, remaining_ru) -> None:
        """One `low_budget` event a window when this agent's RU left falls below
        `remaining_ru` (None: no alert)."""
        return await self._call(NODE_ZOME, "set_alert", {"remaining_ru": remaining_ru})

    # -- the app's functions
    async def add_knowledge(self, content: str, tags=(), *, defer: bool = False) -> str:
        return await self.call(
            "rose_forest", "add_knowledge", {"content": content, "tags": tags}, defer=defer
        )

    async def link_edge(
        self, from_hash: str, to_hash: str, relation: str, *, defer: bool = False
    ) -> str:
        return await self.call(
            "rose_forest",
            "link_edge",
            {"from_hash": from_hash, "to_hash": to_hash, "relation": relation},
            defer=defer,
        )

    async def create_thought_credential(self, title: str, body: str, *, defer: bool = False) -> str:
        return await self.call(
            "rose_forest",
            "create_thought_credential",
            {"title": title, "body": body},
            defer=defer,
        )

    async def get_edges(self, from_hash: str, limit: int = 100) -> list[dict]:
        return await self.call("rose_forest", "get_edges", {"from_hash": from_hash, "limit": limit})

    async def transmit_understanding(
        self,
        subject: str,
        predicate: str,
        object: str,
        context: str | None = None,
        *,
        defer: bool = False,
    ) -> str:
        return await self.call(
            "memory",
            "transmit_understanding",
            {"subject": subject, "predicate": predicate, "object": object, "context": context},
            defer=defer,
        )

    async def recall_understandings(
        self, subject: str | None = None, limit: int = 100, *, defer: bool = False
    ):
        return await self.call(
            "memory", "recall_understandings", {"subject": subject, "limit": limit}, defer=defer
        )

    async def compose_memories(self, other_agent_id: str, *, defer: bool = False) -> str:
        return await self.call(
            "memory", "compose_memories", {"other_agent_id": other_agent_id}, defer=defer
        )

    async def validate_triple(
        self, subject: str, predicate: str, object: str, *, defer: bool = False
    ) -> str:
        return await self.call(
            "memory",
            "validate_triple",
            {"subject": subject, "predicate": predicate, "object": object},
            defer=defer,
        )

    async def budget_status(self):
        return await self.call("budget", "budget_status", {})

    async def allocate_budget(self, agent_id: str, ru) -> AllocationResult:
        return await self.call("budget", "allocate_budget", {"agent_id": agent_id, "ru": ru})

    async def invite(self, note: str = "") -> str:
        """A steward's single-use invite for one new agent, as text."""
        return await self.call("budget", "invite", {"note": note})

    async def get_record(self, action_hash: str) -> dict:
        return await self._get_record(action_hash)


def refusals(node) -> Counter:
    """Refusals by code of the calls made on `node` (in process and over its app socket)."""
    c = _REFUSALS.get(node)
    if c is None:
        c = _REFUSALS[node] = Counter()
    return c


_REFUSALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
