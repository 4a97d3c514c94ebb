"""The two trust roots below the budget rules: time witnesses and invites (docs/ARCHITECTURE.md,
"Threat model").

An author chooses its own timestamps, so a window opened at an author's word could be opened in
the past. Instead a window opens only with a *witness*: a DNA steward's signature over (network,
agent, the action it follows, the steward's own clock). The new window starts at the witness's
time, which must be at least a window after the last one started, so an agent's windows are as
far apart in real time as the stewards' clocks say, whatever its own clock says.

An invite is a steward's signed, single-use admission ticket (`membrane: invite`). The steward
that issued it witnesses the genesis that uses it and signs each invite into one genesis only,
so every authority can check single use from the genesis alone.

Pure: signing takes the key and the time from the caller.
"""

from __future__ import annotations

import base64
import binascii

from .crypto import KEY_LEN, SIG_LEN, SigningKey, blake2b_256, verify
from .dna import Dna
from .encoding import PlainMap, decode, encode
from .errors import BudgetError, InvalidChain, InvalidInput

MAX_NOTE = 256  # characters of an invite's note
MAX_INVITE_TEXT = 1024
INVITE_PREFIX = "inv_"


def witness_body(
    dna_hash: bytes, agent: bytes, prev: bytes | None, at_us: int, invite: bytes | None
) -> PlainMap:
    return {"dna": dna_hash, "agent": agent, "prev": prev, "at": at_us, "invite": invite}


def sign_witness(
    key: SigningKey,
    dna_hash: bytes,
    agent: bytes,
    prev: bytes | None,
    at_us: int,
    invite: bytes | None = None,
) -> PlainMap:
    """What an action that opens a window carries: `at` is the steward's clock."""
    body = witness_body(dna_hash, agent, prev, at_us, invite)
    return {"by": key.public, "at": at_us, "sig": key.sign(encode(body))}


def check_witness(
    w: object, dna: Dna, agent: bytes, prev: bytes | None, invite: bytes | None, seq: int
) -> tuple[bytes, int]:
    """(steward, time) of a witness an action carries, or InvalidChain."""
    if not isinstance(w, dict) or set(w) != {"by", "at", "sig"}:
        raise InvalidChain("malformed", seq, "a witness is {by, at, sig}")
    by, at, sig = w["by"], w["at"], w["sig"]
    if (
        type(by) is not bytes
        or len(by) != KEY_LEN
        or type(at) is not int
        or at < 0
        or type(sig) is not bytes
        or len(sig) != SIG_LEN
    ):
        raise InvalidChain("malformed", seq, "witness fields")
    if by not in dna.stewards:
        raise InvalidChain("bad_witness", seq, "the witness is not a steward of this network")
    if not verify(by, sig, encode(witness_body(dna.hash, agent, prev, at, invite))):
        raise InvalidChain("bad_witness", seq, "the witness's signature does not verify")
    return by, at


# -- invites


def invite_body(dna_hash: bytes, steward: bytes, nonce: bytes, note: str, at_us: int) -> PlainMap:
    return {"dna": dna_hash, "steward": steward, "nonce": nonce, "note": note, "at": at_us}


def make_invite(key: SigningKey, dna_hash: bytes, nonce: bytes, note: str, at_us: int) -> PlainMap:
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise InvalidInput(f"an invite's note is text of at most {MAX_NOTE} characters")
    body = invite_body(dna_hash, key.public, nonce, note, at_us)
    return {"body": body, "sig": key.sign(encode(body))}


def invite_hash(invite: PlainMap) -> bytes:
    return blake2b_256(encode(invite["body"]))


def invite_text(invite: PlainMap) -> str:
    return INVITE_PREFIX + base64.urlsafe_b64encode(encode(invite)).rstrip(b"=").decode()


def parse_invite(text: object) -> PlainMap:
    """An invite from its text form, its shape checked (not yet its signature)."""
    if not isinstance(text, str) or not text.startswith(INVITE_PREFIX):
        raise InvalidInput(f"not an invite (invites start with {INVITE_PREFIX!r})")
    if len(text) > MAX_INVITE_TEXT:
        raise InvalidInput(f"an invite is at most {MAX_INVITE_TEXT} characters")
    body = text[len(INVITE_PREFIX) :]
    try:
        inv = decode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError, BudgetError):
        raise InvalidInput("the invite text is damaged") from None
    try:
        invite_shape(inv, 0)
    except InvalidChain as e:
        raise InvalidInput(f"the invite text is damaged ({e.detail})") from None
    assert isinstance(inv, dict)  # invite_shape checked it
    return inv


def invite_shape(inv: object, seq: int) -> PlainMap:
    """An invite's body, its shape checked (types and bounds, not its signature), or
    InvalidChain."""
    if not isinstance(inv, dict) or set(inv) != {"body", "sig"}:
        raise InvalidChain("malformed", seq, "an invite is {body, sig}")
    b, sig = inv["body"], inv["sig"]
    if not isinstance(b, dict) or set(b) != {"dna", "steward", "nonce", "note", "at"}:
        raise InvalidChain("malformed", seq, "invite body fields")
    if (
        type(b["dna"]) is not bytes
        or type(b["steward"]) is not bytes
        or len(b["steward"]) != KEY_LEN
        or type(b["nonce"]) is not bytes
        or len(b["nonce"]) > 32
        or type(b["note"]) is not str
        or len(b["note"]) > MAX_NOTE
        or type(b["at"]) is not int
        or type(sig) is not bytes
        or len(sig) != SIG_LEN
    ):
        raise InvalidChain("malformed", seq, "invite body fields")
    return b


def check_invite(inv: object, dna: Dna, seq: int = 0) -> tuple[bytes, bytes]:
    """(issuing steward, invite hash) of an invite signed by a steward of `dna`, or
    InvalidChain."""
    b = invite_shape(inv, seq)
    assert isinstance(inv, dict)
    if b["dna"] != dna.hash:
        raise InvalidChain("wrong_dna", seq, "the invite is for another network")
    if b["steward"] not in dna.stewards:
        raise InvalidChain("not_invited", seq, "the invite is not signed by a steward")
    if not verify(b["steward"], inv["sig"], encode(b)):
        raise InvalidChain("not_invited", seq, "the invite's signature does not verify")
    return b["steward"], invite_hash(inv)
