"""The agent API in one place: the method table every agent handle shares (in process and
remote), the result types its methods return (the app socket carries them as `RESULT_TYPES`),
and the count of refusals by code. It imports only the core, so the node, the app server and
the remote client all build on it without importing each other.

The typed methods name the Rose Forest functions (a convenience for agent code); `call(zome,
fn, payload)` reaches any function of whatever app the node runs.
"""

from __future__ import annotations

import secrets
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


@dataclass(frozen=True)
class Balance:
    """One resource of a budget (RU in RU): a card's `funded` is its limit."""

    available: float | int
    reserved: float | int  # escrowed for cards this budget delegated, not yet returned
    pending: float | int  # in holds not yet resolved
    spent: float | int
    funded: float | int


@dataclass(frozen=True)
class BudgetView:
    id: str
    name: str
    kind: str  # "budget", "card" or "wallet"
    holder: str
    parent: str | None
    schema: dict
    void: bool
    stage: str  # planning, partial, funded
    balances: dict  # resource -> {available, reserved, pending, spent, funded}

    def balance(self, resource: str = "ru") -> Balance:
        b = self.balances.get(resource)
        return Balance(0, 0, 0, 0, 0) if b is None else Balance(**b)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RefineResult:
    outputs: list  # each instruction's result (a write's action hash)
    authorized_by: str  # the budget that paid, or "ambient"
    spent: dict  # resource -> amount (RU in RU)


@dataclass(frozen=True)
class HoldView:
    task_id: str
    id: str
    budget: str
    state: str  # pending, settled, cancelled, expired
    amounts: dict
    settled: dict
    payee: str | None
    credit: str | None  # the payee's credit (the settle action), once settled
    expires_at: int  # unix seconds


RESULT_TYPES = {
    "BudgetStatus": BudgetStatus,
    "AllocationResult": AllocationResult,
    "BudgetView": BudgetView,
    "RefineResult": RefineResult,
    "HoldView": HoldView,
}


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

    # -- budgets as authorizers (docs/SDK.md, "Budgets")
    async def mint_budget(self, amounts, holder: str, name: str = "", schema=None) -> str:
        """A steward's root budget, from nothing (at most the DNA's mint_limit a window)."""
        return await self.call(
            "budget",
            "mint_budget",
            {"amounts": amounts, "holder": holder, "name": name, "schema": schema},
        )

    async def fund_budget(self, parent: str, amounts, holder: str, name: str = "", schema=None):
        return await self.call(
            "budget",
            "fund_budget",
            {
                "parent": parent,
                "amounts": amounts,
                "holder": holder,
                "name": name,
                "schema": schema,
            },
        )

    async def delegate_budget(
        self, parent: str, holder: str, max_spend, schema=None, expires_at=None, name: str = ""
    ) -> str:
        return await self.call(
            "budget",
            "delegate_budget",
            {
                "parent": parent,
                "holder": holder,
                "max_spend": max_spend,
                "schema": schema,
                "expires_at": expires_at,
                "name": name,
            },
        )

    async def revoke_budget(self, budget: str) -> str:
        return await self.call("budget", "revoke_budget", {"budget": budget})

    async def refine(self, targets=(), instructions=(), budgets=None) -> RefineResult:
        return await self.call(
            "budget",
            "refine",
            {"targets": list(targets), "instructions": instructions, "budgets": budgets},
        )

    async def get_budget(self, budget: str) -> BudgetView:
        return await self.call("budget", "get_budget", {"budget": budget})

    async def list_budgets(self) -> list[BudgetView]:
        """The budgets, cards and wallet this agent holds."""
        return await self.call("budget", "list_budgets", {})

    async def wallet(self) -> str | None:
        return await self.call("budget", "wallet", {})

    async def commit_spend(
        self, budget: str, amounts, task_id: str, timeout_s: float = 600
    ) -> HoldView:
        return await self.call(
            "budget",
            "commit_spend",
            {"budget": budget, "amounts": amounts, "task_id": task_id, "timeout_s": timeout_s},
        )

    async def settle_spend(self, task_id: str, amounts, payee: str) -> HoldView:
        return await self.call(
            "budget", "settle_spend", {"task_id": task_id, "amounts": amounts, "payee": payee}
        )

    async def cancel_spend(self, task_id: str) -> HoldView:
        return await self.call("budget", "cancel_spend", {"task_id": task_id})

    def spend(
        self,
        budget: str,
        amounts,
        payee: str | None = None,
        task_id: str | None = None,
        timeout_s: float = 600,
    ):
        """`async with agent.spend(budget, {"ru": 20}) as hold: ... hold.use({"ru": 7})`: a
        two-phase spend that settles what `use` recorded (to `payee`, default this agent) when
        the block ends, and cancels the hold if the block raises."""
        return _Spend(self, budget, amounts, payee, task_id, timeout_s)

    async def lineage(self, record: str) -> list[dict]:
        """The steps from `record` (an output, transfer or settlement) back to its mint."""
        return await self.call("budget", "lineage", {"record": record})


class _Spend:
    def __init__(self, agent, budget, amounts, payee, task_id, timeout_s):
        self.agent, self.budget, self.amounts = agent, budget, amounts
        self.payee = payee or agent.agent_id
        self.task_id = task_id or f"spend-{secrets.token_hex(8)}"
        self.timeout_s = timeout_s
        self.used: dict = {}
        self.hold: HoldView | None = None

    def use(self, amounts: dict) -> None:
        """Record what was used (added up; settled when the block ends)."""
        for k, v in amounts.items():
            self.used[k] = self.used.get(k, 0) + v

    async def __aenter__(self) -> _Spend:
        self.hold = await self.agent.commit_spend(
            self.budget, self.amounts, self.task_id, self.timeout_s
        )
        return self

    async def __aexit__(self, et, e, tb) -> None:
        if et is None:
            self.hold = await self.agent.settle_spend(self.task_id, self.used, self.payee)
        else:
            self.hold = await self.agent.cancel_spend(self.task_id)


def refusals(node) -> Counter:
    """Refusals by code of the calls made on `node` (in process and over its app socket)."""
    c = _REFUSALS.get(node)
    if c is None:
        c = _REFUSALS[node] = Counter()
    return c


_REFUSALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
