"""One agent's writer: pre-flight, sign, self-validate, compare-and-swap append.

Everything that decides *whether* and *what* to write is the pure core
(budget.charge/claim, validate_next); this class only orders it under a lock and
persists it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from .core import admission, budget
from .core import ledger as ledger_mod
from .core.ledger import Ledger
from .core.action import Signed, entry_bytes, grant_hash
from .core.budget import InsufficientRU
from .core.app import App
from .core.crypto import SigningKey, blake2b_256, to_text
from .core.dna import Dna
from .core.encoding import encode_trusted
from .core.warrant import Warrant
from .core.errors import (
    GrantAlreadyClaimed,
    HeadMoved,
    InvalidChain,
    InvalidInput,
    NotAuthorized,
    NoWitness,
)
from .core.validate import ChainState, validate_genesis, validate_next
from .core.warrant import Warranted
from .store import Store

CAS_RETRIES = 3


class Cell:
    def __init__(
        self, key: SigningKey, state: ChainState, store: Store, dna: Dna, app: App, now_us
    ):
        self.key = key
        self.state = state
        self.store = store
        self.dna = dna
        self.app = app
        self.now_us = now_us
        self.lock = trio.Lock()
        self.on_commit = None  # called with each appended Signed action (the network publishes)
        self.warrant: Warrant | None = None  # set when the network has warranted this agent
        self._writing = 0  # tasks inside _append (store.writers counts busy cells)
        self._agent_id: str | None = None
        # async (agent, prev) -> a steward's witness opening a new window, or None when no
        # steward is reachable (the node sets it; None: this cell never opens a window)
        self.witness: Callable[[bytes, bytes], Awaitable[dict | None]] | None = None
        # a refine in progress (see `batch`): the task running it, its appends not yet
        # stored, the state after them, and the budget paying (None: the allowance)
        self._batch_task: object | None = None
        self._staged: list = []
        self._staged_state: ChainState | None = None
        self._pay: bytes | None = None

    @property
    def ledger(self) -> Ledger:
        """The budgets this agent's chain holds (an own chain's ledger is always known)."""
        led = self.state.ledger
        assert led is not None
        return led

    @property
    def agent_id(self) -> str:
        if self._agent_id is None:
            self._agent_id = to_text("agent", self.key.public)
        return self._agent_id

    @classmethod
    async def create(
        cls,
        key: SigningKey,
        store: Store,
        dna: Dna,
        app: App,
        now_us,
        meta: dict | None = None,
        invite: dict | None = None,
        witness: dict | None = None,
    ) -> Cell:
        """`invite` and its issuer's `witness` admit the agent under `membrane: invite`."""
        action = {
            "type": "genesis",
            "author": key.public,
            "seq": 0,
            "prev": None,
            "ts": now_us() if witness is None else max(now_us(), witness["at"]),
            "dna": dna.hash,
        }
        if invite is not None:
            action["invite"] = invite
        if witness is not None:
            action["witness"] = witness
        g = Signed.sign(action, key)
        state = cls._first_state(g, dna)
        await store.append(g, None, None, meta=meta, state=state)
        return cls(key, state, store, dna, app, now_us)

    @classmethod
    def _first_state(cls, g: Signed, dna: Dna) -> ChainState:
        """Self-validation of a genesis: its chain state, or InvalidChain (nothing is written)."""
        return validate_genesis(g, dna, verify_sig=False)

    def budget_status(self) -> budget.BudgetStatus:
        self._catch_up()
        return budget.status(self.state.budget, max(self.now_us(), self.state.ts), self.dna)

    # -- admission's checks of this chain (node/admission.py orders them; the writes and the
    # dry run, `check`, share them)
    def check_writable(self) -> None:
        """A warranted agent's writes are refused everywhere: E_WARRANTED."""
        if self.warrant is not None:
            raise Warranted(
                f"{self.agent_id} is warranted by the network "
                f"({self.warrant.reason} at seq {self.warrant.body['seq']}); "
                f"its writes are refused everywhere"
            )

    def entry_cost(self, entry_type: str, content: dict) -> int:
        """The op's cost of creating this entry, once its content is valid (E_INVALID_INPUT)."""
        edef = self.app.entry_def(entry_type)
        if edef is None:  # a coordinator asked for a type its app does not define
            raise InvalidInput(f"the app defines no entry type {entry_type!r}")
        edef.validate(content)  # bad input is refused before the budget is even looked at
        return self.dna.cost(edef.op)

    def preflight(
        self, cost_mru: int = 0, grant_mru: int | None = None, op: str | None = None
    ) -> None:
        """What a write now would meet, written nowhere: E_WARRANTED, else the budget's
        refusal (InsufficientRU for `cost_mru`, BudgetExceeded for a claim of `grant_mru` or
        for an `op` costing more than RU)."""
        self._catch_up()
        self.check_writable()
        if op is not None:
            admission.allowance_pays(op, self.dna, self.app.op_name(op))
        if grant_mru is not None:
            admission.claim_at(self.state, grant_mru, self.now_us(), self.dna)
        else:
            admission.charge_at(self.state, cost_mru, self.now_us(), self.dna)

    # -- the three kinds of budgeted append
    async def create_entry(self, entry_type: str, content: dict) -> bytes:
        cost = self.entry_cost(entry_type, content)
        edef = self.app.entry_def(entry_type)
        assert edef is not None  # entry_cost found it
        body = entry_bytes(entry_type, content)
        eh = blake2b_256(body)

        def build(ts, start):
            return (
                {
                    "type": "create",
                    "entry_type": entry_type,
                    "entry": eh,
                    "budget": self._record(edef.op, cost, start, ts),
                },
                (eh, body),
                edef.index_of(content),
            )

        return await self._append(build)

    async def charge_results(self, op: str, count: int) -> bytes | None:
        if count == 0:
            return None
        cost = self.dna.cost(op, count)

        def build(ts, start):
            return (
                {"type": "charge", "count": count, "budget": self._record(op, cost, start, ts)},
                None,
                (),
            )

        return await self._append(build)

    async def claim(self, grant: dict, sig: bytes) -> int:
        """Claim a steward's grant; returns the milli-RU actually granted (the cap may cut it)."""
        if grant.get("grantee") != self.key.public:
            raise NotAuthorized("this grant names another agent")
        gh = grant_hash(grant)
        result = {}

        def build(ts, start):
            if gh in self.state.claimed:
                raise GrantAlreadyClaimed(f"grant {to_text('grant', gh)} was already claimed")
            amount = grant["amount"]
            if isinstance(amount, int) and not isinstance(amount, bool):
                # a claim that adds nothing, or one past max_grants_per_window, is refused
                claims = admission.claims_in(self.state, start)
                budget.admit_grant(start, claims, amount, ts, self.dna)
            b, granted = budget.claim(start, amount, self.dna)
            result["granted"] = granted
            return (
                {
                    "type": "claim",
                    "grant": grant,
                    "grant_sig": sig,
                    "budget": {
                        "op": self.app.claim_op,
                        "cost": 0,
                        "granted": granted,
                        "ws": b.window_start_us,
                        "rem": b.remaining_mru,
                    },
                },
                None,
                (),
            )

        try:
            await self._append(build)
        except InvalidChain as e:  # a grant that does not verify never reaches the store
            raise NotAuthorized(f"grant refused: {e.reason}") from None
        return result["granted"]

    def _charge(
        self, start: budget.BudgetState, cost: int, ts: int
    ) -> tuple[budget.BudgetState, int]:
        """The pre-flight (raises InsufficientRU): the new budget and the cost to record."""
        return budget.charge(start, cost, ts, self.dna), cost

    def _record(self, op: str, cost: int, start: budget.BudgetState, ts: int) -> dict:
        """A write's BudgetState record: charged to the allowance, or paid by the budget of
        the refine in progress (its first paid write's seq names the call)."""
        if self._pay is not None and self._batch_task is trio.lowlevel.current_task():
            # the batch's first write starts a call (the chain's `call` may still name the last
            # refine's, which only the next unpaid action closes); the rest continue it
            cs = self._staged_state or self.state
            led = cs.ledger
            call = cs.seq + 1
            if self._staged_state is not None and led is not None and led.call is not None:
                call = led.call[0]
            return {
                "op": op,
                "cost": cost,
                "ws": start.window_start_us,
                "rem": start.remaining_mru,
                "pay": self._pay,
                "call": call,
            }
        admission.allowance_pays(op, self.dna, self.app.op_name(op))
        b, recorded_cost = self._charge(start, cost, ts)
        return {"op": op, "cost": recorded_cost, "ws": b.window_start_us, "rem": b.remaining_mru}

    async def ledger_action(self, build_body: Callable[[Ledger, int], dict]) -> Signed:
        """Append a ledger action (core/ledger.py) whose body `build_body(ledger, ts)` makes
        from the chain's ledger at the moment of writing; refusals are the ledger's BudgetErrors,
        raised before anything is written. Returns the signed action."""
        out: list[Signed] = []

        def build(ts, start):
            led = (self._staged_state or self.state).ledger
            assert led is not None  # an own chain's ledger is always known
            body = build_body(led, ts)
            to = body.get("to")
            # an endorsement's stake is charged here: InsufficientRU before anything is written
            b, cost = self._charge(start, ledger_mod.allowance_cost(body), ts)
            return (
                {
                    "type": "ledger",
                    "ledger": body,
                    "budget": {
                        "op": "ledger",
                        "cost": cost,
                        "ws": b.window_start_us,
                        "rem": b.remaining_mru,
                    },
                },
                None,
                # an offer is found by its recipient's node after a crash (node/budgets.py)
                () if to is None else (("offer_to", to.hex()),),
            )

        await self._append(build, out)
        return out[0]

    @asynccontextmanager
    async def batch(self, pay: bytes | None = None) -> AsyncIterator[list[Signed]]:
        """The writes this task makes inside are stored together, in one transaction, when the
        block ends, or not at all if it raises (a refine's instructions commit together);
        `pay`: the budget paying for them (None: the allowance). Yields the list that holds
        the actions once they are stored."""
        committed: list[Signed] = []
        self._writing += 1
        if self._writing == 1:
            self.store.writers += 1
        try:
            async with self.lock:
                self._batch_task = trio.lowlevel.current_task()
                self._staged, self._staged_state, self._pay = [], None, pay
                try:
                    yield committed
                    staged, state = self._staged, self._staged_state
                    if staged:
                        await self.store.append_all(staged)
                        assert state is not None
                        self.state = state
                        committed.extend(item[0] for item in staged)
                        if self.on_commit is not None:
                            for item in staged:
                                self.on_commit(item[0])
                finally:
                    self._batch_task, self._staged, self._staged_state = None, [], None
                    self._pay = None
        finally:
            self._writing -= 1
            if self._writing == 0:
                self.store.writers -= 1

    async def _witnessed(self, cs: ChainState, ts: int) -> dict | None:
        """A steward's witness opening the next window, if the current one has ended and a
        steward answers; an answer that would not open it (the steward's clock says the window
        has not ended yet) is not used."""
        if not budget.due(cs.budget, ts, self.dna) or self.witness is None:
            return None
        w = await self.witness(self.key.public, cs.hash)
        if w is None or not budget.due(cs.budget, w["at"], self.dna):
            return None
        return w

    async def _window(self, cs: ChainState, ts: int) -> tuple[int, budget.BudgetState, dict | None]:
        """(timestamp, the window a write at `ts` charges, the witness that opens it or None)."""
        w = await self._witnessed(cs, ts)
        if w is None:
            return ts, cs.budget, None
        return max(ts, w["at"]), budget.open_window(cs.budget, w["at"], self.dna), w

    def _next_state(self, cs: ChainState, s: Signed) -> ChainState:
        """Self-validation: the chain state after `s`, or InvalidChain (nothing is written); a
        ledger rule's refusal is raised as the ledger's own BudgetError."""
        return validate_next(cs, s, self.dna, self.app, verify_sig=False, ledger_errors=True)

    async def _append(self, build, out: list[Signed] | None = None) -> bytes:
        if self._batch_task is not None and self._batch_task is trio.lowlevel.current_task():
            return await self._stage(build, out)
        store = self.store
        self._writing += 1
        if self._writing == 1:
            store.writers += 1
        try:
            async with self.lock:
                return await self._append_locked(build, store, out)
        finally:
            self._writing -= 1
            if self._writing == 0:
                store.writers -= 1

    async def _signed(self, cs: ChainState, build, catch_up: bool):
        """(the signed action `build` makes on `cs`, its entry and index, the state after it),
        or None when `catch_up` found the head moved (the caller re-reads and tries again)."""
        key = self.key
        ts = max(self.now_us(), cs.ts)
        ts, start, w = await self._window(cs, ts)
        try:
            action, entry, index = build(ts, start)
        except InsufficientRU:
            if catch_up and self._catch_up():  # a grant claimed by another process may cover it
                return None
            if w is None and budget.due(cs.budget, ts, self.dna):
                end = budget.ceil_s(cs.budget.window_start_us + self.dna.window_us)
                raise NoWitness(
                    f"the window ended at {end}; the write needs the next one, which "
                    f"opens only with a steward's witness, and no steward is reachable"
                ) from None
            raise
        if w is not None:
            action["witness"] = w
        action.update(author=key.public, seq=cs.seq + 1, prev=cs.hash, ts=ts)
        if action["type"] == "create":
            # every field was built here from validated values (the content itself is
            # only referenced by hash, and was walked by entry_bytes): skip the walk
            body = encode_trusted(action)
            s = Signed(action, body, key.sign(body), blake2b_256(body))
        else:  # a claim's grant or a charge's count came from a caller: check it all
            s = Signed.sign(action, key)
        return s, entry, index, self._next_state(cs, s)

    async def _append_locked(self, build, store: Store, out: list[Signed] | None) -> bytes:
        self.check_writable()
        for _ in range(CAS_RETRIES):
            cs = self.state
            made = await self._signed(cs, build, True)
            if made is None:
                continue
            s, entry, index, new_state = made
            try:
                await store.commit(s, cs.seq, cs.hash, entry, index, state=new_state)
            except HeadMoved:
                self.reload()  # another process wrote; re-derive and try again
                continue
            self.state = new_state
            if out is not None:
                out.append(s)
            if self.on_commit is not None:
                self.on_commit(s)
            return s.hash
        raise HeadMoved(f"chain head of {self.agent_id} kept moving; nothing was written")

    async def _stage(self, build, out: list[Signed] | None) -> bytes:
        """An append inside `batch`: signed and self-validated now, stored when it ends."""
        self.check_writable()
        cs = self._staged_state or self.state
        made = await self._signed(cs, build, False)
        assert made is not None
        s, entry, index, new_state = made
        self._staged.append((s, cs.seq, cs.hash, entry, index, None, new_state))
        self._staged_state = new_state
        if out is not None:
            out.append(s)
        return s.hash

    def _catch_up(self) -> bool:
        """Reload if another process (sharing this store) moved the head; True if it did."""
        head = self.store.head(self.key.public)
        if head is None or (head[0], head[1]) == (self.state.seq, self.state.hash):
            return False
        self.reload()
        return True

    def reload(self) -> None:
        """Catch up with actions another process appended, validating each."""
        entries = self.store.entries_of(self.key.public)
        for s in self.store.chain(self.key.public, self.state.seq):
            e = entries.get(s.action.get("entry")) if s.action.get("type") == "create" else None
            self.state = validate_next(self.state, s, self.dna, self.app, e)
