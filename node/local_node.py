"""An in-process node: a store, a keystore, one Cell per local agent, and the zome dispatcher."""

from __future__ import annotations

import itertools
import os
from typing import Any
import shutil
import tempfile
import time
from contextlib import asynccontextmanager

import trio

from .admission import Admissions
from .agent_api import AgentMethods, AllocationResult, refusals
from .app.events import MAX_QUEUED_EVENTS, DropOldestQueue
from .apps import resolve
from .budgets import Budgets
from .governance import Governance, parse_entity
from .cell import Cell
from .core.app import App
from .context import ZomeContext
from .core.action import grant_body, grant_hash
from .core.crypto import SigningKey, from_text, to_text
from .core.dna import MRU_PER_RU, Dna
from .core.encoding import decode, encode
from .core.errors import (
    BudgetError,
    BudgetExceeded,
    InvalidChain,
    InvalidInput,
    NotAuthorized,
    NotFound,
    NoWitness,
    StoreCorrupted,
    StoreUnusable,
    UnknownAgent,
    UnknownBudget,
    UnknownFunction,
    WrongNetwork,
)
from .core.witness import check_invite, parse_invite
from .keystore import FILE as KEYSTORE_FILE
from .keystore import Keystore
from .witness import WitnessService
from .records import record_dict
from .verifier import open_states
from .store import Store, store_path


WITNESS_RETRY_US = 30_000_000


