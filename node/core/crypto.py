"""Hashes (BLAKE2b-256) and Ed25519 keys, and the readable text forms of ids."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import InvalidInput

HASH_LEN = 32
KEY_LEN = 32
SIG_LEN = 64


def blake2b_256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_LEN).digest()


class SigningKey:
    """An Ed25519 key pair; the 32-byte seed is what the keystore keeps."""

    __slots__ = ("_sk", "public", "seed")

    def __init__(self, seed: bytes):
        if len(seed) != KEY_LEN:
            raise InvalidInput("an Ed25519 seed is 32 bytes")
        self._sk = Ed25519PrivateKey.from_private_bytes(seed)
        self.seed = bytes(seed)
        self.public = self._sk.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls, randbytes: Callable[[int], bytes]) -> SigningKey:
        return cls(randbytes(KEY_LEN))

    def sign(self, data: bytes) -> bytes:
        return self._sk.sign(data)


_pub_cache: dict[bytes, Ed25519PublicKey] = {}


# Signatures already found good, by a hash of (key, signature, data): the same action, peer info
# or warrant reaches a node many times (publish, gossip, forwards, duplicates), and in the
# simulator hundreds of nodes share one process. Only successes are kept, so a forgery costs a
# full verify every time; bounded, and cleared rather than evicted one by one.
_verified: set[bytes] = set()
MAX_VERIFIED = 1 << 16


def forget_verified() -> None:
    """Benchmarks call this to time first sightings, not cache hits."""
    _verified.clear()


def verify(public: bytes, signature: bytes, data: bytes) -> bool:
    if len(public) != KEY_LEN or len(signature) != SIG_LEN:
        return False
    h = hashlib.blake2b(public, digest_size=HASH_LEN)
    h.update(signature)
    h.update(data)
    key = h.digest()
    if key in _verified:
        return True
    pk = _pub_cache.get(public)
    if pk is None:
        # never raises for 32 bytes: a key off the curve is only found out by verify() below
        pk = Ed25519PublicKey.from_public_bytes(public)
        if len(_pub_cache) > 4096:  # bounded: an attacker can invent keys
            _pub_cache.clear()
        _pub_cache[public] = pk
    try:
        pk.verify(signature, data)
    except InvalidSignature:
        return False
    if len(_verified) >= MAX_VERIFIED:
        _verified.clear()
    _verified.add(key)
    return True


# Text forms: a short kind prefix, then unpadded base64url, so an agent id is never
# mistaken for an action hash in logs or on the command line.
_PREFIX = {"agent": "ag", "action": "ac", "entry": "en", "dna": "dn", "grant": "gr", "budget": "bu"}


def to_text(kind: str, raw: bytes) -> str:
    return _PREFIX[kind] + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def from_text(kind: str, text: object) -> bytes:
    prefix = _PREFIX[kind]
    if not isinstance(text, str) or not text.startswith(prefix):
        raise InvalidInput(f"not a {kind} id: {text!r}")
    body = text[len(prefix) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        raise InvalidInput(f"not a {kind} id: {text!r}") from None
    if len(raw) != 32 or to_text(kind, raw) != text:
        raise InvalidInput(f"not a {kind} id: {text!r}")
    return raw
