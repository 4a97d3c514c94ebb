"""Signed actions (Holochain's v2 action header is the model) and steward grants.

An action's hash is the BLAKE2b-256 of its canonical bytes; the signature travels
beside it, so the hash names the content alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from .crypto import SigningKey, blake2b_256
from .encoding import PlainMap, decode, decode_stored, encode
from .errors import MalformedInput

MAX_ACTION_BYTES = 16 * 1024
MAX_ENTRY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Signed:
    action: PlainMap
    body: bytes
    sig: bytes
    hash: bytes

    @classmethod
    def sign(cls, action: PlainMap, key: SigningKey) -> Signed:
        body = encode(action)
        return cls(action, body, key.sign(body), blake2b_256(body))

    @classmethod
    def from_wire(cls, body: bytes, sig: bytes) -> Signed:
        action = decode(body, MAX_ACTION_BYTES)
        if not isinstance(action, dict):
            raise MalformedInput("an action is a map")
        if not isinstance(sig, bytes):
            raise MalformedInput("a signature is bytes")
        return cls(action, bytes(body), bytes(sig), blake2b_256(body))

    @classmethod
    def from_store(cls, body: bytes, sig: bytes) -> Signed:
        """An action read back from this node's own store (checked by from_wire on its way
        in); its hash is recomputed, so a caller can compare it with the key it was kept under."""
        action = decode_stored(body)
        if not isinstance(action, dict):
            raise MalformedInput("an action is a map")
        return cls(action, body, sig, blake2b_256(body))

    @property
    def seq(self) -> int:
        seq: int = self.action["seq"]  # the validator checked the header's types
        return seq

    @property
    def author(self) -> bytes:
        author: bytes = self.action["author"]
        return author

    @property
    def ts(self) -> int:
        ts: int = self.action["ts"]
        return ts


def entry_bytes(entry_type: str, content: PlainMap) -> bytes:
    body = encode({"type": entry_type, "content": content})
    if len(body) > MAX_ENTRY_BYTES:
        from .errors import TooLarge

        raise TooLarge(f"entry of {len(body)} bytes exceeds {MAX_ENTRY_BYTES}")
    return body


def grant_body(
    dna_hash: bytes, steward: bytes, grantee: bytes, amount_mru: int, ts_us: int, nonce: bytes
) -> PlainMap:
    return {
        "dna": dna_hash,
        "steward": steward,
        "grantee": grantee,
        "amount": amount_mru,
        "ts": ts_us,
        "nonce": nonce,
    }


def grant_hash(grant: PlainMap) -> bytes:
    return blake2b_256(encode(grant))
