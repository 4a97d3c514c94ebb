"""Every refusal the node can give, each with a stable machine-readable code, and the one
registry from code to class (`error_class`) that the app socket's client rebuilds errors from.

All refusals share one base class so an agent can catch them in one place; the
code is what clients (and the wire protocol) rely on, never the message text. Every class is
defined here (the runtime's too: modules re-export them where they are raised), so the registry
is complete without importing anything else.
"""

from __future__ import annotations

from functools import cache

from .money import MRU_PER_RU, fmt_ru


class BudgetError(Exception):
    code = "E_REFUSED"

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message}


class NotAuthorized(BudgetError):
    code = "E_NOT_AUTHORIZED"


class InvalidInput(BudgetError):
    code = "E_INVALID_INPUT"


class MalformedInput(InvalidInput):
    code = "E_MALFORMED"


class TooLarge(InvalidInput):
    code = "E_TOO_LARGE"


class UnknownFunction(BudgetError):
    code = "E_UNKNOWN_FUNCTION"


class UnknownAgent(BudgetError):
    code = "E_UNKNOWN_AGENT"


class NotFound(BudgetError):
    code = "E_NOT_FOUND"


class HeadMoved(BudgetError):
    """Another writer appended to this chain first; nothing was written."""

    code = "E_HEAD_MOVED"


class GrantAlreadyClaimed(BudgetError):
    code = "E_GRANT_CLAIMED"


class InvalidChain(BudgetError):
    """A chain (or one action of it) breaks a validation rule."""

    code = "E_INVALID_CHAIN"

    def __init__(self, reason: str, seq: int | None = None, detail: str = ""):
        self.reason = reason
        self.seq = seq
        self.detail = detail
        where = f" at seq {seq}" if seq is not None else ""
        super().__init__(f"{reason}{where}" + (f": {detail}" if detail else ""))


class StoreCorrupted(BudgetError):
    code = "E_STORE_CORRUPTED"


class StoreUnusable(BudgetError):
    """The path cannot hold a node store: empty, a file, under a file, read-only, not ours to
    write, or a store file that is a directory. Nothing was written."""

    code = "E_STORE_UNUSABLE"


class StoreBusy(BudgetError):
    """Another network node already runs on this store (two would answer for one node key), or
    another process held the store's write lock past the bound a write waits for it."""

    code = "E_STORE_BUSY"


class KeystoreInsecure(BudgetError):
    code = "E_KEYSTORE_INSECURE"


class Shortfall(BudgetError):
    """A refusal for lack of RU (or of room under a cap or limit): what was needed, what there
    was, and when the window resets. `limit` names a cap or rule that refused, if one did."""

    abstract = True  # never raised itself: its subclasses name the budget that fell short

    def __init__(
        self, need_mru: int, have_mru: int, resets_at: int, retry_after_s: int, limit: str = ""
    ):
        self.need_mru, self.have_mru = need_mru, have_mru
        self.need = need_mru / MRU_PER_RU
        self.have = have_mru / MRU_PER_RU
        self.resets_at = resets_at
        self.retry_after_s = retry_after_s
        self.limit = limit
        within = f" ({limit})" if limit else ""
        super().__init__(
            f"need {fmt_ru(need_mru, up=True)} RU, have {fmt_ru(have_mru)} RU{within}. "
            f"Budget resets at {resets_at}"
        )

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {
            "need_mru": self.need_mru,
            "have_mru": self.have_mru,
            "resets_at": self.resets_at,
            "retry_after_s": self.retry_after_s,
        }
        if self.limit:
            out["limit"] = self.limit
        return out

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, **self.fields()}


class InsufficientRU(Shortfall):
    """The ambient allowance (the window's RU plus grants) does not cover the write."""

    code = "E_INSUFFICIENT_RU"


class BudgetExceeded(Shortfall):
    """A cap or limit refuses: a grant that would add nothing (the grantee is at the cap) or
    one past the DNA's `max_grants_per_window`. `have` is the room left under it."""

    code = "E_BUDGET_EXCEEDED"


class DeferQueueFull(BudgetError):
    """A write asked to wait for its budget (`defer=True`), and the deferral queue (the agent's
    share or the node's) is full: nothing was queued or written (seed 004's
    REFUSE_DEFER_QUEUE_LIMIT)."""

    code = "E_DEFER_QUEUE_FULL"


class InviteUsed(NotAuthorized):
    """The invite was already used to admit another agent (an invite admits one)."""

    code = "E_INVITE_USED"


class NoWitness(BudgetError):
    """The agent's window has ended and the write needs the next one, which opens only with a
    time witness's (a steward's) signature, and none is reachable; retry when one is."""

    code = "E_NO_WITNESS"


class Warranted(BudgetError):
    """The network has warranted this agent: its writes are refused everywhere."""

    code = "E_WARRANTED"


# -- the network
class WrongNetwork(InvalidInput):
    """A DNA this node cannot run: another network's, or made for other integrity zomes."""

    code = "E_WRONG_NETWORK"


class AddressUnusable(BudgetError):
    """This node cannot listen where it was told to: the address is in use, not this machine's,
    or not ours to bind."""

    code = "E_ADDRESS_UNUSABLE"


class PeerUnreachable(BudgetError):
    code = "E_PEER_UNREACHABLE"


class MalformedReply(PeerUnreachable):
    """A reply that does not parse: the exchange failed, as if the peer had not answered (a
    messenger's garbage proves nothing about anyone else)."""

    code = "E_MALFORMED_REPLY"


class ProtocolError(BudgetError):
    """A request refused by the peer (or by this node, of a peer). A peer's refusal keeps the
    code it gave (`peer_code`: text, bounded, whatever a hostile peer wrote) and its message, so
    a caller that passes a refusal on raises the class `error_class(peer_code)` names, if it is
    one it expects."""

    code = "E_PROTOCOL"
    peer_code: str | None = None
    peer_message: str = ""

    @classmethod
    def from_peer(cls, peer_code: str, text: str) -> ProtocolError:
        e = cls(f"peer refused: {text}")
        e.peer_code = peer_code
        prefix = f"{peer_code}: "
        e.peer_message = text[len(prefix) :] if text.startswith(prefix) else text
        return e


class ConsistencyTimeout(BudgetError):
    code = "E_NOT_CONSISTENT"


# -- the app socket
class InternalError(BudgetError):
    code = "E_INTERNAL"


class Busy(BudgetError):
    code = "E_BUSY"


class ConnectionLost(BudgetError):
    """The socket closed before the node answered: the call may or may not have committed
    (check with budget_status or get_record before retrying a write)."""

    code = "E_CONNECTION_LOST"


class NodeUnreachable(BudgetError):
    code = "E_NODE_UNREACHABLE"


def error_class(code: str) -> type[BudgetError] | None:
    """The class that raises `code`, or None for a code this node does not know."""
    return _registry().get(code)


@cache
def _registry() -> dict[str, type[BudgetError]]:
    out: dict[str, type[BudgetError]] = {}
    for c in [c for c in globals().values() if isinstance(c, type) and issubclass(c, BudgetError)]:
        if c.__dict__.get("abstract"):
            continue
        if out.setdefault(c.code, c) is not c:
            raise RuntimeError(f"two error classes share the code {c.code}")
    return out
