"""Wire messages: one canonical-CBOR map per request or reply, bounded in size and count."""
from __future__ import annotations

from ..core.encoding import decode, encode, encode_trusted
from ..core.errors import BudgetError, InternalError, MalformedInput, ProtocolError  # noqa: F401
from .transport import MAX_FRAME

MAX_OPS_PER_MESSAGE = 256      # actions in one publish or chain reply
MAX_SUMMARY_AUTHORS = 2048     # heads in one gossip summary
MAX_WARRANTS_PER_MESSAGE = 64
MAX_WARRANTED_NAMED = 4096     # offenders named in a summary (request and reply)
MAX_VOUCHES = 8                # author-key authority receipts sent along with one op
MAX_PEERS_PER_MESSAGE = 512    # per exchange (~240 B each): those the asker lacks, newest first

REQUESTS = frozenset({"dna", "hello", "peers", "publish", "chain", "record", "summary", "warrants",
                      "grant"})


# Frames this node builds skip the plain-data walk (encode_trusted): they carry values it made
# or already decoded strictly, and every receiver walks them anyway.
def request(t: str, dna: bytes, **fields) -> bytes:
    return encode_trusted({"t": t, "dna": dna, **fields})


def parse_request(raw: bytes, dna: bytes) -> dict:
    msg = decode(raw, MAX_FRAME, canonical=False)
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise MalformedInput("a request is a map with a text 't'")
    if msg["t"] == "dna":
        return msg  # a newcomer asks which network this is before it can name it
    if msg.get("dna") != dna:
        raise ProtocolError("this node is on another network (DNA hash differs)")
    if msg["t"] not in REQUESTS:
        raise ProtocolError(f"unknown request {msg['t'][:32]!r}")
    return msg


def reply(**fields) -> bytes:
    return encode_trusted(fields)


def error_reply(err: BudgetError) -> bytes:
    return encode({"err": err.code, "msg": str(err)[:512]})


def parse_reply(raw: bytes) -> dict:
    msg = decode(raw, MAX_FRAME, canonical=False)
    if not isinstance(msg, dict):
        raise MalformedInput("a reply is a map")
    if "err" in msg:
        raise ProtocolError(f"peer refused: {msg.get('msg', msg['err'])}")
    return msg
