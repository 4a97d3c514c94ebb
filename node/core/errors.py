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
    # attributes that travel with the error over the app socket (plain data), so a remote
    # caller reads the same fields as an in-process one
    FIELDS: tuple[str, ...] = ()

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


class InsufficientRU(BudgetError):
    code = "E_INSUFFICIENT_RU"

    def __init__(self, need_mru: int, have_mru: int, resets_at: int, retry_after_s: int):
        self.need_mru, self.have_mru = need_mru, have_mru
        self.need = need_mru / MRU_PER_RU
        self.have = have_mru / MRU_PER_RU
        self.resets_at = resets_at
        self.retry_after_s = retry_after_s
        super().__init__(
            f"need {fmt_ru(need_mru, up=True)} RU, have {fmt_ru(have_mru)} RU. "
            f"Budget resets at {resets_at}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "need_mru": self.need_mru,
            "have_mru": self.have_mru,
            "resets_at": self.resets_at,
            "retry_after_s": self.retry_after_s,
        }


class DeferQueueFull(BudgetError):
    """A write asked to wait for its budget (`defer=True`), and the deferral queue (the agent's
    share or the node's) is full: nothing was queued or written (seed 004's
    REFUSE_DEFER_QUEUE_LIMIT)."""

    code = "E_DEFER_QUEUE_FULL"


def _units(resource: str, units: int, up: bool = False) -> str:
    return f"{fmt_ru(units, up)} RU" if resource == "ru" else f"{units} {resource}"


def _amount(resource: str, units: int) -> float | int:
    return units / MRU_PER_RU if resource == "ru" else units


class BudgetExceeded(BudgetError):
    """An explicit budget, card, hold or limit lacks the amount: `.need .have` (RU in RU),
    `.budget` (its id, or None for a limit), `.resource`."""

    code = "E_BUDGET_EXCEEDED"
    FIELDS = ("need_units", "have_units", "budget", "resource")

    def __init__(self, need: int, have: int, budget: str | None, resource: str, why: str = ""):
        self.need_units, self.have_units, self.budget, self.resource = need, have, budget, resource
        where = f" in budget {budget}" if budget else ""
        super().__init__(
            f"need {_units(resource, need, up=True)}, have {_units(resource, have)}{where}"
            + (f" ({why})" if why else "")
        )

    @property
    def need(self) -> float | int:
        return _amount(self.resource, self.need_units)

    @property
    def have(self) -> float | int:
        return _amount(self.resource, self.have_units)


class Unsolvable(BudgetError):
    """The spend would leave a resource below the budget's `min_reserve`: `.shortfall` per
    resource (RU in RU)."""

    code = "E_UNSOLVABLE"
    FIELDS = ("shortfall_units", "budget")

    def __init__(self, shortfall_units: dict[str, int], budget: str, what: str = "the spend"):
        self.shortfall_units, self.budget = dict(shortfall_units), budget
        short = ", ".join(_units(k, v, up=True) for k, v in sorted(self.shortfall_units.items()))
        super().__init__(f"{what} would leave budget {budget} {short} below its min_reserve")

    @property
    def shortfall(self) -> dict[str, float | int]:
        return {k: _amount(k, v) for k, v in self.shortfall_units.items()}


class NotNarrowing(BudgetError):
    code = "E_NOT_NARROWING"


class BudgetVoid(BudgetError):
    code = "E_BUDGET_VOID"


class UnknownBudget(BudgetError):
    code = "E_UNKNOWN_BUDGET"


class UnknownTarget(BudgetError):
    code = "E_UNKNOWN_TARGET"


class ExistsDifferent(BudgetError):
    code = "E_EXISTS_DIFFERENT"


class AlreadyResolved(BudgetError):
    code = "E_ALREADY_RESOLVED"


class NoEvidence(BudgetError):
    """A proposal cites no record that exists."""

    code = "E_NO_EVIDENCE"


class AlreadyVoted(BudgetError):
    code = "E_ALREADY_VOTED"


class HoldExpired(BudgetError):
    code = "E_HOLD_EXPIRED"


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


class Unsupported(BudgetError):
    """This machine lacks what the command needs (the nemesis: root and `ip netns`)."""

    code = "E_UNSUPPORTED"


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
