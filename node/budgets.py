"""Budgets as authorizers, as a node runs them for its agents: each verb writes one ledger
action (core/ledger.py decides whether it may), hands the offers it makes to their recipients
(here, or over the network: `LocalNode.send_offer`), and reads balances and lineage back from
the chains.

Offers to an agent of this node are accepted at once; an offer that arrives from the network
is taken by `take_offer`. A budget voided here revokes the children it funded (a notice to
each holder), so revocation walks down the tree as signed actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import functools
from types import MappingProxyType

from .agent_api import BudgetView, HoldView, RefineResult
from .core import ledger as L
from .core.action import Signed
from .core.crypto import to_text
from .core.errors import (
    BudgetError,
    BudgetExceeded,
    BudgetVoid,
    ExistsDifferent,
    InvalidInput,
    NotAuthorized,
    NotFound,
    UnknownBudget,
    UnknownFunction,
    UnknownTarget,
    Unsolvable,
)
from .core.money import MRU_PER_RU
from .usage import usage, write_cost

if TYPE_CHECKING:
    from .cell import Cell

MAX_LINEAGE = 64
# refine reports the error of the budget that got furthest: authority, then balance, then
# solvability
_STAGE = {BudgetExceeded: 2, Unsolvable: 3}


def _show(resource: str, units: int) -> float | int:
    return units / MRU_PER_RU if resource == "ru" else units


def shown(a) -> dict:
    """Amounts as callers give and read them: RU in RU, other resources in units."""
    return {k: _show(k, v) for k, v in a.items()}


def _bid(b: bytes) -> str:
    return to_text("budget", b)


class Budgets:
    def __init__(self, node: Any):  # node: the LocalNode (it imports this module)
        self.node = node
        self.cascades_left = 0  # children of a voided budget a revoke could not reach
        self._releasing: set[bytes] = set()  # agents whose expired budgets are being released

    # -- writing
    async def _write(self, cell: Cell, body) -> Signed:
        s = await cell.ledger_action(body)
        await self._deliver(s)
        await self.release_expired(cell)
        return s

    async def _deliver(self, s: Signed) -> None:
        to = s.action["ledger"].get("to")
        if to is None:
            return
        cell = self.node.cells.get(to)
        if cell is not None:
            await self.take_offer(cell, s)
        else:
            await self.node.send_offer(to, s)

    async def take_offer(self, cell: Cell, o: Signed) -> bool:
        """Accept `o`, an offer made to `cell`'s agent, unless its chain already did; False if
        it was taken before."""
        if o.hash in cell.ledger.accepted:
            return False
        await self.node.check_offer(o)  # valid on its author's chain, not just signed

        s = await cell.ledger_action(lambda led, ts: L.accept_body(led, o, ts))
        await self._deliver(s)
        ov = o.action["ledger"]
        if ov["kind"] == "revoke" and ov.get("target") in cell.ledger.budgets:
            await self._cascade(cell, ov["target"])
        if ov["kind"] == "vote":  # it may have brought its proposal to an approving quorum
            await self.node.governance.grant_approved(cell)
        return True

    async def release_expired(self, cell: Cell) -> None:
        """A budget or card held here whose expiry has passed can no longer be spent: its
        holder voids it, and what is left goes back to its funder (after each of the holder's
        ledger writes and paid refines, and when its node starts)."""
        if cell.key.public in self._releasing:
            return  # its own revokes come through here
        self._releasing.add(cell.key.public)
        try:
            now = cell.now_us()
            for b in list(cell.ledger.budgets.values())[: L.MAX_BUDGETS]:
                exp = b.schema.expires_at
                if b.void or b.funder is None or exp is None or now < exp * 1_000_000:
                    continue
                try:
                    await self.revoke(cell, b.id)
                except BudgetError:  # e.g. the window's ledger actions are spent: next call
                    self.cascades_left += 1
        finally:
            self._releasing.discard(cell.key.public)

    async def _cascade(self, cell: Cell, bid: bytes) -> None:
        """Revoke the open children of a budget made void here."""
        led = cell.ledger
        for cid, child in list(led.children.items())[: L.MAX_BUDGETS]:
            if child.parent == bid and child.state == "open":
                try:
                    await self.revoke(cell, cid)
                except BudgetError:  # e.g. the window's ledger actions are spent: the holder
                    self.cascades_left += 1  # revokes it by hand (`budgetnode budgets` shows it)

    async def mint(self, cell: Cell, amounts: dict, holder: bytes, name: str, schema: dict) -> str:
        if cell.key.public not in self.node.dna.stewards:
            raise NotAuthorized("only a steward listed in the DNA may mint")
        body = {"kind": "mint", "to": holder, "name": name, "amounts": amounts, "schema": schema}
        return _bid((await self._write(cell, lambda led, ts: body)).hash)

    async def transfer(
        self,
        cell: Cell,
        kind: str,
        parent: bytes,
        amounts: dict,
        holder: bytes,
        name: str,
        schema: dict,
    ) -> str:
        body = {
            "kind": kind,
            "parent": parent,
            "to": holder,
            "name": name,
            "amounts": amounts,
            "schema": schema,
        }
        return _bid((await self._write(cell, lambda led, ts: body)).hash)

    async def revoke(self, cell: Cell, target: bytes) -> str:
        body = functools.partial(L.revoke_body, target=target)
        s = await self._write(cell, lambda led, ts: body(led, ts=ts))
        if target in cell.ledger.budgets:
            await self._cascade(cell, target)
        return to_text("action", s.hash)

    # -- refine: the one verb for change
    async def refine(
        self, cell: Cell, targets: list[bytes], instructions: list, budgets: list[bytes] | None
    ) -> RefineResult:
        node = self.node
        calls = []
        for zome, fn, payload in instructions:
            zf = node.app.functions.get((zome, fn))
            if zf is None or zome == "budget":
                raise UnknownFunction(f"no function {zome}.{fn} to refine with")
            calls.append((f"{zome}.{fn}", zf, zf.check(payload, node.dna)))
        for t in targets:
            try:
                node.get_record(to_text("action", t))  # a network node also looks at its ops
            except NotFound:
                raise UnknownTarget(f"no record {to_text('action', t)} to build on") from None
        if budgets is None:
            outputs, spent = await self._run(cell, calls, None)
            return RefineResult(outputs, "ambient", shown(spent))
        cell.check_writable()  # a warranted agent is refused as such, whatever its budgets
        attempts: list[dict] = []
        best: tuple[int, BudgetError] | None = None
        for bid in budgets:
            try:
                b = L.held(cell.ledger, bid)
                for op, _, _ in calls:
                    L.authorize(b, op, cell.key.public)
                L.check_open(b, cell.now_us())
                outputs, spent = await self._run(cell, calls, bid)
                await self.release_expired(cell)
                return RefineResult(outputs, _bid(bid), shown(spent))
            except (NotAuthorized, BudgetVoid, UnknownBudget, BudgetExceeded, Unsolvable) as e:
                attempts.append({"budget": _bid(bid), "code": e.code, "message": e.message})
                stage = _STAGE.get(type(e), 1)
                if best is None or stage > best[0]:
                    best = (stage, e)
        if best is None:
            raise InvalidInput("budgets names no budget")
        err = best[1]
        err.attempts = attempts  # type: ignore[attr-defined]
        raise err

    async def _run(self, cell: Cell, calls: list, bid: bytes | None) -> tuple[list, dict]:
        from .context import ZomeContext

        outputs = []
        async with cell.batch(bid) as committed:
            for _, zf, payload in calls:
                outputs.append(await zf.fn(ZomeContext(self.node, cell), **payload))
        spent: dict[str, int] = {"ru": 0} if committed else {}
        for s in committed:
            for k, x in write_cost(s, self.node.dna).items():
                spent[k] = spent.get(k, 0) + x
        return outputs, spent

    # -- two-phase spends
    async def commit(
        self, cell: Cell, bid: bytes, amounts: dict, task_id: str, timeout_s: float
    ) -> HoldView:
        led = cell.ledger
        h = led.holds.get(task_id)
        if h is not None:  # a retry: the same hold, in whatever state it is now
            if h.budget != bid or dict(h.amounts) != {k: v for k, v in amounts.items() if v}:
                raise ExistsDifferent(f"task {task_id!r} already holds other amounts or a budget")
            return self.hold_view(cell, task_id)

        def body(led, ts):
            return {
                "kind": "hold",
                "budget": bid,
                "amounts": amounts,
                "task_id": task_id,
                "expires_us": ts + int(timeout_s * 1_000_000),
            }

        await self._write(cell, body)
        return self.hold_view(cell, task_id)

    async def settle(
        self, cell: Cell, task_id: str, amounts: dict, payee: bytes | None
    ) -> HoldView:
        """Resolve a hold: `amounts` paid to `payee`'s wallet, or with no payee used up (spent
        by the budget: metered work); the rest returns to the budget."""
        h = self._hold(cell, task_id)
        body = {"kind": "settle", "task_id": task_id, "budget": h.budget, "amounts": amounts}
        if payee is not None:
            body["to"] = payee
        await self._write(cell, lambda led, ts: body)
        return self.hold_view(cell, task_id)

    async def cancel(self, cell: Cell, task_id: str) -> HoldView:
        self._hold(cell, task_id)
        await self._write(cell, lambda led, ts: {"kind": "cancel", "task_id": task_id})
        return self.hold_view(cell, task_id)

    def _hold(self, cell: Cell, task_id: str) -> L.Hold:
        h = cell.ledger.holds.get(task_id)
        if h is None:
            raise NotFound(f"no hold with task_id {task_id!r}")
        return h

    def hold_view(self, cell: Cell, task_id: str) -> HoldView:
        h = self._hold(cell, task_id)
        return HoldView(
            task_id,
            to_text("action", h.id),
            _bid(h.budget),
            h.resolved_at(cell.now_us()),
            shown(h.amounts),
            shown(h.settled),
            None if h.payee is None else to_text("agent", h.payee),
            None if h.credit is None else to_text("action", h.credit),
            h.expires_us // 1_000_000,
        )

    # -- reading
    def view(self, bid: bytes) -> BudgetView:
        """A budget as its holder's chain has it, as of now: from this node's own agents or
        from any chain it holds for the network (each derived from the signed actions)."""
        now = self.node.now_us()
        for holder, led in self.node.ledgers():
            b = led.budgets.get(bid)
            if b is not None:
                return _view(holder, led, b, now)
        for _, led in self.node.ledgers():  # funded from a chain here, not (yet) taken
            child = led.children.get(bid)
            if child is not None:
                raise UnknownBudget(
                    f"budget {_bid(bid)} was offered to {to_text('agent', child.holder)}, whose "
                    f"chain has not accepted it yet (as far as this node knows)"
                )
        raise UnknownBudget(f"no budget {_bid(bid)} is known to this node")

    def held(self, cell: Cell) -> list[BudgetView]:
        led = cell.ledger
        now = cell.now_us()
        return [_view(cell.key.public, led, b, now) for b in led.budgets.values()]

    def all_held(self) -> list[BudgetView]:
        return [v for cell in self.node.cells.values() for v in self.held(cell)]

    def usage(self, cell: Cell, budget: bytes | None, since: int | None, limit: int) -> list[dict]:
        """`cell`'s agent's usage rows (node/usage.py), from its chain."""
        node = self.node
        return usage(
            node.store, cell.key.public, cell.state.seq, node.dna, node.app, budget, since, limit
        )

    # -- lineage
    def lineage(self, h: bytes) -> list[dict]:
        steps: list[dict] = []
        found = self._record(h)
        while len(steps) < MAX_LINEAGE:
            step, origin = self._step(found)
            steps.append(step)
            if origin is None:
                return steps
            found = self._record(origin)
        raise InvalidInput(f"lineage longer than {MAX_LINEAGE} steps")

    def _record(self, h: bytes) -> Signed:
        found = self.node.store.record(h)
        if found is None:
            raise NotFound(f"no record {to_text('action', h)} on this node")
        return found[0]

    def _step(self, s: Signed) -> tuple[dict, bytes | None]:
        """One lineage step of `s` and the action its value came from (None: a mint). A
        wallet's value is traced through the first credit it took."""
        a = s.action
        rec = a.get("budget") or {}
        v = a.get("ledger") or {}
        kind = "refine" if a.get("type") in ("create", "charge") else v.get("kind")
        if kind == "refine":
            bid = rec.get("pay")
            if bid is None:
                raise NotFound("this record was paid by its author's allowance, not a budget")
            op = self.node.app.op_name(rec["op"])
            paid, amounts, rule = bid, dict(write_cost(s, self.node.dna)), f"ops allows {op}"
            origin: bytes | None = bid
        elif kind == "mint":
            paid, amounts, rule = s.hash, v["amounts"], "a steward mints within mint_limit"
            origin = None
        elif kind in ("fund", "card"):
            rule = "the parent's " + ("can_fund" if kind == "fund" else "can_delegate")
            paid, amounts, origin = v["parent"], v["amounts"], v["parent"]
        elif kind in ("settle", "hold"):
            rule = f"hold {v['task_id']}"
            paid, amounts, origin = v["budget"], v["amounts"], v["budget"]
        elif kind == "accept":
            o = Signed.from_wire(v["offer"][0], v["offer"][1])
            paid, amounts, rule, origin = o.hash, {}, "an offer made to this agent", o.hash
        else:
            raise NotFound(f"a {kind} moves no value to trace")
        step = {
            "kind": kind,
            "hash": to_text("action", s.hash),
            "budget": _bid(paid),
            "signer": to_text("agent", a["author"]),
            "amounts": shown(amounts),
            "rule": rule,
        }
        return step, origin


