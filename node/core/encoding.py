"""Canonical CBOR for everything hashed, signed or sent; strict, size-limited decoding.

Only plain data crosses this boundary (maps with text keys, arrays, text, bytes,
integers, booleans, null). Floats and tags are refused: money is integer milli-RU
and hashes must not depend on a float's spelling.
"""

from __future__ import annotations

import io
from typing import Any, TypeAlias

import cbor2

from .errors import MalformedInput, TooLarge

# Plain data as the strict decode returns it: None, bool, int, str, bytes, and lists and maps of
# them. Left as Any: the shape of each message is checked where it is parsed, not here.
Plain: TypeAlias = Any
# A map with text keys (an action, an entry, a message): what most of the core passes around.
PlainMap: TypeAlias = dict[str, Any]

MAX_MESSAGE_BYTES = 1 << 20  # one action, entry or message
MAX_DEPTH = 32
MAX_ITEMS = 10_000


def encode(obj: Plain) -> bytes:
    _check(obj, 0, [0])
    return cbor2.dumps(obj, canonical=True)


# what cbor2 raises for bytes that are not one well-formed item (refused as MalformedInput)
_CBOR_ERRORS = (
    cbor2.CBORDecodeError,
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    EOFError,
    MemoryError,
    UnicodeDecodeError,
)


def encode_trusted(obj: Plain) -> bytes:
    """`encode` without the plain-data walk, for maps the node itself builds from values it
    has already validated (its own action headers). Input from anyone else goes through
    `encode`: the walk is what refuses floats, tags, foreign types and oversized input."""
    return cbor2.dumps(obj, canonical=True)


def decode_stored(data: bytes) -> Plain:
    """Bytes this node's own store holds: every one was decoded strictly (or encoded here)
    before it was stored, so the walk and the canonical re-encode, two thirds of a strict
    decode, would only repeat themselves. A store read that does not parse is still refused."""
    try:
        return cbor2.loads(data)
    except _CBOR_ERRORS as e:
        raise MalformedInput(f"invalid CBOR: {e}") from None


def decode(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES, canonical: bool = True) -> Plain:
    """Strict decode: plain data only, bounded in size, depth and items. `canonical=False` is
    for wire frames, which are never hashed or signed whole (what is signed inside one is either
    carried as bytes or re-encoded canonically before its signature is checked), so the
    re-encode that proves canonical form would buy nothing there."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedInput(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds the limit of {max_bytes}")
    if len(data) == 0:
        raise MalformedInput("empty input")
    data = bytes(data)
    buf = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(buf).decode()
    except _CBOR_ERRORS as e:
        raise MalformedInput(f"invalid CBOR: {e}") from None
    if buf.tell() != len(data):
        raise MalformedInput(f"{len(data) - buf.tell()} trailing bytes after CBOR item")
    _check(obj, 0, [0])
    if (
        canonical and cbor2.dumps(obj, canonical=True) != data
    ):  # the walk above already vetted every item
        raise MalformedInput("not canonical CBOR")
    return obj


_SCALARS = frozenset({type(None), bool, str, bytes})
_INT_LIMIT = 1 << 64


def _check(obj: Plain, depth: int, count: list[int]) -> None:
    # Exact type() tests, not isinstance: this walk runs on every message, and the decoder only
    # ever produces these exact types (a subclass from elsewhere is refused as foreign).
    count[0] += 1
    if count[0] > MAX_ITEMS:
        raise TooLarge(f"more than {MAX_ITEMS} items")
    if depth > MAX_DEPTH:
        raise MalformedInput(f"nesting deeper than {MAX_DEPTH}")
    t = type(obj)
    if t in _SCALARS:
        return
    if t is int:
        if not -_INT_LIMIT < obj < _INT_LIMIT:
            raise MalformedInput("integer out of range")
        return
    if t is dict:
        for k in obj:  # (a plain loop: a generator costs more than these few keys)
            if type(k) is not str:
                raise MalformedInput("map keys must be text")
        items = obj.values()
    elif t is list or t is tuple:
        items = obj
    else:
        raise MalformedInput(f"type {t.__name__} is not allowed")
    inline = depth < MAX_DEPTH  # an int child passes the depth check its own call would make
    for item in items:
        ti = type(item)
        if ti in _SCALARS:  # the common leaves, counted without a call
            count[0] += 1
        elif ti is int and inline:  # the checks _check(item, depth + 1, count) would make
            count[0] += 1
            if count[0] > MAX_ITEMS:
                raise TooLarge(f"more than {MAX_ITEMS} items")
            if not -_INT_LIMIT < item < _INT_LIMIT:
                raise MalformedInput("integer out of range")
        else:
            _check(item, depth + 1, count)
    if count[0] > MAX_ITEMS:
        raise TooLarge(f"more than {MAX_ITEMS} items")
