"""Text ids (what a user types and logs show) and the keys behind them: an id reads back as the
exact bytes it was made from, or is refused with a clear error; it is never taken for another
kind of id, another spelling, or a shorter value."""

import base64

import pytest

from node.core import crypto
from node.core.crypto import SigningKey, blake2b_256, forget_verified, from_text, to_text, verify
from node.core.errors import InvalidInput

RAW = bytes(range(32))
KINDS = ["agent", "action", "entry", "dna", "grant"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_id_reads_back_as_its_bytes(kind):
    text = to_text(kind, RAW)
    assert "=" not in text and from_text(kind, text) == RAW


def test_every_kind_has_its_own_prefix():
    texts = {kind: to_text(kind, RAW) for kind in KINDS}
    for kind in KINDS:
        for other in KINDS:
            if other != kind:
                with pytest.raises(InvalidInput) as e:
                    from_text(other, texts[kind])  # an agent id is not an action hash
                assert e.value.code == "E_INVALID_INPUT" and f"not a {other} id" in e.value.message


def _body(text):
    return text[2:]


@pytest.mark.parametrize(
    "text",
    [
        None,
        42,
        RAW,
        "",  # not text
        "ag",  # the prefix alone
        "ag" + _body(to_text("agent", RAW))[:-1],  # a character short: not base64 length
        "ag" + _body(to_text("agent", RAW[:31])),  # 31 bytes
        "ag" + _body(to_text("agent", RAW + b"\x00")),  # 33 bytes
        to_text("agent", RAW) + "=",  # padded: another spelling
        to_text("agent", RAW) + "\u00e9",  # not ASCII
        to_text("agent", RAW).upper(),  # another prefix (and bytes)
        "ag" + base64.b64encode(b"\xfb\xff" * 16).decode().rstrip("="),  # "+/", not "-_"
    ],
)
def test_a_malformed_agent_id_is_refused(text):
    with pytest.raises(InvalidInput) as e:
        from_text("agent", text)
    assert "not a agent id" in e.value.message


def test_a_non_canonical_spelling_of_the_same_bytes_is_refused():
    """The last base64 character carries 4 spare bits; setting them decodes to the same 32 bytes
    but is a second name for one key, which would let one agent look like two."""
    text = to_text("agent", RAW)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = text[:-1] + alphabet[alphabet.index(text[-1]) | 1]
    assert twin != text and base64.urlsafe_b64decode(twin[2:] + "=") == RAW
    with pytest.raises(InvalidInput):
        from_text("agent", twin)


# -- signatures


def test_a_32_byte_value_that_is_no_key_verifies_nothing():
    assert not verify(b"\xff" * 32, b"\x00" * 64, b"data")  # not a point on the curve
    assert not verify(b"\x01" * 31, b"\x00" * 64, b"data")  # too short for a key


def test_forgetting_the_cache_keeps_every_answer():
    k = SigningKey(b"\x09" * 32)
    sig = k.sign(b"data")
    assert verify(k.public, sig, b"data")
    assert crypto._verified
    forget_verified()
    assert not crypto._verified
    assert verify(k.public, sig, b"data") and not verify(k.public, sig, b"other")
    assert len(crypto._verified) == 1


def test_the_public_key_cache_is_bounded_against_invented_keys():
    """Anyone can send signatures under keys of their own invention: each costs a cache slot,
    so the cache starts over rather than growing past its bound."""
    sig = b"\x00" * 64
    for i in range(4200):
        assert not verify(blake2b_256(i.to_bytes(4, "big")), sig, b"data")
    assert len(crypto._pub_cache) <= 4097
    k = SigningKey(b"\x08" * 32)
    assert verify(k.public, k.sign(b"after"), b"after")


def test_a_seed_is_32_bytes():
    for seed in (b"", b"\x01" * 31, b"\x01" * 33):
        with pytest.raises(InvalidInput):
            SigningKey(seed)
    assert SigningKey(b"\x01" * 32).public == SigningKey(b"\x01" * 32).public
