"""What a coordinator zome function sees: its agent, local reads, and budgeted writes
routed through the agent's Cell (so the zome never touches the budget engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.crypto import to_text
from .core.errors import NotAuthorized
from .records import record_dict

if TYPE_CHECKING:
    from .cell import Cell


class ZomeContext:
    def __init__(self, node: Any, cell: Cell):  # node: the LocalNode (it imports this module)
        self._node = node
        self._cell = cell
        self.author = cell.key.public
        self.agent_id = cell.agent_id
        self.max_results = node.dna.max_results
        self.cap_mru = node.dna.cap_mru
        self.is_steward = self.author in node.dna.stewards
        self.cell = cell
        self.budgets = node.budgets
        self.governance = node.governance

    async def create(self, entry_type: str, content: dict) -> str:
        return to_text("action", await self._cell.create_entry(entry_type, content))

    async def charge_results(self, op: str, count: int) -> None:
        await self._cell.charge_results(op, count)

    def budget_status(self):
        return self._cell.budget_status()

    def _records(self, hashes) -> list[dict]:
        out = []
        for h in hashes:
            s, entry = self._node.store.record(h)  # the same store just named it
            out.append(record_dict(s, entry, self._node.app))
        return out

    def find(self, kind: str, key: str, limit: int) -> list[dict]:
        return self._records(self._node.store.find(kind, key, limit))

    def records_of_type(self, entry_type: str, limit: int, author: bytes | None = None):
        return self._records(self._node.store.of_type(entry_type, limit, author))

    def require_steward(self, to_do: str) -> None:
        """Admission's warrant check, then its authority check: a warranted agent is refused
        E_WARRANTED before E_NOT_AUTHORIZED (node/core/admission.py)."""
        self._cell.check_writable()
        if not self.is_steward:
            raise NotAuthorized(f"only a steward listed in the DNA can {to_do}")

    async def require_agent(self, agent: bytes) -> None:
        await self._node.ensure_agent(agent)

    async def allocate(self, grantee: bytes, amount_mru: int):
        return await self._node.allocate(self._cell, grantee, amount_mru)

    async def get_budget(self, budget: bytes):
        return await self._node.get_budget(to_text("budget", budget))

    async def invite(self, note: str) -> str:
        return await self._node.invite(self._cell, note)
