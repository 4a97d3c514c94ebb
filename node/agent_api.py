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
import dataclasses
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


@dataclass(frozen=True)
class ProposalView:
    """A proposal as its proposer's chain has it (node/core/governance.py)."""

    id: str
    proposer: str
    entity_type: str
    entity_id: str
    state: str  # open, approved, rejected, deferred, granted
    score: float | None  # the mean allocation score of its votes, in [0, 1]
    votes: list  # {voter, decision, score, scores}
    requested: dict
    granted: dict  # per resource (RU in RU); empty until granted
    from_budget: str
    justification: str
    evidence: list
    created_at: int  # unix seconds

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EnvelopeView:
    """The budgets attached to an entity, and the numbers derived from its holder's chain."""

    entity_type: str
    entity_id: str
    holder: str
    budgets: list  # BudgetView
    priority_score: float | None  # the allocation score of its latest grant
    market_weight: float  # in [-0.5, 0.5], from the stakes endorsing it
    roi_score: float | None  # link_edge writes per llm token its budgets spent
    edges: int
    llm_tokens_spent: int
    stakes: dict  # {"for": RU, "against": RU}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RESULT_TYPES = {
    "BudgetStatus": BudgetStatus,
    "AllocationResult": AllocationResult,
    "BudgetView": BudgetView,
    "RefineResult": RefineResult,
    "HoldView": HoldView,
    "Admission": Admission,
    "Deferred": Deferred,
    "ProposalView": ProposalView,
    "EnvelopeView": EnvelopeView,
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

    async def settle_spend(self, task_id: str, amounts, payee: str | None = None) -> HoldView:
        """`amounts` of the hold paid to `payee`'s wallet, or with no payee used up (spent by
        the budget); the rest goes back to the budget."""
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
        two-phase spend that settles what `use` recorded when the block ends (paid to
        `payee`'s wallet; with no payee, used up: metered work), and cancels the hold if the
        block raises."""
        return _Spend(self, budget, amounts, payee, task_id, timeout_s)

    # -- governance (docs/SDK.md "Governance")
    async def propose_allocation(
        self,
        entity_type: str,
        entity_id: str,
        amounts: dict,
        justification: str,
        evidence: list,
        from_budget: str,
    ) -> str:
        """Ask that `from_budget` (held by this agent) fund the entity's envelope: the proposal
        id. `evidence`: at least one existing record's hash."""
        return await self.call(
            "governance",
            "propose_allocation",
            {
                "entity_type": entity_type,
                "entity_id": entity_id,
                "amounts": amounts,
                "justification": justification,
                "evidence": list(evidence),
                "from_budget": from_budget,
            },
        )

    async def vote(self, proposal_id: str, decision: str, scores: dict) -> str:
        """approve, reject or defer, with scores evidence/novelty/alignment/community in [0, 1]."""
        return await self.call(
            "governance",
            "vote",
            {"proposal_id": proposal_id, "decision": decision, "scores": scores},
        )

    async def endorse(
        self, entity_type: str, entity_id: str, stake_ru: float, direction: int = 1
    ) -> str:
        """Stake RU from the allowance for (+1) or against (-1) an entity's work."""
        return await self.call(
            "governance",
            "endorse",
            {
                "entity_type": entity_type,
                "entity_id": entity_id,
                "stake_ru": stake_ru,
                "direction": direction,
            },
        )

    async def get_proposal(self, proposal_id: str) -> ProposalView:
        return await self.call("governance", "get_proposal", {"proposal_id": proposal_id})

    async def list_proposals(self) -> list[ProposalView]:
        return await self.call("governance", "list_proposals", {})

    async def get_envelope(self, entity_type: str, entity_id: str) -> EnvelopeView:
        return await self.call(
            "governance", "get_envelope", {"entity_type": entity_type, "entity_id": entity_id}
        )

    async def list_envelopes(self) -> list[EnvelopeView]:
        return await self.call("governance", "list_envelopes", {})

    async def rebalance(self, dry_run: bool = True) -> list[dict]:
        """The plan for the envelopes this agent funded: moves `{"from", "to", "amounts",
        "reason"}` (idle, low_roi) to high-ROI envelopes; without `dry_run`, carried out (each
        move then has `status` and the new `budget`)."""
        return await self.call("governance", "rebalance", {"dry_run": dry_run})

    async def usage(self, budget: str | None = None, since: int | None = None, limit: int = 100):
        """This agent's usage rows, derived from its chain: `{resource, amount_used, op,
        timestamp, hash, budget}` (RU in RU; timestamp in unix s), the newest `limit`, oldest
        first; only `budget`'s, only those at or after `since` (unix s), if given."""
        return await self.call(
            "budget", "usage", {"budget": budget, "since": since, "limit": limit}
        )

    async def lineage(self, record: str) -> list[dict]:
        """The steps from `record` (an output, transfer or settlement) back to its mint."""
        return await self.call("budget", "lineage", {"record": record})


class _Spend:
    def __init__(self, agent, budget, amounts, payee, task_id, timeout_s):
        self.agent, self.budget, self.amounts = agent, budget, amounts
        self.payee = payee
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
