"""The deferral queue: writes that wait for their agent's window to reset (`defer=True`).

Kept in the store (table `deferred`), so a restart loses nothing; outside every chain, so
queued work changes no chain and no budget until it runs (and is admitted again then). The
order is seed 004's, made total: (runs_at, agent, operation `zome.fn`, reason code, enqueue
seq). Bounded per agent and per node: past either, E_DEFER_QUEUE_FULL and nothing is queued.
"""

from __future__ import annotations

from dataclasses import dataclass

from .core.encoding import decode, encode
from .core.errors import DeferQueueFull
from .store import Store

MAX_PER_AGENT = 16
MAX_PER_NODE = 1024  # the hard cap

SCHEMA = """
CREATE TABLE IF NOT EXISTS deferred(id INTEGER PRIMARY KEY AUTOINCREMENT, agent BLOB NOT NULL,
    zome TEXT NOT NULL, fn TEXT NOT NULL, payload BLOB NOT NULL, code TEXT NOT NULL,
    runs_at INTEGER NOT NULL, queued_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deferred_order ON deferred(runs_at, agent, zome, fn, code, id);
"""
_COLUMNS = "id, agent, zome, fn, payload, code, runs_at, queued_at"
# (zome, fn) sort as "zome.fn" would: names are identifiers, and "." sorts before them all
_ORDER = "ORDER BY runs_at, agent, zome, fn, code, id"


@dataclass(frozen=True)
class Entry:
    id: int
    agent: bytes
    zome: str
    fn: str
    payload: bytes  # canonical CBOR of the call's payload, as the app socket carries it
    code: str
    runs_at: int  # unix s
    queued_at: int  # unix s

    @property
    def op(self) -> str:
        return f"{self.zome}.{self.fn}"

    def key(self) -> tuple:
        return (self.runs_at, self.agent, self.zome, self.fn, self.code, self.id)


class DeferralQueue:
    def __init__(self, store: Store, per_agent: int = MAX_PER_AGENT, per_node: int = MAX_PER_NODE):
        if not 0 <= per_agent <= per_node:
            raise ValueError("the per-agent bound is at most the node's")
        self.store = store
        self.per_agent = per_agent
        self.per_node = per_node
        self.overflows = 0  # writes refused E_DEFER_QUEUE_FULL
        store.create_tables(SCHEMA)

    def _select(self, where: str = "", args: tuple = (), limit: int = -1) -> list[Entry]:
        rows = self.store.db.execute(
            f"SELECT {_COLUMNS} FROM deferred {where} {_ORDER} LIMIT ?", (*args, limit)
        )
        return [Entry(*r) for r in rows]

    def entries(self, agent: bytes | None = None) -> list[Entry]:
        """In the order they run (at most the node's bound of them)."""
        if agent is None:
            return self._select(limit=self.per_node)
        return self._select("WHERE agent=?", (agent,), self.per_node)

    def get(self, id: int) -> Entry | None:
        found = self._select("WHERE id=?", (id,), 1)
        return found[0] if found else None

    def __len__(self) -> int:
        return self.store.db.execute("SELECT count(*) FROM deferred").fetchone()[0]

    def next_runs_at(self) -> int | None:
        return self.store.db.execute("SELECT min(runs_at) FROM deferred").fetchone()[0]

    def due(self, now_s: int) -> list[Entry]:
        return self._select("WHERE runs_at <= ?", (now_s,), self.per_node)

    async def add(
        self, agent: bytes, zome: str, fn: str, payload, code: str, runs_at: int, now_s: int
    ) -> tuple[Entry, int]:
        """Queue a call; (its entry, its position in the node's order). DeferQueueFull, and
        nothing queued, past either bound (counted in `overflows`)."""
        raw = encode(payload)

        def put(db) -> int:
            total = db.execute("SELECT count(*) FROM deferred").fetchone()[0]
            mine = db.execute("SELECT count(*) FROM deferred WHERE agent=?", (agent,)).fetchone()[0]
            if mine >= self.per_agent or total >= self.per_node:
                return -1
            cur = db.execute(
                "INSERT INTO deferred(agent, zome, fn, payload, code, runs_at, queued_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (agent, zome, fn, raw, code, runs_at, now_s),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        id = await self.store.write(put)
        if id < 0:
            self.overflows += 1
            whose = "this agent's" if self.count(agent) >= self.per_agent else "this node's"
            bound = self.per_agent if whose == "this agent's" else self.per_node
            raise DeferQueueFull(f"{whose} deferral queue holds its {bound} writes already")
        entry = Entry(id, agent, zome, fn, raw, code, runs_at, now_s)
        before = self.store.db.execute(
            "SELECT count(*) FROM deferred WHERE (runs_at, agent, zome, fn, code, id) < "
            "(?,?,?,?,?,?)",
            entry.key(),
        ).fetchone()[0]
        return entry, before

    def count(self, agent: bytes) -> int:
        return self.store.db.execute(
            "SELECT count(*) FROM deferred WHERE agent=?", (agent,)
        ).fetchone()[0]

    async def remove(self, id: int) -> bool:
        """Take an entry off the queue; False if it was not there (run or cancelled)."""
        return await self.store.write(
            lambda db: db.execute("DELETE FROM deferred WHERE id=?", (id,)).rowcount > 0
        )

    @staticmethod
    def payload(entry: Entry):
        return decode(entry.payload)
