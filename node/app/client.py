"""The remote client: an agent handle (or an operator's node handle) over a node's app socket.

`AgentClient.connect(url, token=..., agent=None)` returns `connect(...)`: the same methods as the
in-process AgentClient (one method table, `AgentMethods`), the same return types and the same
typed errors, rebuilt from the wire by their code.
"""

from __future__ import annotations

from typing import Any

import os
from contextlib import asynccontextmanager

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from ..errgroups import unwrap_single_errors
from ..agent_api import AgentMethods
from ..core.errors import (
    BudgetError,
    ConnectionLost,
    MalformedReply,
    NodeUnreachable,
    NotAuthorized,
)
from .events import MAX_QUEUED_EVENTS, DropOldestQueue
from .wire import error_from_wire, from_wire, pack, request_id, to_wire, unpack

TOKEN_ENV = "BUDGETNODE_TOKEN"


def _why(e: BaseException) -> str:
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    if not str(e) and e.__cause__ is not None:
        e = e.__cause__
    return str(e) or type(e).__name__


class _Slot:
    def __init__(self):
        self.event = trio.Event()
        self.msg = None


class Session:
    """One websocket: requests matched to replies by id, events routed to subscriptions."""

    def __init__(self, ws, nursery):
        self.ws = ws
        self.nursery = nursery
        self._next_id = 1
        self._pending: dict[int, _Slot] = {}
        self.subs: dict[int, DropOldestQueue] = {}
        self._send_lock = trio.Lock()
        self.lost: str | None = None

    def new_id(self) -> int:
        rid, self._next_id = self._next_id, self._next_id + 1
        return rid

    async def reader(self) -> None:
        try:
            while True:
                msg = unpack(await self.ws.get_message())
                if "sub" in msg and "event" in msg:
                    q = self.subs.get(msg["sub"])
                    if q is not None:
                        q.put(from_wire(msg["event"]))
                    continue
                # a valid id or None: an unhashable "id" from the node used to raise TypeError here
                rid = request_id(msg)
                slot = self._pending.pop(rid, None) if rid is not None else None
                if slot is not None:
                    slot.msg = msg
                    slot.event.set()
                elif "error" in msg:  # about no request of ours: the node refused the socket
                    self.lost = str(error_from_wire(msg["error"]))
        except ConnectionClosed as e:
            r = e.reason
            self._fail(
                f"the node closed the connection ({r.code}{' ' + r.reason if r.reason else ''})"
                if r is not None
                else "the connection closed"
            )
        except BudgetError as e:
            self._fail(f"the node sent an unreadable message ({e})")
            await self.ws.aclose()

    def _fail(self, why: str) -> None:
        self.lost = self.lost or why
        for slot in self._pending.values():
            slot.event.set()
        self._pending.clear()
        for q in self.subs.values():
            q.close()

    async def request(self, t: str, rid: int | None = None, **fields):
        if self.lost:
            raise ConnectionLost(self.lost)
        rid = self.new_id() if rid is None else rid
        raw = pack({"id": rid, "t": t, **fields})  # TooLarge is raised before anything is sent
        slot = self._pending[rid] = _Slot()
        try:
            try:
                async with self._send_lock:
                    await self.ws.send_message(raw)
            except ConnectionClosed:
                raise ConnectionLost(self.lost or "the connection closed") from None
            await slot.event.wait()
        finally:
            self._pending.pop(rid, None)
        if slot.msg is None:
            raise ConnectionLost(
                (self.lost or "the connection closed") + " before the node answered;"
                " the call may have committed"
            )
        if "error" in slot.msg:
            raise error_from_wire(slot.msg["error"])
        return from_wire(slot.msg.get("result"))

    def forget_subscription(self, rid: int) -> None:
        self.subs.pop(rid, None)
        if self.lost is None:
            try:
                self.nursery.start_soon(self._unsubscribe, rid)
            except RuntimeError:
                pass

    async def _unsubscribe(self, rid: int) -> None:
        try:
            await self.request("unsubscribe", sub=rid)
        except BudgetError:
            pass


