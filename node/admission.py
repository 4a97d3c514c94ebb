"""Admission at the node: every call of an agent goes through `Admissions.call`, which runs due
deferred work first (the first activity at or after its `runs_at`), then the call, and keeps
the record: refusals, deferrals and their outcomes go to the audit log and to subscribers as
events, low-budget alerts fire once a window. The node's own functions (zome `admission`:
check, has_budget, defer, deferred, cancel_deferred, set_alert) are reached through `call`
like the app's, so they work the same in process and over the app socket.

The order of the checks is node/core/admission.py's; `check` runs the very checks of the real
call (the function, its payload, the function's own target and authority checks, the chain's
warrant and budget) with a context whose writes stop at their pre-flight (`DryContext`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import trio

from .agent_api import NODE_ZOME, Admission, Deferred
from .app.wire import from_wire, to_wire
from .audit import AuditLog, for_display
from .context import ZomeContext
from .core.budget import US
from .core.errors import (
    BudgetError,
    Busy,
    InsufficientRU,
    BudgetExceeded,
    InvalidInput,
    StoreBusy,
    UnknownAgent,
    UnknownFunction,
)
from .core import ledger
from .core.money import MRU_PER_RU
from .deferral import DeferralQueue, Entry

MAX_LISTENERS = 1024  # in-process subscribers and app servers, together
MAX_OP = 128  # characters of an operation's name an event keeps
MAX_TIMER_SLEEP_S = 60.0  # the timer looks at the queue at least this often while it holds work


class Admitted(Exception):
    """A dry run reached its write and the write's pre-flight passed: the call would be
    admitted, at `cost_mru`. (Not a BudgetError: nothing was refused.)"""

    def __init__(self, cost_mru: int, op: str | None = None, count: int = 1):
        super().__init__(cost_mru)
        self.cost_mru = cost_mru
        self.op = op  # the DNA op the write is charged as
        self.count = count  # results, for a per-result op


class NoDryRun(Exception):
    """`check` of a function whose writes have no pre-flight here yet (the budget verbs of
    node/budgets.py): `check` refuses it (E_INVALID_INPUT) rather than run it for real. Not a
    BudgetError, so no function can turn it into an Admission by accident."""


class _NoBudgets:
    def __getattr__(self, name: str):
        raise NoDryRun(f"check cannot dry-run the budget verbs yet (budgets.{name})")


class DryContext(ZomeContext):
    """What a function sees in a dry run: reads as usual; each write runs the same checks as
    the real one (Cell.entry_cost, Cell.preflight, LocalNode.grant_preflight) and stops. The
    budget verbs (ctx.budgets) are not reachable: a dry run of one is refused (NoDryRun)."""

    def __init__(self, node, cell):
        super().__init__(node, cell)
        self.budgets = _NoBudgets()

    async def create(self, entry_type: str, content: dict) -> str:
        cost = self._cell.entry_cost(entry_type, content)
        edef = self._node.app.entry_def(entry_type)
        assert edef is not None  # entry_cost found it
        self._cell.preflight(cost, op=edef.op)
        raise Admitted(cost)

    async def charge_results(self, op: str, count: int) -> None:
        if count == 0:
            return  # nothing to pay: the real call writes nothing either
        cost = self._node.dna.cost(op, count)
        self._cell.preflight(cost, op=op)
        raise Admitted(cost)

    async def allocate(self, grantee: bytes, amount_mru: int):
        self._node.grant_preflight(self._cell, grantee, amount_mru)
        raise Admitted(0)

    async def invite(self, note: str) -> str:
        self._node.invite_service(self._cell)
        raise Admitted(0)


class PaidDryContext(DryContext):
    """A dry run of a write paid by an explicit budget: its cost, without the allowance's
    pre-flight (the budget's rules are checked by `Admissions.budget_admission`)."""

    async def create(self, entry_type: str, content: dict) -> str:
        cost = self._cell.entry_cost(entry_type, content)
        self._cell.check_writable()
        edef = self._node.app.entry_def(entry_type)
        raise Admitted(cost, edef.op)

    async def charge_results(self, op: str, count: int) -> None:
        if count:
            self._cell.check_writable()
            raise Admitted(self._node.dna.cost(op, count), op, count)


def _op(zome: str, fn: str, payload) -> str:
    """What a refusal names: the app's function a deferral was asked for, else the call."""
    if fn == "defer" and isinstance(payload, dict):
        inner = payload.get("zome"), payload.get("fn")
        if all(isinstance(x, str) for x in inner):
            return f"{inner[0]}.{inner[1]}"
    return f"{zome}.{fn}"


def _text(payload: dict, k: str) -> str:
    v = payload.get(k)
    if not isinstance(v, str):
        raise InvalidInput(f"{k} must be a string")
    return v


def _fields(payload, allowed: set[str]) -> dict:
    if payload is None:
        payload = {}
    if not isinstance(payload, dict) or not set(payload) <= allowed:
        raise InvalidInput(f"takes a map with keys {sorted(allowed)}")
    return payload


# refine reports the budget that got furthest: authority, then balance, then solvability
_REFINE_STAGE = {"E_BUDGET_EXCEEDED": 2, "E_UNSOLVABLE": 3}


class Admissions:
    def __init__(self, node):
        self.node = node
        self.queue = DeferralQueue(node.store)  # `up --max-deferred-per-agent` sets its bound
        self.audit = AuditLog(node.store)
        self.refused: Counter = Counter()  # (code, op) -> refusals
        self.spent: Counter = Counter()  # op -> milli-RU the node's agents spent on it
        self.deferred_total = 0
        self.deferred_run = 0
        self.deferred_refused = 0
        self.alerts: dict[bytes, int] = {}  # agent -> alert threshold, milli-RU
        self._alerted: dict[bytes, int] = {}  # agent -> window start of its last alert
        self._listeners: list[Callable[[dict], None]] = []
        self._lock = trio.Lock()
        self._timer_kick: trio.Event | None = None  # set: the timer task runs
        self.timer_store_busy = 0  # timer rounds the store's lock refused
        self.functions = {
            "check": self._check,
            "has_budget": self._has_budget,
            "defer": self._defer,
            "deferred": self._deferred,
            "cancel_deferred": self._cancel,
            "set_alert": self._set_alert,
        }

    # -- events
    def listen(self, fn: Callable[[dict], None]) -> Callable[[], None]:
        """`fn(event)` for every admission event from now on; returns how to stop."""
        if len(self._listeners) >= MAX_LISTENERS:
            raise Busy(f"at most {MAX_LISTENERS} subscribers to a node's admission events")
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    async def _emit(self, ev: dict) -> None:
        ev = {"at": self.node.now_us() // US, **ev}
        self.audit.record(ev)
        shown = for_display(ev)
        for fn in list(self._listeners):
            fn(shown)

    def _now_s(self) -> int:
        return self.node.now_us() // US

    # -- every call
    async def call(self, cell, zome, fn, payload):
        await self.run_due()
        if zome == NODE_ZOME:
            try:
                builtin = self.functions.get(fn) if isinstance(fn, str) else None
                if builtin is None:
                    raise UnknownFunction(f"no function {zome}.{fn}"[:MAX_OP])
                return await builtin(cell, payload)
            except BudgetError as e:
                await self._refusal(cell, _op(zome, fn, payload), e)
                raise
        try:
            out = await self._spend(cell, zome, fn, payload)
        except BudgetError as e:
            await self._refusal(cell, f"{zome}.{fn}", e)
            raise
        await self._after_write(cell)
        return out

    async def _spend(self, cell, zome: str, fn: str, payload):
        """The app's function, its RU counted by operation (`spent`, for /metrics)."""
        before = cell.state.budget
        out = await self.node.dispatch(cell, zome, fn, payload)
        after = cell.state.budget
        same = after.window_start_us == before.window_start_us
        used = after.used_mru - (before.used_mru if same else 0)
        if used > 0:
            self.spent[f"{zome}.{fn}"] += used
        return out

    def _label(self, op: str) -> str:
        """`op` as a metric label: a function of the app or the node, else "other" (a caller
        names what it likes, and a label must not grow without bound)."""
        zome, _, fn = op.partition(".")
        known = (zome, fn) in self.node.app.functions or (
            zome == NODE_ZOME and fn in self.functions
        )
        return op if known else "other"

    async def _refusal(self, cell, op: str, e: BudgetError) -> None:
        op = op[:MAX_OP]  # a caller names what it likes: the log keeps a bounded name
        self.refused[(e.code, self._label(op))] += 1
        await self._emit({"type": "refusal", **self._context(cell, op, e)})

    def _context(self, cell, op: str, e: BudgetError | None) -> dict[str, Any]:
        st = cell.budget_status()
        ctx: dict[str, Any] = {
            "agent_id": cell.agent_id,
            "op": op,
            "code": None if e is None else e.code,
            "need_mru": 0,
            "have_mru": st.remaining_mru,
            "resets_at": st.resets_at,
            "budget": None,  # the ambient allowance (explicit budgets name theirs)
        }
        if isinstance(e, InsufficientRU):
            ctx.update(need_mru=e.need_mru, have_mru=e.have_mru, resets_at=e.resets_at)
        elif isinstance(e, BudgetExceeded) and e.resource == "ru" and e.budget is None:
            ctx.update(need_mru=e.need_units, have_mru=e.have_units)  # a cap or limit
        elif isinstance(e, BudgetExceeded):
            ctx["budget"] = e.budget  # an explicit budget's: its units, not the allowance's
        return ctx

    async def _after_write(self, cell) -> None:
        limit = self.alerts.get(cell.key.public)
        if limit is None:
            return
        st = cell.budget_status()
        if st.remaining_mru < limit and self._alerted.get(cell.key.public) != st.window_start:
            self._alerted[cell.key.public] = st.window_start
            await self._emit(
                {
                    "type": "low_budget",
                    "agent_id": cell.agent_id,
                    "have_mru": st.remaining_mru,
                    "alert_mru": limit,
                    "resets_at": st.resets_at,
                }
            )

    # -- check and has_budget
    async def admission(self, cell, zome, fn, payload) -> Admission:
        try:
            await self.node.dispatch(cell, zome, fn, payload, DryContext)
            need = 0
        except Admitted as a:
            need = a.cost_mru
        except NoDryRun as e:
            raise InvalidInput(str(e)) from None
        except BudgetError as e:
            c = self._context(cell, f"{zome}.{fn}", e)
            retry = e.retry_after_s if isinstance(e, InsufficientRU) else 0
            return Admission(
                False, e.code, c["need_mru"], c["have_mru"], c["resets_at"], retry, e.message
            )
        st = cell.budget_status()
        return Admission(True, None, need, st.remaining_mru, st.resets_at, 0)

    async def _check(self, cell, payload) -> Admission:
        p = _fields(payload, {"zome", "fn", "payload", "budgets"})
        zome, fn = p.get("zome"), p.get("fn")
        if zome == NODE_ZOME:
            raise InvalidInput("check takes a function of the app")
        if p.get("budgets") is not None:
            return await self.budget_admission(cell, zome, fn, p.get("payload"), p["budgets"])
        return await self.admission(cell, zome, fn, p.get("payload"))

    async def budget_admission(self, cell, zome, fn, payload, budgets) -> Admission:
        """`check` of a call refine would pay with `budgets` (one id or a list): the code of
        the budget that got furthest, as refine reports it, or ok with the first that pays."""
        from zomes.hdk import Ids

        ids = Ids("budget", 16).check("budgets", budgets, self.node.dna)
        if not ids:
            raise InvalidInput("budgets names no budget")
        op, cost, need = fn, 0, ledger.EMPTY  # a call that writes nothing costs nothing
        try:
            await self.node.dispatch(cell, zome, fn, payload, PaidDryContext)
        except Admitted as a:
            cost, op = a.cost_mru, a.op or fn
            need = ledger.write_cost(cost, op, a.count, self.node.dna)
        except NoDryRun as e:
            raise InvalidInput(str(e)) from None
        except BudgetError as e:
            return Admission(False, e.code, 0, 0, 0, 0, e.message)
        cs = cell.state
        best: BudgetError | None = None
        for bid in ids:
            try:
                led = ledger.pay(
                    cell.ledger,
                    bid,
                    cs.seq + 1,
                    cs.seq + 1,
                    self.node.app.op_name(op),
                    need,
                    cell.key.public,
                    max(cell.now_us(), cs.ts),
                )
            except BudgetError as e:
                if best is None or _REFINE_STAGE.get(e.code, 1) > _REFINE_STAGE.get(best.code, 1):
                    best = e
                continue
            have = led.budgets[bid].available.get("ru", 0) + cost
            return Admission(True, None, cost, have, 0, 0)
        assert best is not None  # ids is not empty: each one refused
        have = getattr(best, "have_units", 0) if isinstance(best, BudgetExceeded) else 0
        return Admission(False, best.code, cost, have, 0, 0, best.message)

    async def _has_budget(self, cell, payload) -> bool:
        p = _fields(payload, {"op", "count"})
        op, count = _text(p, "op"), p.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InvalidInput("count is a whole number of at least 1")
        name = op.rsplit(".", 1)[-1]
        dna = self.node.dna
        if name not in dna.costs:
            raise UnknownFunction(f"no operation {op!r} in the network's cost table")
        if count > 1 and name not in dna.per_result:
            raise InvalidInput(f"{name} is not charged per result: count is 1")
        if count > dna.max_results:
            raise InvalidInput(f"count is at most {dna.max_results}")
        try:
            cell.preflight(dna.cost(name, count), op=name)
        except BudgetError:
            return False
        return True

    # -- deferral
    async def _defer(self, cell, payload) -> Any:
        p = _fields(payload, {"zome", "fn", "payload"})
        zome, fn, inner = _text(p, "zome"), _text(p, "fn"), p.get("payload")
        if zome == NODE_ZOME:
            raise InvalidInput("only the app's writes can be deferred")
        op = f"{zome}.{fn}"
        try:
            out = await self._spend(cell, zome, fn, inner)
        except InsufficientRU as e:  # refused only for lack of RU: wait for the window
            entry, position = await self.queue.add(
                cell.key.public, zome, fn, to_wire(inner), e.code, e.resets_at, self._now_s()
            )
            self.deferred_total += 1
            d = Deferred(entry.id, op, entry.runs_at, position, e.code)
            await self._emit(
                {"type": "deferred", **self._context(cell, op, e), **d.to_dict(), "code": e.code}
            )
            self._wake_timer()
            return d
        await self._after_write(cell)
        return out

    async def _deferred(self, cell, payload) -> list[Deferred]:
        _fields(payload, set())
        every = self.queue.entries()
        pos = {e.id: i for i, e in enumerate(every)}
        mine = [e for e in every if e.agent == cell.key.public]
        return [Deferred(e.id, e.op, e.runs_at, pos[e.id], e.code) for e in mine]

    async def _cancel(self, cell, payload) -> bool:
        p = _fields(payload, {"id"})
        id = p.get("id")
        if not isinstance(id, int) or isinstance(id, bool):
            raise InvalidInput("id is a deferred write's id")
        entry = self.queue.get(id)
        if entry is None or entry.agent != cell.key.public or not await self.queue.remove(id):
            return False
        await self._done(cell, entry, cancelled=True)
        return True

    async def _done(
        self, cell, entry: Entry, hash: str | None = None, code=None, cancelled: bool = False
    ) -> None:
        """The outcome of a queued write: the action it wrote (`hash`), or the `code` it was
        refused with when it ran, or `cancelled`."""
        ev = {"type": "deferred_done", "agent_id": cell.agent_id, "id": entry.id}
        ev.update(op=entry.op, hash=hash, code=code, cancelled=cancelled)
        await self._emit(ev)

    async def run_due(self) -> int:
        """Run the queued writes whose time has come, in the queue's order; each is taken off
        the queue, admitted again and run, or dropped with its refusal's code (never queued
        again). Returns how many ran."""
        nxt = self.queue.next_runs_at()
        if nxt is None or nxt > self._now_s():
            return 0  # the usual case, and no scheduler checkpoint taken
        async with self._lock:  # one runner at a time; a call waits for due work to run first
            n = 0
            for entry in self.queue.due(self._now_s()):
                n += await self._run(entry)
            return n

    async def run_affordable(self, cell) -> int:
        """After a credit (a grant claimed): run the agent's queued writes that fit now, in
        the queue's order; the rest wait for their `runs_at`."""
        if not self.queue.count(cell.key.public):
            return 0
        n = 0
        async with self._lock:
            for entry in self.queue.entries(cell.key.public):
                payload = from_wire(self.queue.payload(entry), typed=False)
                if (await self.admission(cell, entry.zome, entry.fn, payload)).ok:
                    n += await self._run(entry)
        return n

    async def _run(self, entry: Entry) -> int:
        if not await self.queue.remove(entry.id):
            return 0  # cancelled meanwhile
        try:
            cell = self.node._cell(entry.agent)
        except UnknownAgent:  # its agent's key left this node: nothing can sign it
            return 0
        try:
            payload = from_wire(self.queue.payload(entry), typed=False)
            out = await self._spend(cell, entry.zome, entry.fn, payload)
        except BudgetError as e:
            self.deferred_refused += 1
            await self._done(cell, entry, code=e.code)
            return 0
        self.deferred_run += 1
        await self._done(cell, entry, hash=out if isinstance(out, str) else None)
        await self._after_write(cell)
        return 1

    def resume(self) -> None:
        """A running node opened with deferred writes in its store: start its timer."""
        if self.queue.next_runs_at() is not None:
            self._wake_timer()

    def _wake_timer(self) -> None:
        nursery = getattr(self.node, "_nursery", None)
        if nursery is None:
            return  # an in-process node runs its queue at its next activity
        if self._timer_kick is None:
            self._timer_kick = trio.Event()
            nursery.start_soon(self._keep_timer)
        else:
            self._timer_kick.set()

    async def _keep_timer(self) -> None:
        """The timer, started again after a round the store refused (E_STORE_BUSY comes only
        after the store's bounded wait, so this never spins)."""
        try:
            while True:
                try:
                    return await self.run_timer()
                except StoreBusy:
                    self.timer_store_busy += 1
        finally:
            self._timer_kick = None  # the next deferral starts it again

    async def run_timer(self) -> None:
        """The running node's timer: sleeps until the first entry's `runs_at` (at most
        MAX_TIMER_SLEEP_S at a time, or until a new entry arrives) and runs what is due; it
        ends when the queue is empty."""
        while (nxt := self.queue.next_runs_at()) is not None:
            wait = nxt - self.node.now_us() / US
            if wait > 0:
                self._timer_kick = trio.Event()
                with trio.move_on_after(min(wait, MAX_TIMER_SLEEP_S)):
                    await self._timer_kick.wait()
                continue
            await self.run_due()

    def set_alert(self, cell, remaining_mru: int | None) -> None:
        if remaining_mru is None:
            self.alerts.pop(cell.key.public, None)
        else:
            self.alerts[cell.key.public] = remaining_mru
        self._alerted.pop(cell.key.public, None)

    async def _set_alert(self, cell, payload) -> None:
        p = _fields(payload, {"remaining_ru"})
        ru = p.get("remaining_ru")
        if ru is None:
            return self.set_alert(cell, None)
        if not isinstance(ru, (int, float)) or isinstance(ru, bool) or not 0 <= ru <= 1e9:
            raise InvalidInput("remaining_ru is a number of RU (or None: no alert)")
        self.set_alert(cell, round(ru * MRU_PER_RU))

    def status(self) -> dict:
        return {
            "deferred": len(self.queue),
            "deferred_total": self.deferred_total,
            "deferred_run": self.deferred_run,
            "deferred_refused": self.deferred_refused,
            "deferral_overflows": self.queue.overflows,
            "audit_size": len(self.audit),
            "refusals": {f"{c} {op}": n for (c, op), n in sorted(self.refused.items())},
        }
