"""The audit log: every refusal, deferral and deferred outcome, kept in the store (table
`audit`) and bounded (the oldest rows go first past `limit`), so an operator can read what was
refused and why after the fact (`budgetnode audit`), across restarts.

An event is a plain map with integer money (milli-RU): `type` (refusal, deferred,
deferred_done, low_budget), `at` (unix s), `agent_id`, and its fields (`code op need_mru
have_mru resets_at budget`, a deferral's `id runs_at position`, an outcome's `hash` or `code`).
`for_display` adds the RU values agents read.
"""

from __future__ import annotations

from collections import deque

from .core.crypto import from_text
from .core.encoding import decode, encode
from .core.money import MRU_PER_RU
from .store import Store

MAX_AUDIT = 10_000  # rows kept
PAGE = 1_000  # rows one read returns at most
MAX_PENDING = 1_024  # events held while another process holds the store's write lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
    agent BLOB, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS audit_agent ON audit(agent, id);
"""


def for_display(ev: dict) -> dict:
    """The event as agents and operators read it: money in RU beside the milli-RU."""
    out = dict(ev)
    for k in ("need", "have"):
        if isinstance(ev.get(k + "_mru"), int):
            out[k] = ev[k + "_mru"] / MRU_PER_RU
    return out


class AuditLog:
    def __init__(self, store: Store, limit: int = MAX_AUDIT):
        if limit < 1:
            raise ValueError("the audit log keeps at least one row")
        self.store = store
        self.limit = limit
        self._pending: deque[dict] = deque(maxlen=MAX_PENDING)  # not written yet: store busy
        self.dropped = 0  # events lost while the store stayed busy past MAX_PENDING
        store.create_tables(SCHEMA)

    def record(self, ev: dict) -> None:
        """Keep `ev`. It never waits for the store's write lock (a refusal must not wait, nor
        be replaced by E_STORE_BUSY): while another process holds the lock, events wait here,
        at most MAX_PENDING of them (the oldest are dropped past it, and counted)."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(ev)
        if self.store.try_write(self._flush):
            self._pending.clear()

    def _flush(self, db) -> None:
        last = None
        for ev in self._pending:
            agent = from_text("agent", ev["agent_id"]) if ev.get("agent_id") else None
            last = db.execute(
                "INSERT INTO audit(at, agent, body) VALUES (?,?,?)", (ev["at"], agent, encode(ev))
            ).lastrowid
        if last is not None:
            db.execute("DELETE FROM audit WHERE id <= ?", (last - self.limit,))

    def read(
        self, agent: str | None = None, since: int | None = None, limit: int = PAGE
    ) -> list[dict]:
        """The newest `limit` events (of `agent`, at or after `since`), oldest first."""
        where: list[str] = []
        args: list[object] = []
        if agent is not None:
            where.append("agent=?")
            args.append(from_text("agent", agent))
        if since is not None:
            where.append("at>=?")
            args.append(since)
        sql = "SELECT body FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.store.db.execute(
            sql + " ORDER BY id DESC LIMIT ?", (*args, max(0, min(limit, PAGE)))
        ).fetchall()
        return [for_display(decode(r[0])) for r in reversed(rows)]

    def __len__(self) -> int:
        return self.store.db.execute("SELECT count(*) FROM audit").fetchone()[0]