class _Remote:
    def __init__(self, session: Session, hello: dict):
        self._session = session
        self.node_id = hello.get("node")
        self.dna = hello.get("dna")

    async def status(self) -> dict:
        """The node: agents and budgets, peers, ops pending, warrants (as `budgetnode status`),
        every agent's (gathered from as many pages as the node sends)."""
        out: dict | None = None
        async for page in self.status_pages():
            if out is None:
                out = page
            else:
                out["agents"].extend(page["agents"])
        assert out is not None  # status_pages yields at least one page
        out.pop("next", None)
        return out

    async def audit(self, agent: str | None = None, since: int | None = None) -> list[dict]:
        """The node's audit log (refusals, deferrals and their outcomes, low-budget alerts):
        its newest 1,000 events (of `agent`, at or after `since`, unix s), oldest first."""
        fields: dict[str, Any] = {"agent": agent, "since": since}
        out = await self._session.request("audit", **fields)
        if not isinstance(out, list) or not all(isinstance(e, dict) for e in out):
            raise MalformedReply("the node sent an audit log that is not a list of events")
        return out

    async def status_pages(self):
        """The node's status one page of agents at a time (the node decides the page size)."""
        start = 0
        while True:
            page = await self._session.request("status", **({"from": start} if start else {}))
            if not isinstance(page, dict) or not isinstance(page.get("agents"), list):
                raise MalformedReply("the node sent an unreadable status")
            yield page
            nxt = page.get("next")
            if nxt is None:
                return
            # a page always moves forward, so the loop ends however the node answers
            if isinstance(nxt, bool) or not isinstance(nxt, int) or nxt <= start:
                raise MalformedReply("the node sent a status page that does not move forward")
            start = nxt

    async def budgets(self) -> list[dict]:
        """Every budget, card and wallet the node's agents hold, as dicts (`budgetnode
        budgets`): id name kind holder parent schema void stage balances."""
        out = await self._session.request("budgets")
        if not isinstance(out, list) or not all(isinstance(b, dict) for b in out):
            raise MalformedReply("the node sent an unreadable budget list")
        return out

    async def proposals(self) -> list[dict]:
        """Every proposal the node's chains hold (`budgetnode proposals`), as ProposalView dicts."""
        return await self._rows("proposals")

    async def envelopes(self) -> list[dict]:
        """Every envelope the node's chains hold (`budgetnode envelopes`), as EnvelopeView dicts."""
        return await self._rows("envelopes")

    async def _rows(self, t: str) -> list[dict]:
        out = await self._session.request(t)
        if not isinstance(out, list) or not all(isinstance(b, dict) for b in out):
            raise MalformedReply(f"the node sent an unreadable {t} list")
        return out

    async def lineage(self, record: str) -> list[dict]:
        """The steps from `record` back to its mint, as the node traces them."""
        out = await self._session.request("lineage", hash=record)
        if not isinstance(out, list):
            raise MalformedReply("the node sent an unreadable lineage")
        return out

    async def subscribe(self, maxlen: int = MAX_QUEUED_EVENTS):
        """Events as dicts with a "type": "budget" (this agent's whole BudgetStatus, first as it
        is now, then after each change), "warrant" (any warrant the node learns), this agent's
        (an operator's: every agent's) "refusal", "deferred", "deferred_done" and "low_budget"
        (node/admission.py), and "overflow" (`dropped` events were dropped, oldest first,
        because this consumer lagged)."""
        s = self._session
        rid = s.new_id()
        q = s.subs[rid] = DropOldestQueue(maxlen)
        try:
            await s.request("subscribe", rid=rid)
            while True:
                ev = await q.get()
                if ev is None:
                    raise ConnectionLost(s.lost or "the connection closed")
                yield ev
        finally:
            s.forget_subscription(rid)


class RemoteAgentClient(_Remote, AgentMethods):
    def __init__(self, session: Session, hello: dict):
        super().__init__(session, hello)
        self.agent_id = hello["agent_id"]

    def __repr__(self) -> str:
        return f"RemoteAgentClient({self.agent_id})"

    async def _call(self, zome: str, fn: str, payload: dict | None):
        return await self._session.request("call", zome=zome, fn=fn, payload=to_wire(payload))

    async def _get_record(self, action_hash: str) -> dict:
        return await self._session.request("get_record", hash=action_hash)


class NodeClient(_Remote):
    """An operator's handle on a running node: no agent, just status and warrant events."""

    def __repr__(self) -> str:
        return f"NodeClient({self.node_id})"

    @staticmethod
    def connect(url: str, *, token: str | None = None, **kw):
        return _open(url, token, None, NodeClient, **kw)


def connect(
    url: str,
    *,
    token: str | None = None,
    agent: str | None = None,
    invite: str | None = None,
    **kw,
):
    """An agent of the node at `url`: a new one when `agent` is None (admitted by `invite`, a
    steward's invite text, on a `membrane: invite` network), else the agent `agent`."""
    hello = {} if invite is None else {"invite": invite}
    return _open(url, token, "new" if agent is None else agent, RemoteAgentClient, hello, **kw)


@asynccontextmanager
async def _open(url, token, agent, cls, hello_fields=None, *, connect_timeout: float = 10.0):
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise NotAuthorized(
            f"no token: pass token= (printed by `budgetnode up`) or set {TOKEN_ENV}"
        )
    with unwrap_single_errors():
        try:
            ws_cm = open_websocket_url(
                url, max_message_size=1 << 21, connect_timeout=connect_timeout, disconnect_timeout=5
            )
            ws = await ws_cm.__aenter__()
        except (OSError, HandshakeError, trio.TooSlowError, ValueError) as e:
            raise NodeUnreachable(f"cannot open {url}: {_why(e)}") from None
        except BaseExceptionGroup as eg:
            raise NodeUnreachable(f"cannot open {url}: {_why(eg)}") from None
        try:
            async with trio.open_nursery() as nursery:
                session = Session(ws, nursery)
                nursery.start_soon(session.reader)
                try:
                    hello = await session.request(
                        "hello", token=token, agent=agent, **(hello_fields or {})
                    )
                    yield cls(session, hello)
                finally:
                    nursery.cancel_scope.cancel()
        except BaseException as e:
            if not await ws_cm.__aexit__(type(e), e, e.__traceback__):
                raise
        else:
            await ws_cm.__aexit__(None, None, None)