class LocalNode:
    def __init__(
        self,
        directory: str,
        store: Store,
        keystore: Keystore,
        dna: Dna,
        app: App,
        clock,
        randbytes,
        cell_type: type[Cell] = Cell,
    ):
        self.directory = directory
        self.app = app
        self.store = store
        self.keystore = keystore
        self.dna = dna
        self.clock = clock
        self.randbytes = randbytes
        self.cells: dict[bytes, Cell] = {}
        self.cell_type = cell_type  # the agents' writer (a test's adversary may swap it)
        self.max_agents: int | None = None  # a cap on this node's own agents (up --max-agents)
        self.witness_service: WitnessService | None = None  # set if a steward's key is here
        self._no_witness_until = 0  # unix us: no steward answered, none is asked before this
        self.admissions = Admissions(self)  # the deferral queue, the audit log, alerts
        self._grant_lock = trio.Lock()
        self.budgets = Budgets(self)
        self.governance = Governance(self)
        for pub in dna.stewards:
            key = keystore.get(pub)
            if key is not None:
                self.witness_service = WitnessService(key, dna, store, self.now_us, randbytes)
                break

    # -- lifecycle
    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | None = None,
        clock=None,
        *,
        durability: str = "process",
        randbytes=os.urandom,
        dna: Dna | dict | None = None,
        app: App | None = None,
        cell_type: type[Cell] = Cell,
    ):
        """`app`: the application this node runs (None: the Rose Forest app, `node.apps`).
        `dna`: the network to join (a Dna), or rules for a new one (a dict such as
        `{"membrane": "invite"}`, see `Dna.rules`), or None (a new network, default rules)."""
        tmp = None
        if path is None:
            path = tmp = tempfile.mkdtemp(prefix="budgetnode-")
        node = await cls.load(path, clock or time.time, durability, randbytes, dna, app, cell_type)
        try:
            await node._claim_recovered_grants()
            await node._take_recovered_offers()
            yield node
        finally:
            node.close()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    async def load(
        cls,
        path: str,
        clock,
        durability: str = "process",
        randbytes=os.urandom,
        dna: Dna | dict | None = None,
        app: App | None = None,
        cell_type: type[Cell] = Cell,
    ):
        """Open the store at `path`. A new store starts a new network (with a steward of its
        own; `dna` may be a dict of rules for it), or joins the network `dna` names."""
        app = resolve(app)
        rules = Dna.rules(dna) if isinstance(dna, dict) else None
        joining = dna if isinstance(dna, Dna) else None
        store = Store(store_path(usable_directory(path)), durability)
        try:
            try:
                keystore = Keystore.open(path)
            except OSError as e:  # e.g. the keystore's file is a directory
                raise StoreUnusable(
                    f"{path}: the keystore cannot be read: {_os_reason(e)}"
                ) from None
            raw = store.get_meta("dna")
            if raw is None and keystore.keys:
                raise StoreCorrupted(
                    f"{path}: the keystore holds {len(keystore.keys)} keys but "
                    f"the chain store is missing or empty; refusing to start a "
                    f"new network over them"
                )
            if raw is None and joining is None:
                node = await cls._new_network(
                    path, store, keystore, app, clock, randbytes, cell_type, rules or {}
                )
            else:
                if raw is None:
                    assert joining is not None  # the branch above took raw and dna both None
                    await store.init_meta("dna", joining.encoded())
                    raw = joining.encoded()
                try:
                    stored = Dna.from_dict(decode(raw))
                except (BudgetError, KeyError, TypeError, ValueError) as e:
                    raise StoreCorrupted(f"{path}: the stored DNA is unreadable ({e})") from None
                if joining is not None and stored.hash != joining.hash:
                    raise WrongNetwork(
                        f"the store at {path} belongs to network "
                        f"{stored.hash_text}, not {joining.hash_text}"
                    )
                differ = sorted(k for k, v in (rules or {}).items() if getattr(stored, k) != v)
                if differ:
                    raise WrongNetwork(
                        f"the store at {path} holds network {stored.hash_text}, whose rules "
                        f"{differ} differ from those asked for (rules are set when a network "
                        f"is made)"
                    )
                stored.check_app(app)
                node = cls(path, store, keystore, stored, app, clock, randbytes, cell_type)
                node._verify_and_load()
        except BaseException:
            store.close()
            raise
        return node

    @classmethod
    async def _new_network(cls, path, store, keystore, app, clock, randbytes, cell_type, rules):
        steward = SigningKey.generate(randbytes)
        dna = Dna.for_app(app, stewards=(steward.public,), **rules)  # bad rules: nothing kept
        keystore.add(steward)
        node = cls(path, store, keystore, dna, app, clock, randbytes, cell_type)
        # The DNA and the steward's genesis land in one transaction: a crash leaves neither.
        node._add_cell(
            await node.cell_type.create(
                steward, store, dna, app, node.now_us, meta={"dna": dna.encoded()}
            )
        )
        return node

    def _verify_and_load(self) -> None:
        """Each chain from its checkpoint (node/verifier.py: what is checked when); a tampered
        or corrupted store is refused, not used."""
        keys: dict[bytes, SigningKey] = {}
        for author in self.store.authors():
            key = self.keystore.get(author)
            if key is None:
                raise StoreCorrupted(f"no key in the keystore for {to_text('agent', author)}")
            keys[author] = key
        for author, state in open_states(self.store, list(keys), self.dna, self.app).items():
            cell = self.cell_type(keys[author], state, self.store, self.dna, self.app, self.now_us)
            self._add_cell(cell)

    def close(self) -> None:
        self.store.close()

    def now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    def _add_cell(self, cell: Cell) -> Cell:
        cell.witness = self.witness
        self.cells[cell.key.public] = cell
        return cell

    # -- time witnesses and invites (core/witness.py)
    async def witness(
        self, agent: bytes, prev: bytes | None, invite: dict | None = None
    ) -> dict | None:
        """A steward's witness for `agent`'s next window (or, with `invite`, its genesis): from
        this node's own steward, else from one the network reaches; None if none answers. An
        invite goes to the steward that issued it; its refusals (E_INVITE_USED) are raised."""
        issuer = invite["body"]["steward"] if invite is not None else None
        ws = self.witness_service
        if ws is not None and issuer in (None, ws.key.public):
            return await ws.witness(agent, prev, invite)
        if invite is None and self.now_us() < self._no_witness_until:
            return None  # no steward answered just now: the cell goes on in its old window
        w = await self._remote_witness(agent, prev, invite)
        if w is None and invite is None:
            # each write would wait out every steward's timeout again; ask again a while later
            self._no_witness_until = self.now_us() + WITNESS_RETRY_US
        return w

    async def _remote_witness(
        self, agent: bytes, prev: bytes | None, invite: dict | None
    ) -> dict | None:
        return None  # a node without a network reaches no other steward

    def invite_service(self, steward: Cell) -> WitnessService:
        """The witness service that issues `steward`'s invites, or NotAuthorized."""
        ws = self.witness_service
        if ws is None or ws.key.public != steward.key.public:
            raise NotAuthorized("only a steward listed in the DNA can invite agents")
        return ws

    async def invite(self, steward: Cell, note: str = "") -> str:
        return self.invite_service(steward).invite(note)

    # -- agents
    @property
    def steward(self) -> AgentClient | None:
        for pub in self.dna.stewards:
            if pub in self.cells:
                return AgentClient(self, self.cells[pub])
        return None

    def agents(self) -> list[str]:
        return [c.agent_id for c in self.cells.values()]

    async def new_agent(self, invite: str | None = None) -> AgentClient:
        """A new agent of this node. Under `membrane: invite` it needs a steward's invite (its
        text, from `steward.invite()`), which the issuing steward witnesses into this genesis
        only."""
        inv = None if invite is None else parse_invite(invite)
        if self.max_agents is not None and len(self.cells) >= self.max_agents:
            raise NotAuthorized(f"this node hosts at most {self.max_agents} agents")
        if inv is None and self.dna.membrane == "invite":
            raise NotAuthorized(
                "this network admits invited agents only: pass invite=... (a steward makes one "
                "with steward.invite())"
            )
        if inv is not None:
            try:
                check_invite(inv, self.dna)
            except InvalidChain as e:
                raise NotAuthorized(f"invite refused: {e}") from None
        key = SigningKey.generate(self.randbytes)
        self.keystore.add(key)  # the key is safe on disk before anything names it
        witness = None
        if inv is not None:
            witness = await self.witness(key.public, None, inv)
            if witness is None:
                raise NoWitness("the steward that issued the invite is not reachable")
        cell = await self.cell_type.create(
            key, self.store, self.dna, self.app, self.now_us, invite=inv, witness=witness
        )
        return AgentClient(self, self._add_cell(cell))

    async def agent(self, agent_id: str) -> AgentClient:
        return AgentClient(self, self._cell(from_text("agent", agent_id)))

    async def ensure_agent(self, pub: bytes) -> None:
        """Make sure this node holds a validated chain for `pub` (the network fetches it)."""
        if not self.store.has_author(pub):
            raise UnknownAgent(f"no chain for {to_text('agent', pub)} is known to this node")

    def _cell(self, pub: bytes) -> Cell:
        cell = self.cells.get(pub)
        key = None
        if cell is None and self.store.head(pub) is not None:
            key = self.keystore.get(pub)
        if key is not None:
            # created by another process sharing this store: verified like any chain on open
            state = open_states(self.store, [pub], self.dna, self.app)[pub]
            cell = self._add_cell(
                self.cell_type(key, state, self.store, self.dna, self.app, self.now_us)
            )
        if cell is None:
            raise UnknownAgent(f"{to_text('agent', pub)} is not an agent of this node")
        return cell

    # -- reads
    async def refresh_agent(self, pub: bytes) -> None:
        """Catch up a chain this node does not write (a network node fetches it): a local node
        holds its own agents' chains only, always current."""

    def record_of(self, h: bytes):
        """(signed action, entry) of a record this node holds, or None."""
        return self.store.record(h)

    async def fetch_record(self, action_hash: str) -> dict:
        """A record by hash (a network node also asks the hash's authorities)."""
        return self.get_record(action_hash)

    def get_record(self, action_hash: str) -> dict:
        found = self.store.record(from_text("action", action_hash))
        if found is None:
            raise NotFound(f"no record {action_hash}")
        return record_dict(*found, self.app)

    def status(self, start: int = 0, count: int | None = None) -> dict:
        """The node and its agents, or the `count` agents from the `start`-th on (agents are
        only ever added, in order, so an offset names the same page on every call)."""
        stop = None if count is None else start + count
        return {
            "dna": self.dna.hash_text,
            "path": self.directory,
            "agents_total": len(self.cells),
            "agents": [
                {
                    "agent_id": c.agent_id,
                    "steward": c.key.public in self.dna.stewards,
                    "seq": c.state.seq,
                    **c.budget_status().to_dict(),
                }
                for c in itertools.islice(self.cells.values(), start, stop)
            ],
        }

    # -- calls
    async def call(self, cell: Cell, zome: str, fn: str, payload):
        """An agent's call of a function (the app's, or the node's own: node/admission.py),
        with due deferred work run first and refusals audited."""
        return await self.admissions.call(cell, zome, fn, payload)

    async def dispatch(self, cell: Cell, zome, fn, payload, context=ZomeContext):
        """The app's function, admitted in node/core/admission.py's order: the function, its
        payload, then what the function checks and writes (`context`: a dry run's stops at
        each write's pre-flight)."""
        zf = (
            self.app.functions.get((zome, fn))
            if isinstance(zome, str) and isinstance(fn, str)
            else None
        )
        if zf is None:
            raise UnknownFunction(f"no function {zome}.{fn}")
        # every parameter's type and range, declared with the function (zomes.hdk)
        payload = zf.check(payload, self.dna)
        return await zf.fn(context(self, cell), **payload)

    @asynccontextmanager
    async def granting(self):
        """One grant at a time from its pre-flight to its claim, so the pre-flight's verdict
        holds when the claim is written (ten grants racing to an agent near the cap must not
        all be recorded and then find it full). No scheduler checkpoint when it is free."""
        try:
            self._grant_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._grant_lock.acquire()
        try:
            yield
        finally:
            self._grant_lock.release()

    async def allocate(self, steward: Cell, grantee: bytes, amount_mru: int) -> AllocationResult:
        target = self._cell(grantee)  # before anything is written
        async with self.granting():
            self.grant_preflight(steward, grantee, amount_mru)
            grant, sig, allocation = await self._record_grant(steward, grantee, amount_mru)
            granted = await target.claim(grant, sig)
        await self.admissions.run_affordable(target)  # writes it queued may fit now
        return AllocationResult(
            amount_mru / MRU_PER_RU,
            granted / MRU_PER_RU,
            to_text("grant", grant_hash(grant)),
            to_text("action", allocation),
        )

    def grant_preflight(self, steward: Cell, grantee: bytes, amount_mru: int) -> None:
        """A grant's checks before the steward records anything: the steward may write
        (E_WARRANTED), and the grantee's claim would add something (else E_BUDGET_EXCEEDED:
        at the cap, or past max_grants_per_window) and is not warranted."""
        steward.check_writable()
        self._cell(grantee).preflight(grant_mru=amount_mru)

    async def _record_grant(
        self, steward: Cell, grantee: bytes, amount_mru: int
    ) -> tuple[dict[str, Any], bytes, bytes]:
        """The steward signs a grant and records it on its chain: (grant, signature, the
        recording action's hash). The grantee's chain claims it next, here or at its node."""
        grant = grant_body(
            self.dna.hash,
            steward.key.public,
            grantee,
            amount_mru,
            self.now_us(),
            self.randbytes(16),
        )
        sig = steward.key.sign(encode(grant))
        if self.app.grant_entry is None:  # was create_entry(None, ...)'s "no entry type None"
            raise InvalidInput("this app records no grants")
        allocation = await steward.create_entry(self.app.grant_entry, {"grant": grant, "sig": sig})
        return grant, sig, allocation

    async def _claim_recovered_grants(self) -> None:
        """A crash between a steward's record and the grantee's claim must not lose the grant:
        every recorded grant to a local agent that its chain has not claimed is claimed now."""
        if self.app.grant_entry is None:
            return
        for h in self.store.of_type(self.app.grant_entry, 1 << 62):
            found = self.store.record(h)
            # of_type just named it, and this store (local chains only) keeps each create's entry
            assert found is not None and found[1] is not None
            entry = found[1]
            c = decode(entry)["content"]
            cell = self.cells.get(c["grant"]["grantee"])
            if cell is not None and grant_hash(c["grant"]) not in cell.state.claimed:
                try:
                    await cell.claim(c["grant"], c["sig"])
                except BudgetExceeded:
                    pass  # the window it was recorded for is full (cap, max grants) by now

    async def _take_recovered_offers(self) -> None:
        """Offers to local agents stored but not accepted (a crash between the two) are
        accepted now, like recovered grants."""
        for pub, cell in list(self.cells.items()):
            for h in self.store.find("offer_to", pub.hex(), 1 << 16):
                found = self.store.record(h)
                if found is not None:
                    await self.budgets.take_offer(cell, found[0])
            await self.budgets.release_expired(cell)
            await self.governance.grant_approved(cell)

    async def get_proposal(self, proposal_id: str):
        """A proposal (node/agent_api.py ProposalView), as its proposer's chain has it."""
        return await self.governance.get_proposal(from_text("action", proposal_id))

    async def get_envelope(self, entity_type: str, entity_id: str):
        """An entity's envelope (EnvelopeView), derived from its holder's chain."""
        return await self.governance.get_envelope(parse_entity(entity_type, entity_id))

    async def get_budget(self, budget_id: str):
        """A budget's view (node/agent_api.py BudgetView), as this node derives it from the
        holder's signed chain."""
        return self.budgets.view(from_text("budget", budget_id))

    async def check_offer(self, o) -> None:
        """Refuse to accept an offer unless it is an action of a chain this node holds, checked
        (value from an invalid action, say a Sybil funding from nothing, is never taken)."""
        if self.store.record(o.hash) is None:
            raise UnknownBudget(
                f"the offer {to_text('action', o.hash)} is not on any chain this node holds"
            )

    def ledgers(self):
        """(agent, ledger) of every chain whose budgets this node knows: its own agents'."""
        for pub, cell in self.cells.items():
            yield pub, cell.ledger

    async def send_offer(self, to: bytes, s) -> None:
        """An offer to an agent of another node: this node reaches none (a network node sends
        it; see node/net/node.py)."""


