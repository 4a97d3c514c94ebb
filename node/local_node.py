"""An in-process node: a store, a keystore, one Cell per local agent, and the zome dispatcher."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass

from zomes import APP, FUNCTIONS

from .cell import Cell
from .context import ZomeContext
from .core.action import grant_body, grant_hash
from .core.crypto import SigningKey, from_text, to_text
from .core.dna import MRU_PER_RU, Dna
from .core.encoding import decode, encode
from .core.errors import (BudgetError, InvalidChain, InvalidInput, NotFound, StoreCorrupted,
                          UnknownAgent, UnknownFunction)
from .core.validate import validate_chain
from .keystore import Keystore
from .records import record_dict
from .store import Store, store_path


@dataclass(frozen=True)
class AllocationResult:
    requested_ru: float
    granted_ru: float
    grant: str           # the grant's hash, text form
    allocation: str      # the steward's action recording it
    claimed: bool = True  # False while a grant to an unreachable agent waits to be claimed

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class LocalNode:
    def __init__(self, directory: str, store: Store, keystore: Keystore, dna: Dna, clock,
                 randbytes):
        self.directory = directory
        self.store = store
        self.keystore = keystore
        self.dna = dna
        self.clock = clock
        self.randbytes = randbytes
        self.cells: dict[bytes, Cell] = {}

    # -- lifecycle
    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | None = None, clock=None, *, durability: str = "process",
                   randbytes=os.urandom, dna: Dna | None = None):
        tmp = None
        if path is None:
            path = tmp = tempfile.mkdtemp(prefix="budgetnode-")
        node = cls.load(path, clock or time.time, durability, randbytes, dna)
        try:
            await node._claim_recovered_grants()
            yield node
        finally:
            node.close()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, path: str, clock, durability: str = "process", randbytes=os.urandom,
             dna: Dna | None = None):
        """Open the store at `path`. A new store starts a new network (with a steward of its
        own), or joins the network `dna` names."""
        os.makedirs(path, exist_ok=True)
        store = Store(store_path(path), durability)
        try:
            keystore = Keystore.open(path)
            raw = store.get_meta("dna")
            if raw is None and keystore.keys:
                raise StoreCorrupted(f"{path}: the keystore holds {len(keystore.keys)} keys but "
                                     f"the chain store is missing or empty; refusing to start a "
                                     f"new network over them")
            if raw is None and dna is None:
                node = cls._new_network(path, store, keystore, clock, randbytes)
            else:
                if raw is None:
                    store.init_meta("dna", dna.encoded())
                    raw = dna.encoded()
                try:
                    stored = Dna.from_dict(decode(raw))
                except (BudgetError, KeyError, TypeError, ValueError) as e:
                    raise StoreCorrupted(f"{path}: the stored DNA is unreadable ({e})") from None
                if dna is not None and stored.hash != dna.hash:
                    raise InvalidInput(f"the store at {path} belongs to network "
                                       f"{stored.hash_text}, not {dna.hash_text}")
                node = cls(path, store, keystore, stored, clock, randbytes)
                node._verify_and_load()
        except BaseException:
            store.close()
            raise
        return node

    @classmethod
    def _new_network(cls, path, store, keystore, clock, randbytes):
        steward = SigningKey.generate(randbytes)
        keystore.add(steward)
        dna = Dna(stewards=(steward.public,))
        node = cls(path, store, keystore, dna, clock, randbytes)
        # The DNA and the steward's genesis land in one transaction: a crash leaves neither.
        node._add_cell(Cell.create(steward, store, dna, APP, node.now_us,
                                   meta={"dna": dna.encoded()}))
        return node

    def _verify_and_load(self) -> None:
        """Verify every chain from genesis; a tampered or corrupted store is refused, not used."""
        for author in self.store.authors():
            key = self.keystore.get(author)
            if key is None:
                raise StoreCorrupted(f"no key in the keystore for {to_text('agent', author)}")
            try:
                state = validate_chain(self.store.chain(author), self.dna, APP,
                                       self.store.entries_of(author))
            except InvalidChain as e:
                raise StoreCorrupted(f"chain of {to_text('agent', author)} is invalid: {e}") from None
            self._add_cell(Cell(key, state, self.store, self.dna, APP, self.now_us))

    def close(self) -> None:
        self.store.close()

    def now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    def _add_cell(self, cell: Cell) -> Cell:
        self.cells[cell.key.public] = cell
        return cell

    # -- agents
    @property
    def steward(self) -> "AgentClient | None":
        for pub in self.dna.stewards:
            if pub in self.cells:
                return AgentClient(self, self.cells[pub])
        return None

    def agents(self) -> list[str]:
        return [c.agent_id for c in self.cells.values()]

    async def new_agent(self) -> "AgentClient":
        key = SigningKey.generate(self.randbytes)
        self.keystore.add(key)  # the key is safe on disk before any chain names it
        return AgentClient(self, self._add_cell(
            Cell.create(key, self.store, self.dna, APP, self.now_us)))

    async def agent(self, agent_id: str) -> "AgentClient":
        return AgentClient(self, self._cell(from_text("agent", agent_id)))

    async def ensure_agent(self, pub: bytes) -> None:
        """Make sure this node holds a validated chain for `pub` (the network fetches it)."""
        if not self.store.has_author(pub):
            raise UnknownAgent(f"no chain for {to_text('agent', pub)} is known to this node")

    def _cell(self, pub: bytes) -> Cell:
        cell = self.cells.get(pub)
        if cell is None and self.store.head(pub) is not None and self.keystore.get(pub):
            # created by another process sharing this store: verify it like any chain on open
            state = validate_chain(self.store.chain(pub), self.dna, APP, self.store.entries_of(pub))
            cell = self._add_cell(Cell(self.keystore.get(pub), state, self.store, self.dna, APP,
                                       self.now_us))
        if cell is None:
            raise UnknownAgent(f"{to_text('agent', pub)} is not an agent of this node")
        return cell

    # -- reads
    def get_record(self, action_hash: str) -> dict:
        found = self.store.record(from_text("action", action_hash))
        if found is None:
            raise NotFound(f"no record {action_hash}")
        return record_dict(*found)

    def status(self) -> dict:
        return {"dna": self.dna.hash_text, "path": self.directory,
                "agents": [{"agent_id": c.agent_id, "steward": c.key.public in self.dna.stewards,
                            "seq": c.state.seq, **c.budget_status().to_dict()}
                           for c in self.cells.values()]}

    # -- calls
    async def call(self, cell: Cell, zome: str, fn: str, payload):
        zf = FUNCTIONS.get((zome, fn)) if isinstance(zome, str) and isinstance(fn, str) else None
        if zf is None:
            raise UnknownFunction(f"no function {zome}.{fn}")
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise InvalidInput("the payload must be a map of parameter names to values")
        known = _PARAM_SETS.get(id(zf))
        if known is None or known[0] is not zf:
            known = _PARAM_SETS[id(zf)] = (zf, frozenset(zf.params))
        params = known[1]
        keys = payload.keys()
        unknown = keys - params
        missing = zf.required - keys
        if unknown or missing:
            raise InvalidInput(f"{zome}.{fn} takes {list(zf.params)}; "
                               + (f"unknown {sorted(unknown)} " if unknown else "")
                               + (f"missing {sorted(missing)}" if missing else ""))
        return await zf.fn(ZomeContext(self, cell), **payload)

    async def allocate(self, steward: Cell, grantee: bytes, amount_mru: int) -> AllocationResult:
        target = self._cell(grantee)  # before anything is written
        grant = grant_body(self.dna.hash, steward.key.public, grantee, amount_mru,
                           self.now_us(), self.randbytes(16))
        sig = steward.key.sign(encode(grant))
        allocation = await steward.create_entry("allocation", {"grant": grant, "sig": sig})
        granted = await target.claim(grant, sig)
        return AllocationResult(amount_mru / MRU_PER_RU, granted / MRU_PER_RU,
                                to_text("grant", grant_hash(grant)), to_text("action", allocation))

    async def _claim_recovered_grants(self) -> None:
        """A crash between a steward's record and the grantee's claim must not lose the grant:
        every recorded grant to a local agent that its chain has not claimed is claimed now."""
        for h in self.store.of_type("allocation", 1 << 62):
            _, entry = self.store.record(h)
            c = decode(entry)["content"]
            cell = self.cells.get(c["grant"]["grantee"])
            if cell is not None and grant_hash(c["grant"]) not in cell.state.claimed:
                await cell.claim(c["grant"], c["sig"])


_PARAM_SETS: dict = {}  # id(ZomeFn) -> (ZomeFn, frozenset of its parameter names)


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
        return await self.call("rose_forest", "link_edge",
                               {"from_hash": from_hash, "to_hash": to_hash, "relation": relation})

    async def create_thought_credential(self, title: str, body: str) -> str:
        return await self.call("rose_forest", "create_thought_credential",
                               {"title": title, "body": body})

    async def get_edges(self, from_hash: str, limit: int = 100) -> list[dict]:
        return await self.call("rose_forest", "get_edges", {"from_hash": from_hash, "limit": limit})

    async def transmit_understanding(self, subject: str, predicate: str, object: str,
                                     context: str | None = None) -> str:
        return await self.call("memory", "transmit_understanding",
                               {"subject": subject, "predicate": predicate, "object": object,
                                "context": context})

    async def recall_understandings(self, subject: str | None = None, limit: int = 100):
        return await self.call("memory", "recall_understandings",
                               {"subject": subject, "limit": limit})

    async def compose_memories(self, other_agent_id: str) -> str:
        return await self.call("memory", "compose_memories", {"other_agent_id": other_agent_id})

    async def validate_triple(self, subject: str, predicate: str, object: str) -> str:
        return await self.call("memory", "validate_triple",
                               {"subject": subject, "predicate": predicate, "object": object})

    async def budget_status(self):
        return await self.call("budget", "budget_status", {})

    async def allocate_budget(self, agent_id: str, ru) -> AllocationResult:
        return await self.call("budget", "allocate_budget", {"agent_id": agent_id, "ru": ru})

    async def get_record(self, action_hash: str) -> dict:
        return await self._get_record(action_hash)


def refusals(node) -> Counter:
    """Refusals by code of the calls made on `node` (in process and over its app socket)."""
    c = _REFUSALS.get(node)
    if c is None:
        c = _REFUSALS[node] = Counter()
    return c


_REFUSALS: "weakref.WeakKeyDictionary[LocalNode, Counter]" = weakref.WeakKeyDictionary()


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
    def connect(url: str, *, token: str | None = None, agent: str | None = None, **kw):
        """`async with AgentClient.connect(url, token=T) as alice:` — an agent of the node at
        `url` (a new one when `agent` is None). Same methods, results and errors as in process."""
        from .app.client import connect
        return connect(url, token=token, agent=agent, **kw)

    async def call(self, zome: str, fn: str, payload: dict | None = None):
        try:
            return await self._node.call(self._cell, zome, fn, payload)
        except BudgetError as e:
            refusals(self._node)[e.code] += 1
            raise

    async def _get_record(self, action_hash: str) -> dict:
        try:
            return self._node.get_record(action_hash)
        except BudgetError as e:
            refusals(self._node)[e.code] += 1
            raise
