"""Every refusal the node can give, each with a stable machine-readable code.

All refusals share one base class so an agent can catch them in one place; the
code is what clients (and the wire protocol) rely on, never the message text.
"""
from __future__ import annotations


class BudgetError(Exception):
    code = "E_REFUSED"

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def to_dict(self) -> dict:
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


class StoreBusy(BudgetError):
    """Another network node already runs on this store (two would answer for one node key)."""
    code = "E_STORE_BUSY"
