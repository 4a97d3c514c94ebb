"""What crosses the app socket, for the server and the client alike.

Every websocket message is one binary frame holding one canonical-CBOR map
(`node.core.encoding`, at most MAX_APP_MESSAGE bytes).

client -> node   {"id": int, "t": "hello", "token": str, "agent": "new" | agent id | None,
                  "invite"?: str (a steward's invite text, which admits the "new" agent)}
                 {"id": int, "t": "call", "zome": str, "fn": str, "payload": map}
                 {"id": int, "t": "get_record", "hash": str}
                 {"id": int, "t": "status", "from": int (optional: the first agent, 0 default)}
                   (the reply holds up to STATUS_PAGE agents and "next": where the next page
                   starts, or None; peers, ops pending and warrants come with the first page)
                 {"id": int, "t": "audit", "agent"?: str, "since"?: int (unix s)}
                   (the node's audit log: refusals, deferrals, outcomes; newest 1,000)
                 {"id": int, "t": "budgets"}   (the budgets the node's agents hold, as maps)
                 {"id": int, "t": "lineage", "hash": str}   (a record's steps back to its mint)
                 {"id": int, "t": "subscribe"}
                 {"id": int, "t": "unsubscribe", "sub": int}
node -> client   {"id": int, "result": value}
                 {"id": int | None, "error": {"code": str, "message": str, "fields": map}}
                 {"sub": int, "event": map}          (events of the subscription `sub`)

CBOR here carries no floats (money is integer milli-RU), so values are wrapped where needed:
a float is {"$": "float", "v": repr}, a BudgetStatus {"$": "BudgetStatus", "v": map of ints},
an AllocationResult {"$": "AllocationResult", "v": map}, and a map that itself has a "$" key
is escaped as {"$": "map", "v": [[key, value], ...]}.
"""

from __future__ import annotations

from dataclasses import fields as dc_fields
from typing import Any

from ..agent_api import RESULT_TYPES
from ..core.budget import InsufficientRU
from ..core.encoding import decode, encode
from ..core.errors import BudgetError, InvalidChain, MalformedInput, TooLarge, error_class

# re-exported: the app socket's server and client name these errors through this module
from ..core.errors import Busy as Busy
from ..core.errors import ConnectionLost as ConnectionLost
from ..core.errors import InternalError as InternalError

MAX_APP_MESSAGE = 1 << 20  # bytes in one message, either way
MAX_ID = (1 << 53) - 1
PROTOCOL_VERSION = 1


# -- values
_WRAPPED = {cls: name for name, cls in RESULT_TYPES.items()}


def to_wire(v):
    if v is None or isinstance(v, (bool, int, str, bytes)):
        return v
    if isinstance(v, float):
        return {"$": "float", "v": repr(v)}
    if isinstance(v, (list, tuple)):
        return [to_wire(x) for x in v]
    if isinstance(v, dict):
        if "$" in v:
            return {"$": "map", "v": [[k, to_wire(x)] for k, x in v.items()]}
        return {k: to_wire(x) for k, x in v.items()}
    kind = _WRAPPED.get(type(v))
    if kind is not None:  # a result type: a dataclass, sent as its fields
        return {"$": kind, "v": to_wire({f.name: getattr(v, f.name) for f in dc_fields(v)})}
    raise InternalError(f"a {type(v).__name__} cannot be sent")


def from_wire(v, typed: bool = True):
    """The inverse of `to_wire`. The node decodes payloads with typed=False: a client sends
    plain data and floats, never result types."""
    if isinstance(v, list):
        return [from_wire(x, typed) for x in v]
    if not isinstance(v, dict):
        return v
    if "$" not in v:
        return {k: from_wire(x, typed) for k, x in v.items()}
    kind, inner = v["$"], v.get("v")
    if set(v) != {"$", "v"}:
        raise MalformedInput("a wrapped value is {'$': kind, 'v': value}")
    if kind == "float":
        if not isinstance(inner, str) or len(inner) > 64:
            raise MalformedInput("a float is sent as its repr")
        try:
            return float(inner)
        except ValueError:
            raise MalformedInput(f"not a float: {inner!r}") from None
    if kind == "map":
        if not isinstance(inner, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in inner
        ):
            raise MalformedInput("an escaped map is a list of [key, value] pairs")
        return {k: from_wire(x, typed) for k, x in inner}
    if typed and kind in RESULT_TYPES and isinstance(inner, dict):
        try:
            return RESULT_TYPES[kind](**from_wire(inner, typed))
        except TypeError as e:
            raise MalformedInput(f"bad {kind}: {e}") from None
    raise MalformedInput(f"unknown wrapped value {str(kind)[:32]!r}")


# -- messages
def pack(msg: dict) -> bytes:
    raw = encode(msg)
    if len(raw) > MAX_APP_MESSAGE:
        raise TooLarge(f"a {len(raw)}-byte message exceeds the limit of {MAX_APP_MESSAGE}")
    return raw


def unpack(raw) -> dict:
    if isinstance(raw, str):
        raise MalformedInput("messages are binary frames of canonical CBOR, not text")
    msg = decode(raw, MAX_APP_MESSAGE)
    if not isinstance(msg, dict):
        raise MalformedInput("a message is a CBOR map")
    return msg


def request_id(msg: dict[str, Any]) -> int | None:
    i = msg.get("id")
    return i if isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_ID else None


# -- errors
def error_to_wire(e: BudgetError) -> dict[str, Any]:
    fields: dict[str, object]
    if isinstance(e, InsufficientRU):
        fields = {
            "need_mru": e.need_mru,
            "have_mru": e.have_mru,
            "resets_at": e.resets_at,
            "retry_after_s": e.retry_after_s,
        }
    elif isinstance(e, InvalidChain):
        fields = {"reason": e.reason, "seq": e.seq, "detail": e.detail}
    else:
        fields = {k: getattr(e, k) for k in e.FIELDS}
    if getattr(e, "attempts", None):  # refine: every budget it tried
        fields["attempts"] = e.attempts  # type: ignore[attr-defined]
    return {"code": e.code, "message": e.message[:4096], "fields": fields}


def error_from_wire(d) -> BudgetError:
    """The same typed error the node raised, with the same str()."""
    if not isinstance(d, dict) or not isinstance(d.get("code"), str):
        return MalformedInput("the node sent an unreadable error")
    code, raw_message, raw_fields = d["code"], d.get("message"), d.get("fields")
    message = raw_message if isinstance(raw_message, str) else ""
    f: dict[str, Any] = raw_fields if isinstance(raw_fields, dict) else {}
    cls = error_class(code)
    try:
        if cls is InsufficientRU:
            return InsufficientRU(f["need_mru"], f["have_mru"], f["resets_at"], f["retry_after_s"])
        if cls is InvalidChain:
            chain_error = InvalidChain(f["reason"], f["seq"], f["detail"])
            chain_error.message = message
            chain_error.args = (message,)
            return chain_error
    except (KeyError, TypeError):
        pass
    if cls is None or cls in (InsufficientRU, InvalidChain):
        unknown = BudgetError(message)
        unknown.code = code
        return unknown
    e = cls.__new__(cls)
    BudgetError.__init__(e, message)
    for k in cls.FIELDS:
        setattr(e, k, f.get(k))
    if isinstance(f.get("attempts"), list):
        e.attempts = f["attempts"]  # type: ignore[attr-defined]
    return e