def usable_directory(path: str) -> str:
    """`path`, made if missing, once it can hold a writable store; else StoreUnusable saying
    why (checked before SQLite, whose 'unable to open database file' would read as damage)."""
    if not isinstance(path, str) or not path:
        raise StoreUnusable("a store's path must not be empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreUnusable(f"{path}: not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise StoreUnusable(f"{path}: cannot make the store's directory: {_os_reason(e)}") from None
    files = [f for f in (store_path(path), os.path.join(path, KEYSTORE_FILE)) if os.path.exists(f)]
    for f in files:
        if os.path.isdir(f):
            raise StoreUnusable(f"{f}: a directory, where the node keeps a file")
    for p in (path, *files):
        # access() reports a read-only mount (EROFS) and an immutable file even to root
        if not os.access(p, os.W_OK):
            raise StoreUnusable(f"{p}: read-only (the node writes to its store)")
    return path


def _os_reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


class AgentClient(AgentMethods):
    """One agent's handle in process: a method per zome function, plus `call(zome, fn, payload)`.
    `AgentClient.connect(url, token=...)` gives the same handle over a running node's socket."""

    def __init__(self, node: LocalNode, cell: Cell):
        self._node = node
        self._cell = cell
        self.agent_id = cell.agent_id

    def __repr__(self) -> str:
        return f"AgentClient({self.agent_id})"

    @staticmethod
    def connect(
        url: str,
        *,
        token: str | None = None,
        agent: str | None = None,
        invite: str | None = None,
        **kw,
    ):
        """`async with AgentClient.connect(url, token=T) as alice:` — an agent of the node at
        `url` (a new one when `agent` is None, admitted by `invite` where the network asks for
        one). Same methods, results and errors as in process."""
        from .app.client import connect

        return connect(url, token=token, agent=agent, invite=invite, **kw)

    async def _call(self, zome: str, fn: str, payload: dict | None):
        try:
            return await self._node.call(self._cell, zome, fn, payload)
        except BudgetError as e:
            refusals(self._node)[e.code] += 1
            raise

    async def subscribe(self, maxlen: int = MAX_QUEUED_EVENTS):
        """This agent's admission events as they happen, as dicts with a "type": "refusal",
        "deferred", "deferred_done", "low_budget" (node/admission.py), and "overflow" (`dropped`
        events were dropped, oldest first, because this consumer lagged). The app socket's
        `subscribe` gives the same events, beside budget changes and warrants."""
        q = DropOldestQueue(maxlen)
        me = self.agent_id
        stop = self._node.admissions.listen(
            lambda ev: q.put(ev) if ev.get("agent_id") == me else None
        )
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            stop()

    async def _get_record(self, action_hash: str) -> dict:
        try:
            return self._node.get_record(action_hash)
        except BudgetError as e:
            refusals(self._node)[e.code] += 1
            raise
