"""The values nested inside wire messages, parsed once at the edge into typed, immutable values.

Each `parse` checks shape only: types, lengths, bounds, nesting. It raises `MalformedInput` and
nothing else, so whoever holds a parsed value never indexes a raw map or unpacks a raw list.
Signatures and chain rules are still checked where they always were (the validator, the
warrant checks, `dht.check_peer_info`): a well-shaped value is not yet a true one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from ..core.action import MAX_ACTION_BYTES, MAX_ENTRY_BYTES, Signed
from ..core.crypto import KEY_LEN, SIG_LEN
from ..core.encoding import Plain, PlainMap
from ..core.errors import BudgetError, MalformedInput
from ..core.witness import MAX_NOTE

HASH_LEN = 32
MAX_OPS_PER_MESSAGE = 256  # actions in one publish (so hashes in its batch) or chain reply
MAX_INT = (1 << 63) - 1
MAX_ADDRS = 16  # addresses in one peer info (what dht.peer_info keeps)
MAX_ADDR_CHARS = 256
MAX_AGENTS = 1024  # agents in one peer info (what dht.peer_info keeps)
MAX_TEXT = 256  # a warrant's reason, a grant's nonce
MAX_NONCE = 64
WARRANT_KINDS = ("fork", "invalid", "peer")


# -- field checks: each names the field it refuses
def need_bytes(v: Plain, what: str, *, size: int | None = None, most: int | None = None) -> bytes:
    if type(v) is not bytes:
        raise MalformedInput(f"{what} must be bytes")
    if size is not None and len(v) != size:
        raise MalformedInput(f"{what} must be {size} bytes")
    if most is not None and len(v) > most:
        raise MalformedInput(f"{what} is over {most} bytes")
    return v


def need_int(v: Plain, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise MalformedInput(f"{what} must be an integer in {lo}..{hi}")
    return v


def need_text(v: Plain, what: str, most: int = MAX_TEXT) -> str:
    if type(v) is not str or len(v) > most:
        raise MalformedInput(f"{what} must be text of at most {most} characters")
    return v


def need_list(v: Plain, what: str, most: int, least: int = 0) -> list[Plain]:
    if type(v) is not list or not least <= len(v) <= most:
        raise MalformedInput(f"{what} must be a list of {least}-{most} items")
    return v


def need_map(
    v: Plain, what: str, keys: frozenset[str], optional: frozenset[str] = frozenset()
) -> PlainMap:
    """A map with exactly `keys` (and any of `optional`): an unknown key is refused too, so a
    value re-encoded from its fields is byte for byte the one that was signed."""
    if type(v) is not dict:
        raise MalformedInput(f"{what} must be a map")
    if not keys <= v.keys() or not v.keys() <= keys | optional:
        raise MalformedInput(f"{what} must have the keys {sorted(keys)}")
    return v


def key(v: Plain, what: str) -> bytes:
    return need_bytes(v, what, size=KEY_LEN)


def digest(v: Plain, what: str) -> bytes:
    return need_bytes(v, what, size=HASH_LEN)


_P = ParamSpec("_P")
_T = TypeVar("_T")


def optional(
    v: Plain, parse: Callable[Concatenate[Plain, _P], _T], *args: _P.args, **kw: _P.kwargs
) -> _T | None:
    return None if v is None else parse(v, *args, **kw)


def signed_action(body: Plain, sig: Plain, what: str = "an action") -> Signed:
    """A signed action's shape: its body decodes strictly to a map; its signature is 64 bytes
    (whether it verifies is the validator's question)."""
    need_bytes(body, f"{what}'s body", most=MAX_ACTION_BYTES)
    need_bytes(sig, f"{what}'s signature", size=SIG_LEN)
    try:
        return Signed.from_wire(body, sig)
    except BudgetError as e:  # TooLarge, MalformedInput: the sender's malformed action
        raise MalformedInput(f"{what}: {e.message}") from None


def action_pair(v: Plain, what: str = "an action") -> Signed:
    """[body, sig]"""
    body, sig = need_list(v, what, 2, 2)
    return signed_action(body, sig, what)


def entry_bytes(v: Plain, what: str = "an entry") -> bytes | None:
    return optional(v, need_bytes, what, most=MAX_ENTRY_BYTES)


@dataclass(frozen=True, slots=True)
class Record:
    """A signed action with its entry (None for an action without one, or one not held)."""

    action: Signed
    entry: bytes | None

    @classmethod
    def parse(cls, v: Plain) -> Record:
        body, sig, entry = need_list(v, "a record", 3, 3)
        return cls(
            signed_action(body, sig, "a record's action"),
            need_bytes(entry, "a record's entry", most=MAX_ENTRY_BYTES)
            if entry is not None
            else None,
        )

    def to_wire(self) -> list[Plain]:
        return [self.action.body, self.action.sig, self.entry]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer's signed info. Its network and signature are checked by whoever takes it in
    (`NetNode._add_peer`, through dht.check_peer_info)."""

    peer: bytes
    dna: bytes
    addrs: tuple[str, ...]
    agents: tuple[bytes, ...]
    ts: int
    sig: bytes

    @classmethod
    def parse(cls, v: Plain) -> PeerInfo:
        need_map(v, "a peer info", frozenset({"body", "sig"}))
        body = need_map(
            v["body"], "a peer info's body", frozenset({"peer", "dna", "addrs", "agents", "ts"})
        )
        return cls(
            key(body["peer"], "a peer info's peer"),
            digest(body["dna"], "a peer info's DNA"),
            tuple(
                need_text(a, "a peer address", MAX_ADDR_CHARS)
                for a in need_list(body["addrs"], "a peer info's addresses", MAX_ADDRS)
            ),
            tuple(
                key(a, "a peer info's agent")
                for a in need_list(body["agents"], "a peer info's agents", MAX_AGENTS)
            ),
            need_int(body["ts"], "a peer info's timestamp"),
            need_bytes(v["sig"], "a peer info's signature", size=SIG_LEN),
        )

    def to_wire(self) -> PlainMap:
        return {
            "body": {
                "peer": self.peer,
                "dna": self.dna,
                "addrs": list(self.addrs),
                "agents": list(self.agents),
                "ts": self.ts,
            },
            "sig": self.sig,
        }


@dataclass(frozen=True, slots=True)
class Batch:
    """A publisher's signature over what it sent (`warrant.sign_batch`): evidence against it if
    an action it carried turns out forged. The signature is checked only then."""

    hashes: tuple[bytes, ...]
    to: bytes
    ts: int
    sig: bytes

    @classmethod
    def parse(cls, v: Plain) -> Batch:
        need_map(v, "a publish batch", frozenset({"hashes", "to", "ts", "sig"}))
        return cls(
            tuple(
                digest(h, "a batch hash")
                for h in need_list(v["hashes"], "a batch's hashes", MAX_OPS_PER_MESSAGE)
            ),
            key(v["to"], "a batch's recipient"),
            need_int(v["ts"], "a batch's timestamp"),
            need_bytes(v["sig"], "a batch's signature", size=SIG_LEN),
        )

    def to_wire(self) -> PlainMap:
        return {"hashes": list(self.hashes), "to": self.to, "ts": self.ts, "sig": self.sig}


@dataclass(frozen=True, slots=True)
class WarrantMsg:
    """A warrant's shape as `warrant.make` builds it. `warrant.from_wire(m.to_wire())` then
    checks its issuer's signature and that its evidence names the offender."""

    kind: str
    offender: bytes
    reason: str
    seq: int
    evidence: tuple[tuple[bytes, bytes], ...]
    issuer: bytes
    ts: int
    entry: bytes | None
    batch: Batch | None
    sig: bytes

    @classmethod
    def parse(cls, v: Plain) -> WarrantMsg:
        need_map(v, "a warrant", frozenset({"body", "sig"}))
        b = need_map(
            v["body"],
            "a warrant's body",
            frozenset(
                {"kind", "offender", "reason", "seq", "evidence", "issuer", "ts", "entry", "batch"}
            ),
        )
        if b["kind"] not in WARRANT_KINDS:
            raise MalformedInput(f"a warrant's kind is one of {WARRANT_KINDS}")
        evidence = []
        for pair in need_list(b["evidence"], "a warrant's evidence", 2, 1):
            s = action_pair(pair, "a warrant's evidence")
            evidence.append((s.body, s.sig))
        return cls(
            b["kind"],
            key(b["offender"], "a warrant's offender"),
            need_text(b["reason"], "a warrant's reason"),
            need_int(b["seq"], "a warrant's seq", -1),
            tuple(evidence),
            key(b["issuer"], "a warrant's issuer"),
            need_int(b["ts"], "a warrant's timestamp"),
            entry_bytes(b["entry"], "a warrant's entry"),
            optional(b["batch"], Batch.parse),
            need_bytes(v["sig"], "a warrant's signature", size=SIG_LEN),
        )

    def to_wire(self) -> PlainMap:
        return {
            "body": {
                "kind": self.kind,
                "offender": self.offender,
                "reason": self.reason,
                "seq": self.seq,
                "evidence": [list(p) for p in self.evidence],
                "issuer": self.issuer,
                "ts": self.ts,
                "entry": self.entry,
                "batch": None if self.batch is None else self.batch.to_wire(),
            },
            "sig": self.sig,
        }


@dataclass(frozen=True, slots=True)
class Head:
    """One chain's head as a gossip summary names it."""

    author: bytes
    seq: int
    hash: bytes

    @classmethod
    def parse(cls, v: Plain) -> Head:
        author, seq, h = need_list(v, "a head", 3, 3)
        return cls(
            key(author, "a head's author"),
            need_int(seq, "a head's seq"),
            digest(h, "a head's hash"),
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """A steward's grant as `action.grant_body` builds it (the claim checks it is true)."""

    dna: bytes
    steward: bytes
    grantee: bytes
    amount: int
    ts: int
    nonce: bytes

    @classmethod
    def parse(cls, v: Plain) -> Grant:
        need_map(v, "a grant", frozenset({"dna", "steward", "grantee", "amount", "ts", "nonce"}))
        return cls(
            digest(v["dna"], "a grant's DNA"),
            key(v["steward"], "a grant's steward"),
            key(v["grantee"], "a grant's grantee"),
            need_int(v["amount"], "a grant's amount"),
            need_int(v["ts"], "a grant's timestamp"),
            need_bytes(v["nonce"], "a grant's nonce", most=MAX_NONCE),
        )

    def to_wire(self) -> PlainMap:
        return {
            "dna": self.dna,
            "steward": self.steward,
            "grantee": self.grantee,
            "amount": self.amount,
            "ts": self.ts,
            "nonce": self.nonce,
        }


@dataclass(frozen=True, slots=True)
class Invite:
    """A steward's invite as `core.witness.make_invite` builds it (its signature is the
    witnessing steward's to check)."""

    dna: bytes
    steward: bytes
    nonce: bytes
    note: str
    at: int
    sig: bytes

    @classmethod
    def parse(cls, v: Plain) -> Invite:
        need_map(v, "an invite", frozenset({"body", "sig"}))
        b = need_map(
            v["body"], "an invite's body", frozenset({"dna", "steward", "nonce", "note", "at"})
        )
        return cls(
            digest(b["dna"], "an invite's DNA"),
            key(b["steward"], "an invite's steward"),
            need_bytes(b["nonce"], "an invite's nonce", most=32),
            need_text(b["note"], "an invite's note", MAX_NOTE),
            need_int(b["at"], "an invite's time"),
            need_bytes(v["sig"], "an invite's signature", size=SIG_LEN),
        )

    def to_wire(self) -> PlainMap:
        return {
            "body": {
                "dna": self.dna,
                "steward": self.steward,
                "nonce": self.nonce,
                "note": self.note,
                "at": self.at,
            },
            "sig": self.sig,
        }
