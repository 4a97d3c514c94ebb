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


@dataclass(frozen=True)
class AllocationResult:
    requested_ru: float
    granted_ru: float | None  # None while the grant waits to be claimed (claimed False)
    grant: str  # the grant's hash, text form
    allocation: str  # the steward's action recording it
    claimed: bool = True  # False while a grant to an unreachable agent waits to be claimed

    def to_dict(self) -> dict:
        return dict(self.__dict__)


RESULT_TYPES = {"BudgetStatus": BudgetStatus, "AllocationResult": AllocationResult}


class AgentMethods:
    """The one method table of an agent handle, shared by the in-process `AgentClient` and the
    remote client (`AgentClient.connect`), so the two cannot drift: every method is a
    `call(zome, fn, payload)`; a subclass supplies `call` and `_get_record`."""

    agent_id: str

    async def call(self, zome: str, fn: str, payload: dict | None = None):
        raise NotImplementedError

    async def _get_record(self, action_hash: str) -> dict:
        raise NotImplementedError

    async def add_knowledge(self, content: str, tags=()) -> str:
        return await self.call("rose_forest", "add_knowledge", {"content": content, "tags": tags})

    async def link_edge(self, from_hash: str, to_hash: str, relation: str) -> str:
        return await self.call(
            "rose_forest",
            "link_edge",
            {"from_hash": from_hash, "to_hash": to_hash, "relation": relation},
        )

    async def create_thought_credential(self, title: str, body: str) -> str:
        return await self.call(
            "rose_forest", "create_thought_credential", {"title": title, "body": body}
        )

    async def get_edges(self, from_hash: str, limit: int = 100) -> list[dict]:
        return await self.call("rose_forest", "get_edges", {"from_hash": from_hash, "limit": limit})

    async def transmit_understanding(
        self, subject: str, predicate: str, object: str, context: str | None = None
    ) -> str:
        return await self.call(
            "memory",
            "transmit_understanding",
            {"subject": subject, "predicate": predicate, "object": object, "context": context},
        )

    async def recall_understandings(self, subject: str | None = None, limit: int = 100):
        return await self.call(
            "memory", "recall_understandings", {"subject": subject, "limit": limit}
        )

    async def compose_memories(self, other_agent_id: str) -> str:
        return await self.call("memory", "compose_memories", {"other_agent_id": other_agent_id})

    async def validate_triple(self, subject: str, predicate: str, object: str) -> str:
        return await self.call(
            "memory",
            "validate_triple",
            {"subject": subject, "predicate": predicate, "object": object},
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
