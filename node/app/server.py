"""The app server of one node: one ASGI app served by hypercorn on trio.

- websocket `/agent`: the agent protocol of `wire.py` (auth by the node's token in the first
  message, then calls, reads, status and subscriptions; many in flight per connection).
- `GET /metrics`: the node's metrics in the Prometheus text format.

A call is never cancelled half-way: it runs shielded from its connection, so a client that
disconnects mid-call leaves the node to finish it (it commits fully or, if it was refused,
not at all); only the reply is lost.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from functools import partial

import trio

from ..core.crypto import from_text, to_text
from ..core.errors import (
    AddressUnusable,
    Busy,
    BudgetError,
    InternalError,
    InvalidInput,
    MalformedInput,
    NotAuthorized,
    UnknownAgent,
)
from ..agent_api import refusals
from . import metrics as M
from .events import EventHub, Subscriber
from .wire import (
    MAX_APP_MESSAGE,
    PROTOCOL_VERSION,
    error_to_wire,
    from_wire,
    pack,
    request_id,
    to_wire,
    unpack,
)

AGENT_PATH = "/agent"
METRICS_PATH = "/metrics"
MAX_CONNECTIONS = 256
MAX_CALLS_PER_CONNECTION = 32  # in flight; further requests wait (the socket is not read)
MAX_SUBSCRIPTIONS_PER_CONNECTION = 8
STATUS_PAGE = 250  # agents per status reply: ~14 CBOR items each, well within MAX_ITEMS
HELLO_TIMEOUT_S = 10.0
CLOSE_POLICY = 1008  # websocket close code: refused (bad token, no hello)
CLOSE_TRY_AGAIN = 1013  # too many connections

log = logging.getLogger("budgetnode.app")


MAX_BUDGETS_LISTED = 10_000


def new_token() -> str:
    # hex, not base64url: a token starting with "-" (1 in 64 did) reads as an option to
    # `budgetnode --token TOKEN`, and the operator's next command fails
    return secrets.token_hex(32)


def node_status(node, start: int = 0) -> dict:
    """What `budgetnode status --url` shows: agents and budgets, peers, ops pending, warrants.
    Agents come STATUS_PAGE at a time from the `start`-th on; `next` is where the next page
    starts (None after the last), so a node with any number of agents answers in bounded
    messages. Peers, pending ops and warrants come with the first page only."""
    st = node.status(start, STATUS_PAGE)
    more = start + len(st["agents"]) < st["agents_total"]
    out = {
        "dna": st["dna"],
        "path": st["path"],
        "agents": st["agents"],
        "agents_total": st["agents_total"],
        "next": start + len(st["agents"]) if more else None,
        "peers": [],
        "ops_pending": {"unpublished": 0, "limbo": 0},
        "warrants": [],
    }
    if hasattr(node, "dht") and start == 0:  # the node's own state: once, with the first page
        listen = node.transport.listen_addrs()
        out.update(
            node=to_text("agent", node.id),
            peer_id=listen[0].rsplit("/p2p/", 1)[-1] if listen else None,
            listen=listen,
            peers=sorted(to_text("agent", p) for p in node.peers),
            ops_pending={
                "unpublished": len(node.dht.unpublished(1 << 20)),
                "limbo": len(node.limbo),
            },
            warrants=[w.to_dict() for w in node.warrants()],
        )
    return out


class AppServer:
    def __init__(
        self,
        node,
        token: str | None = None,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_calls: int = MAX_CALLS_PER_CONNECTION,
        hello_timeout: float = HELLO_TIMEOUT_S,
        per_agent_metrics: bool = False,
    ):
        """`per_agent_metrics`: /metrics also shows each agent's budget, labelled by agent id
        (off by default: the page is unauthenticated, and its size would grow with agents)."""
        self.node = node
        self.token = token or new_token()
        self.max_connections = max_connections
        self.max_calls = max_calls
        self.hello_timeout = hello_timeout
        self.hub = EventHub(node)
        self.registry = M.registry_for(node, self, per_agent_metrics)
        self.connections = 0
        self.calls_in_flight = 0
        self.calls_total = 0
        self.http_url: str | None = None

    @property
    def app_url(self) -> str:
        return "ws" + self._listening_url()[len("http") :] + AGENT_PATH

    @property
    def metrics_url(self) -> str:
        return self._listening_url() + METRICS_PATH

    def _listening_url(self) -> str:
        if self.http_url is None:  # was a TypeError from the string arithmetic
            raise RuntimeError("the app server is not listening yet")
        return self.http_url

    def refused(self, code: str) -> None:
        refusals(self.node)[code] += 1

    # -- running
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; `task_status.started(self)` once the port is bound."""
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [
            f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        ]
        config.websocket_max_message_size = MAX_APP_MESSAGE
        config.graceful_timeout = 2.0
        config.accesslog = None
        config.loglevel = "WARNING"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.hub.run)
            try:
                binds = await nursery.start(partial(serve, self, config, mode="asgi"))
            except* OSError as eg:  # in use, not this machine's address, a privileged port
                leaf: BaseException = eg
                while isinstance(leaf, BaseExceptionGroup):
                    leaf = leaf.exceptions[0]
                raise AddressUnusable(
                    f"the app server cannot listen on {config.bind[0]}: "
                    f"{getattr(leaf, 'strerror', None) or leaf}"
                ) from None
            self.http_url = binds[0]
            task_status.started(self)

    # -- ASGI
    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                ev = await receive()
                if ev["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif ev["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "http":
            await self._http(scope, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope, send) -> None:
        if scope["path"] == METRICS_PATH and scope["method"] in ("GET", "HEAD"):
            status, ctype, body = 200, M.CONTENT_TYPE, M.render(self.registry)
        elif scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            status, ctype = 200, "text/plain; charset=utf-8"
            body = (
                f"budgetnode app server: websocket {AGENT_PATH}, metrics {METRICS_PATH}\n"
            ).encode()
        else:
            status, ctype, body = 404, "text/plain; charset=utf-8", b"not found\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _websocket(self, scope, receive, send) -> None:
        ev = await receive()
        if ev["type"] != "websocket.connect":
            return
        if scope["path"] != AGENT_PATH:
            await send({"type": "websocket.close", "code": CLOSE_POLICY})
            return
        if self.connections >= self.max_connections:
            self.refused(Busy.code)
            await send({"type": "websocket.accept"})
            await send(
                {
                    "type": "websocket.close",
                    "code": CLOSE_TRY_AGAIN,
                    "reason": "too many connections",
                }
            )
            return
        await send({"type": "websocket.accept"})
        self.connections += 1
        try:
            await Connection(self, send).run(receive)
        finally:
            self.connections -= 1


class Connection:
    """One client's socket: authenticated by its first message, then many requests at once."""

    def __init__(self, server: AppServer, send):
        self.server = server
        self.node = server.node
        self._send = send
        self._send_lock = trio.Lock()
        self._slots = trio.Semaphore(server.max_calls)
        self.closed = False
        self.cell = None
        self.subs: dict[int, Subscriber] = {}

    async def send(self, msg: dict) -> None:
        try:
            raw = pack(msg)
        except BudgetError as e:  # a result too large to send is refused, not truncated
            self.server.refused(e.code)
            raw = pack({"id": msg.get("id"), "error": error_to_wire(e)})
        async with self._send_lock:
            if self.closed:
                return
            try:
                await self._send({"type": "websocket.send", "bytes": raw})
            except Exception:  # noqa: BLE001 - the client has gone; nothing more to say
                self.closed = True

    async def close(self, code: int, reason: str = "") -> None:
        async with self._send_lock:
            if not self.closed:
                self.closed = True
                try:
                    await self._send({"type": "websocket.close", "code": code, "reason": reason})
                except Exception:  # noqa: BLE001
                    pass

    async def run(self, receive) -> None:
        try:
            ok = None
            with trio.move_on_after(self.server.hello_timeout):
                ok = await self._hello(receive)
            if ok is None:
                self.server.refused(NotAuthorized.code)
                await self.close(CLOSE_POLICY, "no hello in time")
            elif ok:
                await self._serve_requests(receive)
        finally:
            for sub in self.subs.values():
                self.server.hub.unsubscribe(sub)

    async def _hello(self, receive) -> bool:
        ev = await receive()
        if ev["type"] != "websocket.receive":
            return False
        rid = None
        try:
            msg = unpack(ev.get("bytes") if ev.get("bytes") is not None else ev.get("text"))
            rid = request_id(msg)
            token = msg.get("token")
            if (
                msg.get("t") != "hello"
                or not isinstance(token, str)
                or not hmac.compare_digest(token.encode(), self.server.token.encode())
            ):
                raise NotAuthorized("a connection starts with hello and the node's token")
            agent, invite = msg.get("agent"), msg.get("invite")
            if invite is not None and (agent != "new" or not isinstance(invite, str)):
                raise InvalidInput("an invite is text, and admits a new agent (agent 'new')")
            with trio.CancelScope(shield=True):  # a new agent's genesis is written whole
                if agent == "new":
                    self.cell = (await self.node.new_agent(invite=invite))._cell
                elif isinstance(agent, str):
                    self.cell = self.node._cell(from_text("agent", agent))
                elif agent is not None:
                    raise InvalidInput("agent is 'new', an agent id, or null")
        except BudgetError as e:
            self.server.refused(e.code)
            await self.send({"id": rid, "error": error_to_wire(e)})
            await self.close(CLOSE_POLICY, e.code)
            return False
        await self.send(
            {
                "id": rid,
                "result": to_wire(
                    {
                        "agent_id": self.cell.agent_id if self.cell else None,
                        "node": to_text("agent", self.node.id)
                        if hasattr(self.node, "id")
                        else None,
                        "dna": self.node.dna.hash_text,
                        "version": PROTOCOL_VERSION,
                        "max_message": MAX_APP_MESSAGE,
                        "max_calls": self.server.max_calls,
                    }
                ),
            }
        )
        return True

    async def _serve_requests(self, receive) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                while True:
                    ev = await receive()
                    if ev["type"] == "websocket.disconnect":
                        return
                    if ev["type"] != "websocket.receive":
                        continue
                    raw = ev.get("bytes") if ev.get("bytes") is not None else ev.get("text")
                    await self._slots.acquire()  # bounded in flight: wait, stop reading
                    nursery.start_soon(self._serve_one, raw)
            finally:
                # Subscriptions end with the connection; calls in flight are shielded and
                # finish (their replies go nowhere).
                nursery.cancel_scope.cancel()

    async def _serve_one(self, raw) -> None:
        rid = None
        try:
            msg = unpack(raw)
            rid = request_id(msg)
            if rid is None:
                raise MalformedInput("every request carries an integer id")
            handler = (
                getattr(self, "_on_" + str(msg.get("t")), None)
                if msg.get("t")
                in (
                    "call",
                    "get_record",
                    "status",
                    "audit",
                    "subscribe",
                    "unsubscribe",
                    "budgets",
                    "lineage",
                    "proposals",
                    "envelopes",
                )
                else None
            )
            if handler is None:
                raise MalformedInput(f"unknown request type {str(msg.get('t'))[:32]!r}")
            result = await handler(msg, rid)
            await self.send({"id": rid, "result": to_wire(result)})
        except BudgetError as e:
            self.server.refused(e.code)
            await self.send({"id": rid, "error": error_to_wire(e)})
        except Exception as e:  # noqa: BLE001 - a bug in one call must not take the node down
            log.exception("app call failed")
            self.server.refused(InternalError.code)
            await self.send({"id": rid, "error": error_to_wire(InternalError(type(e).__name__))})
        finally:
            self._slots.release()

    def _need_agent(self):
        if self.cell is None:
            raise UnknownAgent("this connection has no agent (say hello with agent 'new' or an id)")
        return self.cell

    async def _on_call(self, msg, rid):
        cell = self._need_agent()
        payload = from_wire(msg.get("payload"), typed=False)
        self.server.calls_in_flight += 1
        self.server.calls_total += 1
        try:
            with trio.CancelScope(shield=True):
                return await self.node.call(cell, msg.get("zome"), msg.get("fn"), payload)
        finally:
            self.server.calls_in_flight -= 1

    async def _on_get_record(self, msg, rid):
        self._need_agent()
        h = msg.get("hash")
        if not isinstance(h, str):
            raise InvalidInput("get_record takes a hash")
        return self.node.get_record(h)

    async def _on_status(self, msg, rid):
        start = msg.get("from", 0)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise InvalidInput("status takes from: the index of the first agent (0 or more)")
        return node_status(self.node, start)

    async def _on_audit(self, msg, rid):
        """The node's audit log (node/audit.py), newest PAGE events, oldest first."""
        agent, since = msg.get("agent"), msg.get("since")
        if agent is not None and not isinstance(agent, str):
            raise InvalidInput("audit takes agent: an agent id")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            raise InvalidInput("audit takes since: unix seconds")
        return self.node.admissions.audit.read(agent, since)

    async def _on_budgets(self, msg, rid):
        """Every budget, card and wallet the node's agents hold (at most MAX_BUDGETS_LISTED)."""
        return [v.to_dict() for v in self.node.budgets.all_held()[:MAX_BUDGETS_LISTED]]

    async def _on_proposals(self, msg, rid):
        """Every proposal the chains this node holds filed (at most MAX_BUDGETS_LISTED)."""
        return [v.to_dict() for v in self.node.governance.proposals()[:MAX_BUDGETS_LISTED]]

    async def _on_envelopes(self, msg, rid):
        """The envelope of every entity with a budget on a chain this node holds."""
        return [v.to_dict() for v in self.node.governance.envelopes()[:MAX_BUDGETS_LISTED]]

    async def _on_lineage(self, msg, rid):
        h = msg.get("hash")
        if not isinstance(h, str):
            raise InvalidInput("lineage takes a hash (a record's action id)")
        return self.node.budgets.lineage(from_text("action", h))

    async def _on_subscribe(self, msg, rid):
        if not self.server.hub.supported:
            raise InvalidInput("this node has no change events to subscribe to")
        if len(self.subs) >= MAX_SUBSCRIPTIONS_PER_CONNECTION:
            raise Busy(f"at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection")
        sub = self.server.hub.subscribe(self.cell.key.public if self.cell else None)
        self.subs[rid] = sub
        self.nursery.start_soon(self._pump, rid, sub)
        return {"sub": rid}

    async def _on_unsubscribe(self, msg, rid):
        sub = self.subs.pop(msg.get("sub"), None)
        if sub is None:
            raise InvalidInput("no such subscription")
        self.server.hub.unsubscribe(sub)
        return True

    async def _pump(self, sid: int, sub) -> None:
        while True:
            ev = await sub.queue.get()
            if ev is None or self.closed:
                return
            await self.send({"sub": sid, "event": to_wire(ev)})