def _view(holder: bytes, led: L.Ledger, b: L.Budget, now_us: int) -> BudgetView:
    b = L.expire_holds(led, b, now_us)[1]
    reserved: dict = {}
    for c in led.children.values():
        if c.parent == b.id and c.kind == "card" and c.state != "returned":
            reserved = dict(L.add(MappingProxyType(reserved), c.amounts))
    resources = sorted(set(b.funded) | set(b.available) | set(b.spent) | set(reserved) | {"ru"})
    balances = {
        r: {
            "available": _show(r, b.available.get(r, 0)),
            "reserved": _show(r, reserved.get(r, 0)),
            "pending": _show(r, b.pending.get(r, 0)),
            "spent": _show(r, b.spent.get(r, 0)),
            "funded": _show(r, b.funded.get(r, 0)),
        }
        for r in resources
    }
    expired = b.schema.expires_at is not None and now_us >= b.schema.expires_at * 1_000_000
    schema = b.schema.plain()
    for k in ("max_per_call", "min_reserve", "funding_target"):
        schema[k] = shown(schema[k])
    return BudgetView(
        _bid(b.id),
        b.name,
        b.kind,
        to_text("agent", holder),
        None if b.parent is None else _bid(b.parent),
        schema,
        b.void or expired,
        b.stage(),
        balances,
    )
