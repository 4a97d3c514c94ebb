"""The budget ledger one chain keeps: pure functions over signed actions, re-derived by every
validator exactly as the author's node derives them (docs/ARCHITECTURE.md, "Budgets").

Each budget is spent by exactly one chain, its holder's, so every balance check is local to
that chain. Value moves between chains as an *offer* (a signed `ledger` action naming its
recipient in `to`: a mint, fund, card, settle, revoke or return) that the recipient's chain
*accepts* once, by embedding it; so no chain ever credits itself, and a transfer that was never
accepted is value in transit, counted by neither side.

Ledger actions are `{"type": "ledger", "ledger": {"kind": ..., ...}, "budget": <allowance
record, cost 0>}`; a write paid by a budget records `pay` (the budget id) and `call` (the seq of
the first action of its refine call) in its allowance record instead of charging the allowance.
Refusals are the BudgetErrors an author's pre-flight raises; a validator turns them into
InvalidChain `ledger_<code>`.

(About 900 lines: one rule per kind of ledger action, each reading and writing the same
`Ledger` through the same private helpers, and its checkpoint form; amounts and schemas live in
core/schema.py, governance's numbers and tallies in core/governance.py.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any

from .action import MAX_ACTION_BYTES, Signed
from .crypto import to_text, verify
from .encoding import encode_trusted
from .dna import Dna
from . import governance as G
from .errors import (
    AlreadyResolved,
    BudgetError,
    BudgetExceeded,
    BudgetVoid,
    ExistsDifferent,
    HoldExpired,
    InvalidInput,
    NotAuthorized,
    NotNarrowing,
    UnknownBudget,
    Unsolvable,
)

# the amounts and schemas of budgets, from their own module (re-exported: callers take them
# from here with the rest of the ledger)
from .schema import EMPTY as EMPTY
from .schema import MAX_AMOUNT as MAX_AMOUNT
from .schema import Amounts as Amounts
from .schema import Plain as Plain
from .schema import Schema as Schema
from .schema import add as add
from .schema import amounts as amounts
from .schema import covers as covers
from .schema import none as _none

MAX_NAME = 200
MAX_TASK_ID = 128
MAX_BUDGETS = 4096  # held by one chain
MAX_HOLDS = 4096  # pending holds on one chain
KINDS = (
    "mint",
    "fund",
    "card",
    "accept",
    "revoke",
    "hold",
    "settle",
    "cancel",
    "propose",
    "vote",
    "endorse",
)
MAX_OPS_COUNTED = 64  # distinct ops a budget counts its paid writes of


# -- what one chain holds
@dataclass(frozen=True)
class Budget:
    id: bytes
    kind: str  # "budget", "card" or "wallet"
    name: str
    parent: bytes | None
    funder: bytes | None  # the agent that funded or delegated it (None: minted or a wallet)
    schema: Schema
    funded: Amounts  # everything it received (a card: its limit)
    available: Amounts
    pending: Amounts = _none()  # in holds not yet resolved
    spent: Amounts = _none()  # paid for writes
    out: Amounts = _none()  # moved to children, cards, payees and back to a funder
    void: bool = False
    created_at: int = 0  # unix seconds of the offer
    # an envelope's budget (core/governance.py): the entity it was funded for, the proposal
    # that granted it and that proposal's allocation score (thousandths)
    entity: G.Entity | None = None
    proposal: bytes | None = None
    score: int | None = None
    ops: MappingProxyType[str, int] = _none()  # paid writes, by op ("zome.fn")
    last_used: int = 0  # unix seconds of its last spend (0: never)

    def stage(self) -> str:
        target = self.schema.funding_target
        if not self.funded:
            return "planning"
        if target and covers(self.funded, target) is not None:
            return "partial"
        return "funded"


@dataclass(frozen=True)
class Child:
    """A budget or card this chain funded or delegated (its holder's chain spends it)."""

    holder: bytes
    parent: bytes
    kind: str
    amounts: Amounts  # moved (a card: its limit)
    state: str = "open"  # open, revoked (asked back), returned
    returned: Amounts = _none()  # given back so far (never more than `amounts`)


@dataclass(frozen=True)
class Hold:
    id: bytes  # the hold action's hash
    task_id: str
    budget: bytes
    amounts: Amounts
    expires_us: int
    state: str = "pending"  # pending, settled, cancelled, expired
    settled: Amounts = _none()
    payee: bytes | None = None
    credit: bytes | None = None  # the settle action: the payee's credit

    def resolved_at(self, ts: int) -> str:
        """Its state as of `ts`: a pending hold past its timeout has expired."""
        return "expired" if self.state == "pending" and ts >= self.expires_us else self.state


@dataclass(frozen=True)
class Ledger:
    budgets: MappingProxyType[bytes, Budget] = _none()
    children: MappingProxyType[bytes, Child] = _none()
    holds: MappingProxyType[str, Hold] = _none()
    accepted: frozenset[bytes] = frozenset()  # offers taken (their hashes)
    wallet: bytes | None = None
    window: int = -1  # the allowance window the two counters below are for
    actions: int = 0  # ledger actions in that window
    minted: Amounts = _none()  # minted in that window
    call: tuple[int, bytes, Amounts] | None = (
        None  # (first seq, budget id, total so far) of the refine in progress
    )
    gov: G.Gov = G.GOV0  # proposals filed, votes cast, endorsements taken

    @cached_property
    def encoded(self) -> bytes:
        """`dump`, encoded: kept with each checkpoint, and the same object for every action
        that leaves the ledger as it was (an unpaid write), so encoded once. Every value in it
        was validated on its way in, so the plain-data walk of `encode` is skipped: it was a
        sixth of a paid write."""
        return encode_trusted(dump(self))

    def with_budget(self, b: Budget) -> Ledger:
        return replace(self, budgets=_put(self.budgets, b.id, b))


LEDGER0 = Ledger()


def _put(m: MappingProxyType[Any, Any], k: Any, v: Any) -> MappingProxyType[Any, Any]:
    d = dict(m)
    d[k] = v
    return MappingProxyType(d)


def _id(bid: bytes) -> str:
    return to_text("budget", bid)


def _text(v: Any, what: str, max_len: int, min_len: int = 0) -> str:
    if not isinstance(v, str) or not min_len <= len(v) <= max_len:
        raise InvalidInput(f"{what}: text of {min_len}-{max_len} characters")
    return v


def _key(v: Any, what: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != 32:
        raise InvalidInput(f"{what}: a 32-byte id")
    return v


# -- the checks every spend passes (the order is the one refine reports)
def held(led: Ledger, bid: bytes) -> Budget:
    """The budget `bid` this chain holds (the order of the checks: core/admission.py)."""
    b = led.budgets.get(bid)
    if b is None:
        raise UnknownBudget(f"budget {to_text('budget', bid)} is not held by this agent")
    return b


def check_open(b: Budget, ts_us: int) -> None:
    """BudgetVoid if `b` was revoked or has expired by `ts_us`."""
    if b.void:
        raise BudgetVoid(f"budget {to_text('budget', b.id)} was revoked")
    if b.schema.expires_at is not None and ts_us >= b.schema.expires_at * 1_000_000:
        raise BudgetVoid(f"budget {to_text('budget', b.id)} expired at {b.schema.expires_at}")


def _spend_from(led: Ledger, b: Budget, ts_us: int) -> tuple[Ledger, Budget]:
    """`b` open at `ts_us`, with its holds expired as of then."""
    check_open(b, ts_us)
    return expire_holds(led, b, ts_us)


def expire_holds(led: Ledger, b: Budget, ts_us: int) -> tuple[Ledger, Budget]:
    """Holds on `b` past their timeout give their amounts back (expiry is a resolution)."""
    back: Amounts = EMPTY
    holds = dict(led.holds)
    for t, h in led.holds.items():
        if h.budget == b.id and h.state == "pending" and ts_us >= h.expires_us:
            back = add(back, h.amounts)
            holds[t] = replace(h, state="expired")
    if not back:
        return led, b
    b = replace(b, available=add(b.available, back), pending=add(b.pending, back, -1))
    return replace(led, holds=MappingProxyType(holds)).with_budget(b), b


def debit(b: Budget, need: Amounts, what: str) -> Budget:
    """`b` after `need` leaves its available balance: BudgetExceeded past the balance,
    Unsolvable below the reserve."""
    return replace(b, available=_debited(b, need, what))


def _debited(b: Budget, need: Amounts, what: str) -> Amounts:
    """What `b` has available once `need` leaves it (the checks of `debit`)."""
    short = covers(b.available, need)
    if short is not None:
        raise BudgetExceeded(need.get(short, 0), b.available.get(short, 0), _id(b.id), short)
    after = add(b.available, need, -1)
    shortfall = {
        k: r - after.get(k, 0) for k, r in b.schema.min_reserve.items() if after.get(k, 0) < r
    }
    if shortfall:
        raise Unsolvable(shortfall, _id(b.id), what)
    return after


def authorize(b: Budget, op: str, author: bytes) -> str:
    rule = b.schema.permits(op)
    if rule is None:
        raise NotAuthorized(
            f"budget {to_text('budget', b.id)} does not allow {op} (ops {list(b.schema.ops)})"
        )
    return rule


# -- paying for writes
def pay(
    led: Ledger, bid: bytes, call: int, seq: int, op: str, cost: Amounts, author: bytes, ts: int
) -> Ledger:
    """`led` after a write of `op` (a "zome.fn") costing `cost`, paid by budget `bid`, in the
    refine call that began at seq `call`: authority, then balance and solvability, and the
    call's summed cost against max_per_call."""
    if call == seq:
        running = cost
    elif led.call is not None and led.call[0] == call and led.call[1] == bid:
        running = add(led.call[2], cost)
    else:
        raise InvalidInput("a paid write names a refine call that is not the one in progress")
    b = held(led, bid)
    authorize(b, op, author)
    led, b = _spend_from(led, b, ts)
    for k, limit in b.schema.max_per_call.items():
        if running.get(k, 0) > limit:
            raise BudgetExceeded(running[k], limit, _id(bid), k, "its max_per_call")
    ops = b.ops
    if op in ops or len(ops) < MAX_OPS_COUNTED:
        ops = _put(ops, op, ops.get(op, 0) + 1)
    # one copy of the budget and one of the ledger: this runs for every paid write
    b = replace(
        b,
        available=_debited(b, cost, "a write"),
        spent=add(b.spent, cost),
        last_used=ts // 1_000_000,
        ops=ops,
    )
    return replace(led, budgets=_put(led.budgets, bid, b), call=(call, bid, running))


def end_call(led: Ledger) -> Ledger:
    """An action that is not a paid write ends the refine call in progress."""
    return led if led.call is None else replace(led, call=None)


def ru(mru: int) -> Amounts:
    return MappingProxyType({"ru": mru} if mru else {})


def write_cost(mru: int, op: str, count: int, dna: Dna) -> Amounts:
    """What a paid write of `op` (as the cost table names it; `count` results of a per-result
    op) costs its budget: its `mru` and whatever else the DNA's resource_costs names."""
    return add(ru(mru), MappingProxyType(dna.resource_cost(op, count)))


# -- ledger actions
@dataclass(frozen=True)
class Effect:
    ledger: Ledger
    offer_to: bytes | None = None  # the recipient this action offers value or a notice to


def apply(
    led: Ledger, a: Plain, author: bytes, seq: int, ts: int, h: bytes, ws: int, dna: Dna
) -> Effect:
    """`led` after the ledger action `a` (its hash `h`) at seq `seq`, time `ts` (us), in the
    allowance window starting `ws`."""
    body = a.get("ledger")
    if not isinstance(body, dict) or body.get("kind") not in KINDS:
        raise InvalidInput(f"a ledger action is one of {KINDS}")
    if led.window != ws:
        led = replace(led, window=ws, actions=0, minted=EMPTY)
    if led.actions >= dna.max_ledger_actions_per_window:
        raise BudgetExceeded(
            1,
            0,
            None,
            "ledger actions",
            f"at most {dna.max_ledger_actions_per_window} a window (max_ledger_actions_per_window)",
        )
    led = replace(led, actions=led.actions + 1, call=None)
    eff = _APPLY[body["kind"]](led, body, author, ts, h, dna)
    if body.get("to") != eff.offer_to:
        # the recipient is bound by the author's signature: re-derived, never trusted
        raise InvalidInput(f"a {body['kind']} here offers to {eff.offer_to!r}")
    return eff


def _mint(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    if author not in dna.stewards:
        raise NotAuthorized("only a steward listed in the DNA may mint")
    amt = amounts(v.get("amounts"), dna, "mint amounts")
    Schema.parse(v.get("schema"), dna)
    _text(v.get("name"), "name", MAX_NAME)
    minted = add(led.minted, amt)
    for k, x in minted.items():
        limit = dna.resources[k].get("mint_limit", 0)
        if x > limit:
            raise BudgetExceeded(
                amt[k], max(0, limit - led.minted.get(k, 0)), None, k, "the DNA's mint_limit"
            )
    return Effect(replace(led, minted=minted), _key(v.get("to"), "to"))


def _transfer(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    """fund (a child budget) and card (a delegation): the value leaves the parent now (a
    card's limit is escrowed), so no partition can make the parent pay twice."""
    kind = v["kind"]
    pid = _key(v.get("parent"), "parent")
    to = _key(v.get("to"), "to")
    amt = amounts(v.get("amounts"), dna, f"{kind} amounts")
    schema = Schema.parse(v.get("schema"), dna)
    _text(v.get("name"), "name", MAX_NAME)
    p = held(led, pid)
    if kind == "fund" and not p.schema.can_fund:
        raise NotAuthorized(f"budget {to_text('budget', pid)} cannot fund (can_fund is false)")
    if kind == "card" and not p.schema.can_delegate:
        raise NotAuthorized(
            f"budget {to_text('budget', pid)} cannot delegate (can_delegate is false)"
        )
    if kind == "card" and not amt:
        raise InvalidInput("a card's max_spend names at least one amount")
    ent = None if v.get("entity") is None else G.entity(v["entity"])
    if kind == "card" and (ent is not None or v.get("proposal") is not None):
        raise InvalidInput("a card is for its holder: it names no entity or proposal")
    fault = schema.narrowing_fault(p.schema)
    if fault is not None:
        raise NotNarrowing(fault)
    led, p = _spend_from(led, p, ts)
    if v.get("proposal") is not None:
        led = _grant(led, v, ent, to, pid, amt)
    elif v.get("score") is not None or v.get("market_weight") is not None:
        raise InvalidInput("only a grant records a score and a market weight")
    p = debit(p, amt, f"a {kind}")
    p = replace(p, out=add(p.out, amt))
    if len(led.children) >= MAX_BUDGETS:
        raise InvalidInput(f"a chain keeps at most {MAX_BUDGETS} children")
    led = replace(led.with_budget(p), children=_put(led.children, h, Child(to, pid, kind, amt)))
    return Effect(led, to)


def _grant(
    led: Ledger, v: Plain, e: G.Entity | None, to: bytes, parent: bytes, amt: Amounts
) -> Ledger:
    """A fund that pays an approved proposal: once, to its entity, from its budget, at most
    the requested amounts times (1 + the market weight of the endorsements it cites)."""
    pid = _key(v.get("proposal"), "proposal")
    if e is None:
        raise InvalidInput("a grant names the entity it funds")
    gov = G.grant(led.gov, pid, e, to, parent, amt)
    p = led.gov.proposals[pid]
    pro = con = 0
    for o in endorsements(v, e):
        _, stake, d = G.endorse(o.action["ledger"])
        pro, con = (pro + stake, con) if d == 1 else (pro, con + stake)
    weight = G.market_weight(pro, con)
    if v.get("market_weight") != weight:
        raise InvalidInput(f"market_weight must be {weight}, as the cited endorsements give")
    if v.get("score") != p.score:
        raise InvalidInput(f"score must be {p.score}, the proposal's")
    limit = G.grant_limit(p, weight)
    k = covers(limit, amt)
    if k is not None:
        raise BudgetExceeded(amt[k], limit.get(k, 0), None, k, "what the proposal was approved for")
    return replace(led, gov=gov)


def endorsements(v: Plain, e: G.Entity) -> list[Signed]:
    """The signed endorsements of `e` a grant cites, each once."""
    cited = v.get("endorsements") or []
    if not isinstance(cited, list) or len(cited) > G.MAX_CITED:
        raise InvalidInput(f"a grant cites at most {G.MAX_CITED} endorsements")
    out: list[Signed] = []
    for x in cited:
        o = _embedded(x, "endorsement")
        ov = o.action["ledger"]
        if ov.get("kind") != "endorse" or G.entity(ov.get("entity")) != e:
            raise InvalidInput("a grant cites endorsements of the entity it funds")
        if any(y.hash == o.hash for y in out):
            raise InvalidInput("a grant cites each endorsement once")
        out.append(o)
    return out


def cited(v: Plain, author: bytes) -> list[Signed]:
    """The signed actions of other chains a ledger action relies on (an accept's offer, a
    grant's endorsements): a validator holding other chains checks each is valid on its own."""
    kind = v.get("kind")
    if kind == "accept":
        return [offer_of(v.get("offer"), author)]
    if kind == "fund" and v.get("proposal") is not None:
        return endorsements(v, G.entity(v.get("entity")))
    return []


def allowance_cost(v: Any) -> int:
    """What a ledger action charges its author's allowance (milli-RU): an endorsement's stake,
    a real spend; every other ledger action is free."""
    if isinstance(v, dict) and v.get("kind") == "endorse":
        return G.endorse(v)[1]
    return 0


def _propose(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    bid = _key(v.get("from_budget"), "from_budget")
    b = held(led, bid)
    if not b.schema.can_fund:  # its grant would be a fund: refused now, not once approved
        raise NotAuthorized(f"budget {_id(bid)} cannot fund (can_fund is false)")
    check_open(b, ts)
    amt = amounts(v.get("amounts"), dna, "proposal amounts", positive=True)
    return Effect(replace(led, gov=G.propose(led.gov, v, h, ts, amt, bid, author)))


def _vote(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    return Effect(replace(led, gov=G.vote(led.gov, v, author, dna)), v["to"])


def _endorse(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    e, _, _ = G.endorse(v)
    to = _key(v.get("to"), "to")
    if e[0] == "agent" and to != e[1]:
        raise InvalidInput("an endorsement of an agent is offered to that agent")
    return Effect(led, to)


def _hold(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    bid = _key(v.get("budget"), "budget")
    task = _text(v.get("task_id"), "task_id", MAX_TASK_ID, 1)
    amt = amounts(v.get("amounts"), dna, "hold amounts", positive=True)
    exp = v.get("expires_us")
    if type(exp) is not int or exp <= ts:
        raise InvalidInput("a hold's expires_us is after its action")
    if task in led.holds:
        raise ExistsDifferent(f"task {task!r} already has a hold on this chain")
    if sum(1 for x in led.holds.values() if x.state == "pending") >= MAX_HOLDS:
        raise InvalidInput(f"at most {MAX_HOLDS} holds may be pending")
    led, b = _spend_from(led, held(led, bid), ts)
    b = debit(b, amt, "a hold")
    b = replace(b, pending=add(b.pending, amt), last_used=ts // 1_000_000)
    led = led.with_budget(b)
    return Effect(replace(led, holds=_put(led.holds, task, Hold(h, task, bid, amt, exp))))


def _resolve(led: Ledger, v: Plain, ts: int, settle: bool) -> tuple[Ledger, Hold, Budget]:
    task = _text(v.get("task_id"), "task_id", MAX_TASK_ID, 1)
    hold = led.holds.get(task)
    if hold is None:
        raise UnknownBudget(f"no hold with task_id {task!r}")
    state = hold.resolved_at(ts)
    if state == "expired" and settle:
        raise HoldExpired(f"hold {task!r} expired at {hold.expires_us // 1_000_000}")
    if state != "pending":
        raise AlreadyResolved(f"hold {task!r} is already {state}")
    b = led.budgets[hold.budget]
    return led, hold, replace(b, pending=add(b.pending, hold.amounts, -1))


def _settle(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    led, hold, b = _resolve(led, v, ts, True)
    amt = amounts(v.get("amounts"), dna, "settle amounts")
    if covers(hold.amounts, amt) is not None:
        k = covers(hold.amounts, amt)
        assert k is not None
        raise BudgetExceeded(amt[k], hold.amounts.get(k, 0), _id(hold.budget), k, "the hold")
    # no payee: the amounts were used up (metered work), spent by the budget and offered to
    # no one; a payee: paid to that agent's wallet
    payee = None if v.get("to") is None else _key(v.get("to"), "to")
    if v.get("budget") != hold.budget:
        raise InvalidInput("a settle names the budget of its hold")
    b = replace(b, available=add(b.available, add(hold.amounts, amt, -1)))
    if payee is None:
        b = replace(b, spent=add(b.spent, amt), last_used=ts // 1_000_000)
    else:
        b = replace(b, out=add(b.out, amt))
    hold = replace(hold, state="settled", settled=amt, payee=payee, credit=h)
    led = replace(led.with_budget(b), holds=_put(led.holds, hold.task_id, hold))
    return Effect(led, payee)


def _cancel(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    led, hold, b = _resolve(led, v, ts, False)
    b = replace(b, available=add(b.available, hold.amounts))
    hold = replace(hold, state="cancelled")
    return Effect(replace(led.with_budget(b), holds=_put(led.holds, hold.task_id, hold)))


def _revoke(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    """By the holder of `target`: void it now, and offer what is left back to its funder. By
    whoever funded or delegated `target`: a notice to its holder (naming what was moved), whose
    chain voids it when it accepts the notice and returns what is left then."""
    tid = _key(v.get("target"), "target")
    own = led.budgets.get(tid)
    if own is not None:
        if own.void:
            raise BudgetVoid(f"budget {_id(tid)} is already void")
        led, own = expire_holds(led, own, ts)
        led, returned = _void(led, own)
        _check(v, "returned", returned)
        return Effect(led, own.funder if own.funder is not None else None)
    child = led.children.get(tid)
    if child is None:
        raise NotAuthorized(f"only the holder of {_id(tid)} or whoever funded it may revoke it")
    if child.state != "open":
        raise BudgetVoid(f"budget {_id(tid)} was already revoked")
    _check(v, "amounts", child.amounts)
    led = replace(led, children=_put(led.children, tid, replace(child, state="revoked")))
    return Effect(led, child.holder)


def _void(led: Ledger, b: Budget) -> tuple[Ledger, Amounts]:
    """`b` made void: its pending holds are cancelled (nothing more is paid from it), and what
    is left is returned to its funder (a budget with none keeps it)."""
    led, b = _cancel_holds(led, b)
    returned = b.available if b.funder is not None else EMPTY
    b = replace(b, void=True, available=add(b.available, returned, -1), out=add(b.out, returned))
    return led.with_budget(b), returned


def _cancel_holds(led: Ledger, b: Budget) -> tuple[Ledger, Budget]:
    holds = dict(led.holds)
    back: Amounts = EMPTY
    for t, h in led.holds.items():
        if h.budget == b.id and h.state == "pending":
            holds[t] = replace(h, state="cancelled")
            back = add(back, h.amounts)
    if not back:
        return led, b
    b = replace(b, available=add(b.available, back), pending=add(b.pending, back, -1))
    return replace(led, holds=MappingProxyType(holds)).with_budget(b), b


def remainder(led: Ledger, b: Budget, ts: int) -> Amounts:
    """What voiding `b` at `ts` returns to its funder: all it has not spent or paid out (its
    holds, expired or still pending, come back with it)."""
    led, b = expire_holds(led, b, ts)
    return _cancel_holds(led, b)[1].available


def _check(v: Plain, key: str, derived: Amounts) -> None:
    """A recorded amount map must be the one re-derived (an absent one is empty)."""
    if dict(v.get(key) or {}) != dict(derived):
        raise InvalidInput(f"{key} must be {dict(derived)}, as re-derived")


def _accept(led: Ledger, v: Plain, author: bytes, ts: int, h: bytes, dna: Dna) -> Effect:
    """Take an offer made to this chain, once: the signed action is embedded, so every
    validator checks it without fetching the other chain."""
    o = offer_of(v.get("offer"), author)
    if o.hash in led.accepted:
        raise AlreadyResolved(f"offer {to_text('action', o.hash)} was already accepted")
    led = replace(led, accepted=led.accepted | {o.hash})
    ov = o.action["ledger"]
    kind = ov["kind"]
    tid = ov.get("target")
    if kind == "accept" or (kind == "revoke" and tid in led.children):
        led, parent, returned = _take_return(led, ov, o, tid, dna)
        if not (parent.void and parent.funder is not None and returned):
            _check(v, "returned", EMPTY)
            return Effect(led)
        # into a budget voided here: it goes on up to whoever funded that one
        _check(v, "returned", returned)
        if v.get("target") != parent.id:
            raise InvalidInput("a return passed on names the voided budget as its target")
        parent = replace(
            parent, available=add(parent.available, returned, -1), out=add(parent.out, returned)
        )
        return Effect(led.with_budget(parent), parent.funder)
    if kind == "revoke":
        return _take_notice(led, v, ov, o, ts, dna)
    if kind in ("vote", "endorse"):
        _check(v, "returned", EMPTY)
        if kind == "vote":
            return Effect(replace(led, gov=G.tally(led.gov, ov, o.author, o.hash, dna)[0]))
        e = G.endorse(ov)[0]
        if e[0] == "agent" and e[1] != author:
            raise InvalidInput("an endorsement of an agent is taken by that agent")
        return Effect(replace(led, gov=G.take_endorsement(led.gov, ov, o.hash)))
    if kind not in ("mint", "fund", "card", "settle"):
        raise InvalidInput(f"a {kind} is not an offer")
    _check(v, "returned", EMPTY)
    amt = amounts(ov.get("amounts"), dna, f"{kind} amounts")
    created = o.ts // 1_000_000
    if kind == "settle":
        if led.wallet is None:
            wallet_schema = Schema(("*",), can_fund=True, can_delegate=True)
            w = Budget(
                h, "wallet", "wallet", None, None, wallet_schema, amt, amt, created_at=created
            )
            return Effect(replace(led.with_budget(w), wallet=h))
        w = led.budgets[led.wallet]
        return Effect(
            led.with_budget(replace(w, funded=add(w.funded, amt), available=add(w.available, amt)))
        )
    if kind == "mint" and o.author not in dna.stewards:
        raise NotAuthorized("a mint is offered by a steward")
    if len(led.budgets) >= MAX_BUDGETS:
        raise InvalidInput(f"a chain holds at most {MAX_BUDGETS} budgets")
    b = Budget(
        o.hash,
        "card" if kind == "card" else "budget",
        _text(ov.get("name"), "name", MAX_NAME),
        None if kind == "mint" else _key(ov.get("parent"), "parent"),
        None if kind == "mint" else o.author,
        Schema.parse(ov.get("schema"), dna),
        amt,
        amt,
        created_at=created,
        entity=None if ov.get("entity") is None else G.entity(ov["entity"]),
        proposal=ov.get("proposal"),
        score=ov.get("score"),
    )
    return Effect(led.with_budget(b))


def _take_notice(led: Ledger, v: Plain, ov: Plain, o: Signed, ts: int, dna: Dna) -> Effect:
    """A funder's revoke notice: the budget is voided here and what is left goes back."""
    tid = _key(ov.get("target"), "target")
    b = led.budgets.get(tid)
    if b is None:  # never accepted here, and now it never will be: all of it goes back
        moved = amounts(ov.get("amounts"), dna, "revoked amounts")
        _check(v, "returned", moved)
        return Effect(replace(led, accepted=led.accepted | {tid}), o.author)
    if b.funder != o.author:
        raise NotAuthorized("a revoke notice comes from whoever funded the budget")
    if b.void:  # voided by its holder first, who returned what was left then
        _check(v, "returned", EMPTY)
        return Effect(led)
    led, b = expire_holds(led, b, ts)
    led, returned = _void(led, b)
    _check(v, "returned", returned)
    return Effect(led, o.author)


def _take_return(
    led: Ledger, ov: Plain, o: Signed, tid: Any, dna: Dna
) -> tuple[Ledger, Budget, Amounts]:
    """A child's holder gives back what was left of it (its own revoke, its acceptance of
    ours, or a return it passes on): into the parent it came from, never more than it got."""
    if ov["kind"] == "accept" and ov.get("target") is not None:
        tid = ov["target"]
    elif ov["kind"] == "accept":
        notice = offer_of(ov.get("offer"), o.author).action["ledger"]
        if notice.get("kind") != "revoke":
            raise InvalidInput("only a revoke's acceptance returns value")
        tid = notice.get("target")
    child = led.children.get(tid) if isinstance(tid, bytes) else None
    if child is None or child.holder != o.author:
        raise NotAuthorized("a return comes from the holder of a budget this chain funded")
    returned = amounts(ov.get("returned") or {}, dna, "returned")
    total = add(child.returned, returned)
    k = covers(child.amounts, total)
    if k is not None:
        raise BudgetExceeded(total[k], child.amounts.get(k, 0), _id(tid), k, "what it received")
    p = led.budgets[child.parent]
    p = replace(p, available=add(p.available, returned), out=add(p.out, returned, -1))
    children = _put(led.children, tid, replace(child, state="returned", returned=total))
    return replace(led.with_budget(p), children=children), p, returned


# -- what the author's node writes: the bodies of the actions whose amounts the ledger derives
def revoke_body(led: Ledger, ts: int, target: bytes) -> Plain:
    """A revoke of `target` at `ts`: by its holder (returning what is left to its funder) or by
    whoever funded it (a notice naming what was moved)."""
    own = led.budgets.get(target)
    if own is not None:
        returned = EMPTY
        if own.funder is not None and not own.void:
            returned = remainder(led, own, ts)
        return {"kind": "revoke", "target": target, "returned": dict(returned), "to": own.funder}
    child = led.children.get(target)
    if child is None:
        raise NotAuthorized(f"only the holder of {_id(target)} or whoever funded it may revoke it")
    return {"kind": "revoke", "target": target, "amounts": dict(child.amounts), "to": child.holder}


def accept_body(led: Ledger, o: Signed, ts: int) -> Plain:
    """The accept of offer `o` at `ts`: a funder's revoke notice returns what is left of the
    budget; a child's return into a budget voided here is passed on up to its funder."""
    v: Plain = {"kind": "accept", "offer": [o.body, o.sig]}
    ov = o.action["ledger"]
    kind, tid = ov["kind"], ov.get("target")
    if kind == "revoke" and tid not in led.children:  # a funder's notice
        b = led.budgets.get(tid)
        if b is None:
            v["returned"] = dict(ov.get("amounts") or {})
        elif not b.void:
            v["returned"] = dict(remainder(led, b, ts))
        v["to"] = o.author
    elif kind in ("accept", "revoke"):  # a child's return
        if kind == "accept":
            tid = ov.get("target")
            if tid is None:
                tid = offer_of(ov.get("offer"), o.author).action["ledger"].get("target")
        child = led.children.get(tid)
        p = led.budgets.get(child.parent) if child is not None else None
        back = dict(ov.get("returned") or {})
        if p is not None and p.void and p.funder is not None and back:
            v.update(returned=back, target=p.id, to=p.funder)
    return v


def offer_of(v: Any, to: bytes) -> Signed:
    """The signed offer embedded in an accept (body, sig), made to `to`."""
    o = _embedded(v, "offer")
    if o.action["ledger"].get("to") != to:
        raise InvalidInput("not a ledger offer made to this agent")
    return o


def _embedded(v: Any, what: str) -> Signed:
    """A signed ledger action of another chain, embedded as [body, sig]: its signature checked."""
    if not isinstance(v, list) or len(v) != 2:
        raise InvalidInput(f"an embedded {what} is [body, sig]")
    o = Signed.from_wire(v[0], v[1])
    if len(o.body) > MAX_ACTION_BYTES // 2:
        raise InvalidInput(f"an embedded {what} is at most half an action")
    a = o.action
    if (
        a.get("type") != "ledger"
        or not isinstance(a.get("ledger"), dict)
        or not isinstance(a.get("author"), bytes)
        or type(a.get("ts")) is not int
    ):
        raise InvalidInput(f"the embedded {what} is not a ledger action")
    if not verify(a["author"], o.sig, o.body):
        raise NotAuthorized(f"the {what}'s signature does not verify")
    return o


_APPLY = {
    "mint": _mint,
    "fund": _transfer,
    "card": _transfer,
    "hold": _hold,
    "settle": _settle,
    "cancel": _cancel,
    "revoke": _revoke,
    "accept": _accept,
    "propose": _propose,
    "vote": _vote,
    "endorse": _endorse,
}


def to_reason(e: BudgetError) -> str:
    """The validation reason a ledger refusal is reported under."""
    return "malformed" if isinstance(e, InvalidInput) else "ledger_" + e.code[2:].lower()


# -- kept with a chain's checkpoint (node/store.py), so a restart does not replay the chain
def dump(led: Ledger) -> list[Any]:
    def m(a: Amounts) -> dict[str, int]:
        return dict(a)

    return [
        [
            [
                b.id,
                b.kind,
                b.name,
                b.parent,
                b.funder,
                b.schema.plain(),
                m(b.funded),
                m(b.available),
                m(b.pending),
                m(b.spent),
                m(b.out),
                b.void,
                b.created_at,
                None if b.entity is None else list(b.entity),
                b.proposal,
                b.score,
                dict(b.ops),
                b.last_used,
            ]
            for b in led.budgets.values()
        ],
        [
            [k, c.holder, c.parent, c.kind, m(c.amounts), c.state, m(c.returned)]
            for k, c in led.children.items()
        ],
        [
            [
                h.id,
                h.task_id,
                h.budget,
                m(h.amounts),
                h.expires_us,
                h.state,
                m(h.settled),
                h.payee,
                h.credit,
            ]
            for h in led.holds.values()
        ],
        sorted(led.accepted),
        led.wallet,
        led.window,
        led.actions,
        m(led.minted),
        None if led.call is None else [led.call[0], led.call[1], m(led.call[2])],
        G.dump(led.gov),
    ]


def load(v: list[Any]) -> Ledger:
    """The inverse of `dump`, for what this node itself stored (checked when it was written)."""
    P = MappingProxyType

    def schema(d: Plain) -> Schema:
        return Schema(
            tuple(d["ops"]),
            P(d["max_per_call"]),
            P(d["min_reserve"]),
            d["can_fund"],
            d["can_delegate"],
            d["expires_at"],
            P(d["funding_target"]),
        )

    budgets = {
        r[0]: Budget(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            schema(r[5]),
            P(r[6]),
            P(r[7]),
            P(r[8]),
            P(r[9]),
            P(r[10]),
            r[11],
            r[12],
            *_tail(r[13:]),
        )
        for r in v[0]
    }
    children = {r[0]: Child(r[1], r[2], r[3], P(r[4]), r[5], P(r[6])) for r in v[1]}
    holds = {r[1]: Hold(r[0], r[1], r[2], P(r[3]), r[4], r[5], P(r[6]), r[7], r[8]) for r in v[2]}
    call = None if v[8] is None else (v[8][0], v[8][1], P(v[8][2]))
    gov = G.load(v[9] if len(v) > 9 else None)
    return Ledger(
        P(budgets), P(children), P(holds), frozenset(v[3]), v[4], v[5], v[6], P(v[7]), call, gov
    )


def _tail(r: list[Any]) -> tuple[Any, ...]:
    """A budget's envelope fields (absent from a checkpoint written before governance)."""
    if not r:
        return (None, None, None, EMPTY, 0)
    e = None if r[0] is None else (r[0][0], r[0][1])
    return (e, r[1], r[2], MappingProxyType(r[3]), r[4])
