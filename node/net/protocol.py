"""Wire messages: one canonical-CBOR map per request or reply, bounded in size and count, parsed
here (and only here) into typed, immutable messages.

`parse_request` turns a frame into one of the request types below and `parse_reply(t, raw)` a
reply to a request of type `t` into its reply type; both raise `MalformedInput` for anything of
the wrong shape (a wrong type, a missing or unknown field, a list or byte string over its bound,
wrong nesting), so a handler or a caller only ever sees checked, typed fields. A peer's reply
that says it refused (`{"err", "msg"}`) raises `ProtocolError`.

What this node sends is built by `request` and `reply` from its own values; every such frame
parses here (tests/test_protocol.py checks the shapes this node sends against these parsers).
(Over 500 lines: one small dataclass and parser per request and reply type, kept together so
the whole wire format reads in one place.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from ..core.action import Signed
from ..core.crypto import SIG_LEN, blake2b_256
from ..core.encoding import Plain, PlainMap  # the types of decoded frames
from ..core.encoding import decode, encode, encode_trusted
from ..core.errors import BudgetError, MalformedInput

# re-exported: callers of the protocol catch and raise these by this module's name
from ..core.errors import InternalError as InternalError
from ..core.errors import MalformedReply as MalformedReply
from ..core.errors import PeerUnreachable as PeerUnreachable
from ..core.errors import ProtocolError as ProtocolError
from .messages import (
    MAX_OPS_PER_MESSAGE as MAX_OPS_PER_MESSAGE,  # re-exported with the other bounds
    Batch,
    Grant,
    Head,
    Invite,
    PeerInfo as PeerInfo,  # re-exported: the values a peer table holds
    Record,
    WarrantMsg as WarrantMsg,  # re-exported: what the warrant book receives
    action_pair,
    digest,
    entry_bytes,
    key,
    need_bytes,
    need_int,
    need_list,
    need_map,
    optional,
    signed_action,
)
from .transport import MAX_FRAME

MAX_SUMMARY_AUTHORS = 2048  # heads in one gossip summary
MAX_WARRANTS_PER_MESSAGE = 64
MAX_WARRANTED_NAMED = 4096  # offenders named in a summary (request and reply)
MAX_VOUCHES = 8  # author-key authority receipts sent along with one op
MAX_PEERS_PER_MESSAGE = 512  # per exchange (~240 B each): those the asker lacks, newest first
MAX_PEERS = 4096  # full membership: authorities are the R nearest of all known peers
MAX_TOLD = 256  # authorities a publisher names as told (R, or a forwarder's 5 R)
MAX_HAVE = 16 * (MAX_PEERS + 1)  # a peer table's versions: 16 bytes a peer, the sender included
MAX_ERROR_TEXT = 512
STATUSES = ("valid", "invalid", "warranted", "pending", "busy")  # an authority's word on an op


def _have(v: Plain) -> bytes:
    have = need_bytes(v, "'have'", most=MAX_HAVE)
    if len(have) % 16:
        raise MalformedInput("'have' is 16 bytes per peer (id prefix, timestamp)")
    return have


# -- requests (every one also carries "t" and "dna")
@dataclass(frozen=True, slots=True)
class DnaRequest:
    """Which network is this? (A newcomer asks before it can name one.)"""

    @classmethod
    def parse(cls, m: PlainMap) -> DnaRequest:
        return cls()


@dataclass(frozen=True, slots=True)
class HelloRequest:
    info: PeerInfo
    dropped: bool = False  # the asker had dropped this node as dead (a cut healed)

    @classmethod
    def parse(cls, m: PlainMap) -> HelloRequest:
        need_map(m, "a hello", frozenset({"info"}), frozenset({"dropped"}))
        dropped = m.get("dropped", False)
        if type(dropped) is not bool:
            raise MalformedInput("a hello's 'dropped' is true or false")
        return cls(PeerInfo.parse(m["info"]), dropped)


@dataclass(frozen=True, slots=True)
class PeersRequest:
    """A peer swap (`info`, `digest`, `have`) or its second leg (`push`: infos the answerer
    lacked, by the asker's reckoning)."""

    info: PeerInfo | None
    digest: bytes | None
    have: bytes
    push: tuple[PeerInfo, ...] | None

    @classmethod
    def parse(cls, m: PlainMap) -> PeersRequest:
        need_map(m, "a peers request", frozenset(), frozenset({"info", "digest", "have", "push"}))
        push = m.get("push")
        if push is not None:
            push = tuple(
                PeerInfo.parse(i)
                for i in need_list(
                    push, f"'push' (at most {MAX_PEERS_PER_MESSAGE} infos)", MAX_PEERS_PER_MESSAGE
                )
            )
        return cls(
            optional(m.get("info"), PeerInfo.parse),
            optional(m.get("digest"), need_bytes, "'digest'", size=16),
            _have(m.get("have", b"")),
            push,
        )


@dataclass(frozen=True, slots=True)
class PublishOp:
    action: Signed
    entry: bytes | None
    prev: Signed | None  # the action before it, for an op authority
    told: tuple[bytes, ...] | None  # the author-key authorities the publisher told
    vouch: tuple[tuple[bytes, bytes], ...] | None  # (validator, receipt) of author-key authorities

    @classmethod
    def parse(cls, v: Plain) -> PublishOp:
        op = need_list(v, "a published op", 6, 2)
        op = op + [None] * (6 - len(op))
        told, vouch = op[4], op[5]
        if told is not None:
            told = tuple(key(p, "a told authority") for p in need_list(told, "'told'", MAX_TOLD))
        if vouch is not None:
            vouch = tuple(
                (key(p, "a vouching authority"), need_bytes(r, "a receipt", size=SIG_LEN))
                for p, r in (
                    need_list(x, "a vouch", 2, 2) for x in need_list(vouch, "'vouch'", MAX_VOUCHES)
                )
            )
        return cls(
            signed_action(op[0], op[1], "a published action"),
            entry_bytes(op[2]),
            optional(op[3], action_pair, "the action before a published one"),
            told,
            vouch,
        )


@dataclass(frozen=True, slots=True)
class PublishRequest:
    ops: tuple[PublishOp, ...]
    batch: Batch

    @classmethod
    def parse(cls, m: PlainMap) -> PublishRequest:
        need_map(m, "a publish", frozenset({"ops", "batch"}))
        ops = tuple(
            PublishOp.parse(op)
            for op in need_list(
                m["ops"], f"a publish's ops (1-{MAX_OPS_PER_MESSAGE})", MAX_OPS_PER_MESSAGE
            )
        )
        batch = Batch.parse(m["batch"])
        if list(batch.hashes) != [blake2b_256(op.action.body + op.action.sig) for op in ops]:
            raise MalformedInput("publish batch is not for this node or does not match its ops")
        return cls(ops, batch)


@dataclass(frozen=True, slots=True)
class ChainRequest:
    author: bytes
    start: int  # "from": the first seq wanted
    limit: int

    @classmethod
    def parse(cls, m: PlainMap) -> ChainRequest:
        need_map(m, "a chain request", frozenset({"author", "from", "limit"}))
        return cls(
            key(m["author"], "a chain request's author"),
            need_int(m["from"], "a chain request's 'from'"),
            need_int(m["limit"], "a chain request's limit", 1, MAX_OPS_PER_MESSAGE),
        )


@dataclass(frozen=True, slots=True)
class RecordRequest:
    hash: bytes

    @classmethod
    def parse(cls, m: PlainMap) -> RecordRequest:
        need_map(m, "a record request", frozenset({"hash"}))
        return cls(digest(m["hash"], "a record request's hash"))


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    heads: tuple[Head, ...]
    warranted: tuple[bytes, ...]  # offenders the asker holds proof for

    @classmethod
    def parse(cls, m: PlainMap) -> SummaryRequest:
        need_map(m, "a summary", frozenset({"heads", "warranted"}))
        return cls(_heads(m["heads"]), _named(m["warranted"]))


@dataclass(frozen=True, slots=True)
class WarrantsRequest:
    warrants: tuple[WarrantMsg, ...]

    @classmethod
    def parse(cls, m: PlainMap) -> WarrantsRequest:
        need_map(m, "a warrants message", frozenset({"warrants"}))
        return cls(_warrants(m["warrants"]))


@dataclass(frozen=True, slots=True)
class GrantRequest:
    grant: Grant
    sig: bytes

    @classmethod
    def parse(cls, m: PlainMap) -> GrantRequest:
        need_map(m, "a grant request", frozenset({"grant", "sig"}))
        return cls(
            Grant.parse(m["grant"]), need_bytes(m["sig"], "a grant's signature", size=SIG_LEN)
        )


@dataclass(frozen=True, slots=True)
class OfferRequest:
    """A ledger offer (core/ledger.py: a mint, fund, card, settle, revoke or return) to an
    agent of the receiving node, whose chain accepts it."""

    offer: Signed

    @classmethod
    def parse(cls, m: PlainMap) -> OfferRequest:
        need_map(m, "an offer request", frozenset({"offer"}))
        return cls(action_pair(m["offer"], "an offer"))


@dataclass(frozen=True, slots=True)
class WitnessRequest:
    """A steward's signed clock for `agent`'s action after `prev` (None: its genesis, which
    `invite`, issued by the answering steward, admits)."""

    agent: bytes
    prev: bytes | None
    invite: Invite | None

    @classmethod
    def parse(cls, m: PlainMap) -> WitnessRequest:
        need_map(m, "a witness request", frozenset({"agent", "prev", "invite"}))
        return cls(
            key(m["agent"], "a witness request's agent"),
            optional(m["prev"], digest, "a witness request's prev"),
            optional(m["invite"], Invite.parse),
        )


def _heads(v: Plain) -> tuple[Head, ...]:
    return tuple(Head.parse(h) for h in need_list(v, "'heads'", MAX_SUMMARY_AUTHORS))


def _named(v: Plain) -> tuple[bytes, ...]:
    return tuple(
        key(a, "a warranted agent") for a in need_list(v, "'warranted'", MAX_WARRANTED_NAMED)
    )


def _warrants(v: Plain) -> tuple[WarrantMsg, ...]:
    return tuple(WarrantMsg.parse(w) for w in need_list(v, "'warrants'", MAX_WARRANTS_PER_MESSAGE))


# request type -> its parser: the one list of what this node answers
Request: TypeAlias = (
    DnaRequest
    | HelloRequest
    | PeersRequest
    | PublishRequest
    | ChainRequest
    | RecordRequest
    | SummaryRequest
    | WarrantsRequest
    | GrantRequest
    | WitnessRequest
    | OfferRequest
)
REQUESTS: dict[str, Callable[[PlainMap], Request]] = {
    "dna": DnaRequest.parse,
    "hello": HelloRequest.parse,
    "peers": PeersRequest.parse,
    "publish": PublishRequest.parse,
    "chain": ChainRequest.parse,
    "record": RecordRequest.parse,
    "summary": SummaryRequest.parse,
    "warrants": WarrantsRequest.parse,
    "grant": GrantRequest.parse,
    "witness": WitnessRequest.parse,
    "offer": OfferRequest.parse,
}


# -- replies
@dataclass(frozen=True, slots=True)
class DnaReply:
    dna: bytes  # the network's DNA, encoded (Dna.from_dict(decode(...)) checks it)

    @classmethod
    def parse(cls, m: PlainMap) -> DnaReply:
        need_map(m, "a DNA reply", frozenset({"dna"}))
        return cls(need_bytes(m["dna"], "a DNA", most=MAX_FRAME))


@dataclass(frozen=True, slots=True)
class HelloReply:
    info: PeerInfo

    @classmethod
    def parse(cls, m: PlainMap) -> HelloReply:
        need_map(m, "a hello reply", frozenset({"info"}))
        return cls(PeerInfo.parse(m["info"]))


@dataclass(frozen=True, slots=True)
class PeersReply:
    """The answerer's info and those the asker lacks, and what the answerer holds (`have`, so
    the asker can push back what it lacks); or, to a push, just `ok`."""

    infos: tuple[PeerInfo, ...]
    have: bytes | None

    @classmethod
    def parse(cls, m: PlainMap) -> PeersReply:
        need_map(m, "a peers reply", frozenset(), frozenset({"infos", "have", "ok"}))
        infos = m.get("infos", [])
        return cls(
            tuple(
                PeerInfo.parse(i) for i in need_list(infos, "'infos'", MAX_PEERS_PER_MESSAGE + 1)
            ),
            optional(m.get("have"), _have),
        )


@dataclass(frozen=True, slots=True)
class PublishResult:
    hash: bytes
    status: str
    receipt: bytes | None  # signed only by an authority of the author's key

    @classmethod
    def parse(cls, v: Plain) -> PublishResult:
        h, status, receipt = need_list(v, "a publish result", 3, 3)
        if status not in STATUSES:
            raise MalformedInput(f"a publish result's status is one of {STATUSES}")
        return cls(
            digest(h, "a publish result's hash"),
            status,
            optional(receipt, need_bytes, "a receipt", size=SIG_LEN),
        )


@dataclass(frozen=True, slots=True)
class PublishReply:
    results: tuple[PublishResult, ...]

    @classmethod
    def parse(cls, m: PlainMap) -> PublishReply:
        need_map(m, "a publish reply", frozenset({"results"}))
        return cls(
            tuple(
                PublishResult.parse(r)
                for r in need_list(m["results"], "a publish reply's results", MAX_OPS_PER_MESSAGE)
            )
        )


@dataclass(frozen=True, slots=True)
class ChainReply:
    records: tuple[Record, ...]

    @classmethod
    def parse(cls, m: PlainMap) -> ChainReply:
        need_map(m, "a chain reply", frozenset({"records"}))
        return cls(
            tuple(
                Record.parse(r)
                for r in need_list(m["records"], "a chain reply's records", MAX_OPS_PER_MESSAGE)
            )
        )


@dataclass(frozen=True, slots=True)
class RecordReply:
    record: Record | None

    @classmethod
    def parse(cls, m: PlainMap) -> RecordReply:
        need_map(m, "a record reply", frozenset({"record"}))
        return cls(optional(m["record"], Record.parse))


@dataclass(frozen=True, slots=True)
class SummaryReply:
    heads: tuple[Head, ...]
    warrants: tuple[WarrantMsg, ...]
    warranted: tuple[bytes, ...]

    @classmethod
    def parse(cls, m: PlainMap) -> SummaryReply:
        need_map(m, "a summary reply", frozenset({"heads", "warrants", "warranted"}))
        return cls(_heads(m["heads"]), _warrants(m["warrants"]), _named(m["warranted"]))


@dataclass(frozen=True, slots=True)
class OkReply:
    @classmethod
    def parse(cls, m: PlainMap) -> OkReply:
        need_map(m, "an ok reply", frozenset({"ok"}))
        if m["ok"] is not True:
            raise MalformedInput("an ok reply says ok: true")
        return cls()


@dataclass(frozen=True, slots=True)
class GrantReply:
    granted: int | None  # mRU the claim let in; None if the grant was claimed elsewhere

    @classmethod
    def parse(cls, m: PlainMap) -> GrantReply:
        need_map(m, "a grant reply", frozenset({"granted"}))
        return cls(optional(m["granted"], need_int, "granted mRU"))


@dataclass(frozen=True, slots=True)
class OfferReply:
    taken: bool  # False: the agent's chain had accepted it before

    @classmethod
    def parse(cls, m: PlainMap) -> OfferReply:
        need_map(m, "an offer reply", frozenset({"taken"}))
        if not isinstance(m["taken"], bool):
            raise MalformedInput("an offer reply says taken: true or false")
        return cls(m["taken"])


@dataclass(frozen=True, slots=True)
class WitnessReply:
    """A steward's witness: `by` signed (network, agent, prev, `at`, invite hash); the asker
    checks that with core.witness.check_witness before it uses it."""

    by: bytes
    at: int
    sig: bytes

    @classmethod
    def parse(cls, m: PlainMap) -> WitnessReply:
        need_map(m, "a witness reply", frozenset({"by", "at", "sig"}))
        return cls(
            key(m["by"], "a witness's steward"),
            need_int(m["at"], "a witness's time"),
            need_bytes(m["sig"], "a witness's signature", size=SIG_LEN),
        )

    def to_wire(self) -> PlainMap:
        return {"by": self.by, "at": self.at, "sig": self.sig}


# request type -> the parser of its reply
Reply: TypeAlias = (
    DnaReply
    | HelloReply
    | PeersReply
    | PublishReply
    | ChainReply
    | RecordReply
    | SummaryReply
    | OkReply
    | GrantReply
    | WitnessReply
    | OfferReply
)
REPLIES: dict[str, Callable[[PlainMap], Reply]] = {
    "dna": DnaReply.parse,
    "hello": HelloReply.parse,
    "peers": PeersReply.parse,
    "publish": PublishReply.parse,
    "chain": ChainReply.parse,
    "record": RecordReply.parse,
    "summary": SummaryReply.parse,
    "warrants": OkReply.parse,
    "grant": GrantReply.parse,
    "witness": WitnessReply.parse,
    "offer": OfferReply.parse,
}
assert REPLIES.keys() == REQUESTS.keys()


# Frames this node builds skip the plain-data walk (encode_trusted): they carry values it made
# or already decoded strictly, and every receiver walks them anyway.
def request(t: str, dna: bytes, **fields: Plain) -> bytes:
    return encode_trusted({"t": t, "dna": dna, **fields})


def parse_request(raw: bytes, dna: bytes) -> tuple[str, Request]:
    """(type, typed request). Raises MalformedInput, or ProtocolError for another network or an
    unknown request type."""
    msg = decode(raw, MAX_FRAME, canonical=False)
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise MalformedInput("a request is a map with a text 't'")
    t = msg.pop("t")
    if t == "dna":
        return t, DnaRequest()  # a newcomer asks which network this is before it can name it
    if msg.pop("dna", None) != dna:
        raise ProtocolError("this node is on another network (DNA hash differs)")
    parse = REQUESTS.get(t)
    if parse is None:
        raise ProtocolError(f"unknown request {t[:32]!r}")
    return t, parse(msg)


def reply(**fields: Plain) -> bytes:
    return encode_trusted(fields)


def error_reply(err: BudgetError) -> bytes:
    return encode({"err": err.code, "msg": str(err)[:MAX_ERROR_TEXT]})


def parse_reply(t: str, raw: bytes) -> Reply:
    """The typed reply to a request of type `t`. Raises MalformedInput, or ProtocolError (with
    the peer's code, `peer_code`) if the peer refused the request."""
    msg = decode(raw, MAX_FRAME, canonical=False)
    if not isinstance(msg, dict):
        raise MalformedInput("a reply is a map")
    if "err" in msg:
        code = str(msg["err"])[:64]
        text = msg.get("msg", code)
        raise ProtocolError.from_peer(code, str(text)[:MAX_ERROR_TEXT])
    return REPLIES[t](msg)
