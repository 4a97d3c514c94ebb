"""Canonical CBOR: what is hashed and signed round-trips exactly, and anything else is refused
with MalformedInput or TooLarge (never another exception, never a silently different value)."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.action import MAX_ACTION_BYTES, Signed
from node.core.crypto import SigningKey
from node.core.encoding import MAX_DEPTH, MAX_ITEMS, MAX_MESSAGE_BYTES, decode, encode
from node.sdk import BudgetError, InvalidInput, MalformedInput, TooLarge

# -- round trip

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 64) + 1, (1 << 64) - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(plain)
def test_round_trip_is_exact_and_canonical(obj):
    data = encode(obj)
    assert decode(data) == obj
    assert encode(decode(data)) == data  # one spelling per value: the hash is stable


def test_round_trip_of_an_action_shaped_value():
    obj = {
        "type": "create",
        "seq": 7,
        "prev": b"\x01" * 32,
        "ts": 1_700_000_000_000_000,
        "budget": {"op": "add_knowledge", "cost": 33_000, "rem": 67_000},
        "tags": ["a", "b"],
        "ok": True,
        "none": None,
        "neg": -(1 << 63),
    }
    assert decode(encode(obj)) == obj


def test_map_key_order_does_not_change_the_encoding():
    assert encode({"b": 1, "a": 2, "aa": 3}) == encode({"aa": 3, "a": 2, "b": 1})


def test_tuples_encode_as_arrays():
    assert decode(encode((1, 2))) == [1, 2]


# -- refusals


def nested_arrays(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"  # [[[...[0]...]]]


def nested_lists(depth: int):
    obj = 0
    for _ in range(depth):
        obj = [obj]
    return obj


GOOD = encode({"a": [1, 2, 3], "b": "text"})

MALFORMED = {
    "truncated": (GOOD[:-1], "premature end"),
    "truncated_header": (b"\x19\x01", "premature end"),
    "garbage": (b"\xff\xfe\xfd", "invalid CBOR"),
    "lone_break": (b"\xff", "invalid CBOR"),
    "trailing_bytes": (GOOD + b"\x00", "1 trailing bytes"),
    "two_items": (encode(1) + encode(2), "trailing"),
    "int_not_shortest_form": (b"\x18\x01", "not canonical"),
    "map_keys_unsorted": (b"\xa2\x61b\x01\x61a\x02", "not canonical"),
    "duplicate_map_keys": (b"\xa2\x61a\x01\x61a\x02", "not canonical"),
    "indefinite_length_array": (b"\x9f\x01\xff", "not canonical"),
    "float16": (b"\xf9\x3c\x00", "float"),
    "float64": (cbor2.dumps(1.5), "float"),
    "tag_datetime": (b"\xc1\x01", "datetime"),
    "tag_unknown": (b"\xd8\x80\x01", "CBORTag"),
    "tag_bignum": (b"\xc2\x49\x01" + b"\x00" * 8, "integer out of range"),
    "tag_set": (b"\xd9\x01\x02\x81\x01", "set"),
    "tag_shared_ref_cycle": (b"\xd8\x1c\x81\xd8\x1d\x00", "nesting"),
    "undefined": (b"\xf7", "UndefinedType"),
    "simple_value": (b"\xf0", "CBORSimpleValue"),
    "int_map_key": (b"\xa1\x01\x02", "map keys must be text"),
    "bytes_map_key": (b"\xa1\x41x\x02", "map keys must be text"),
    "array_map_key": (b"\xa1\x81\x01\x02", "map keys must be text"),
    "too_deep": (nested_arrays(MAX_DEPTH + 2), f"nesting deeper than {MAX_DEPTH}"),
    "far_too_deep": (nested_arrays(100_000), "nesting"),
    "invalid_utf8": (b"\x62\xff\xfe", "text string"),
    "huge_declared_array": (b"\x9b" + b"\xff" * 8, "premature end"),
    "huge_declared_bytes": (b"\x5b\x00\x00\x00\x00\xff\xff\xff\xff", "premature end"),
    "empty": (b"", "empty input"),
}


@pytest.mark.parametrize("data,why", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_cbor_is_refused_clearly(data, why):
    with pytest.raises(MalformedInput) as e:
        decode(data)
    assert e.value.code == "E_MALFORMED"
    assert isinstance(e.value, InvalidInput) and isinstance(e.value, BudgetError)
    assert why in e.value.message
    assert str(e.value).startswith("E_MALFORMED: ")


def test_the_deepest_allowed_nesting_is_accepted():
    assert decode(nested_arrays(MAX_DEPTH)) is not None
    with pytest.raises(MalformedInput):
        decode(nested_arrays(MAX_DEPTH + 1))


@pytest.mark.parametrize("data", ["a1", 42, None, [1], bytearray(b"")], ids=repr)
def test_non_bytes_or_empty_input_is_refused(data):
    with pytest.raises(MalformedInput) as e:
        decode(data)
    assert e.value.code == "E_MALFORMED"


def test_bytearray_and_memoryview_are_accepted():
    assert decode(bytearray(GOOD)) == decode(memoryview(GOOD)) == decode(GOOD)


def test_too_many_items_is_too_large():
    # An array of MAX_ITEMS zeros: MAX_ITEMS + 1 items with the array (encode would refuse it).
    data = cbor2.dumps([0] * MAX_ITEMS, canonical=True)
    with pytest.raises(TooLarge) as e:
        decode(data)
    assert e.value.code == "E_TOO_LARGE" and f"more than {MAX_ITEMS} items" in e.value.message
    assert decode(encode([0] * (MAX_ITEMS - 1))) == [0] * (MAX_ITEMS - 1)


def test_input_over_max_bytes_is_too_large_before_parsing():
    data = encode("x" * 100)
    assert decode(data, max_bytes=len(data)) == "x" * 100
    with pytest.raises(TooLarge) as e:
        decode(data, max_bytes=len(data) - 1)
    assert e.value.code == "E_TOO_LARGE"
    assert f"{len(data)} bytes exceeds the limit of {len(data) - 1}" in e.value.message
    # The default limit: oversize garbage is refused for its size, without being parsed.
    with pytest.raises(TooLarge):
        decode(b"\xff" * (MAX_MESSAGE_BYTES + 1))


@pytest.mark.parametrize(
    "obj,why",
    [
        (1.5, "float"),
        ({"a": [0.0]}, "float"),
        ({1: "x"}, "map keys must be text"),
        ({b"k": 1}, "map keys must be text"),
        (cbor2.CBORTag(99, 1), "CBORTag"),
        ({1, 2}, "set"),
        (1 << 64, "integer out of range"),
        (-(1 << 64), "integer out of range"),
        (nested_lists(MAX_DEPTH + 1), "nesting"),
    ],
)
def test_encode_refuses_what_decode_would_refuse(obj, why):
    with pytest.raises(MalformedInput) as e:
        encode(obj)
    assert why in e.value.message


def test_encode_refuses_too_many_items():
    with pytest.raises(TooLarge):
        encode(list(range(MAX_ITEMS + 1)))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_are_refused_with_a_budget_error(data):
    try:
        obj = decode(data)
    except (MalformedInput, TooLarge):
        return
    assert encode(obj) == data  # whatever is accepted is the canonical spelling of its value


@settings(max_examples=300, deadline=None)
@given(plain, st.data())
def test_mutated_encodings_never_escape_as_other_exceptions(obj, data):
    raw = bytearray(encode(obj))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            decoded = decode(candidate)
        except (MalformedInput, TooLarge):
            continue
        assert encode(decoded) == candidate


# -- signed actions from the wire

KEY = SigningKey(bytes(range(32)))


def test_signed_from_wire_round_trips():
    s = Signed.sign({"type": "genesis", "author": KEY.public, "seq": 0, "prev": None, "ts": 1}, KEY)
    back = Signed.from_wire(s.body, s.sig)
    assert back == s and back.hash == s.hash and back.seq == 0


@pytest.mark.parametrize(
    "body,sig,why",
    [
        (b"\xff\x00garbage", b"s" * 64, "invalid CBOR"),
        (b"", b"s" * 64, "empty input"),
        (encode([1, 2]), b"s" * 64, "an action is a map"),
        (encode("text"), b"s" * 64, "an action is a map"),
        (encode({"seq": 1}) + b"\x00", b"s" * 64, "trailing"),
        (b"\xa1\x63seq\xf9\x3c\x00", b"s" * 64, "float"),
        (encode({"seq": 1}), "not bytes", "a signature is bytes"),
        (encode({"seq": 1}), None, "a signature is bytes"),
        ("not bytes", b"s" * 64, "expected bytes"),
    ],
)
def test_signed_from_wire_refuses_garbage(body, sig, why):
    with pytest.raises(MalformedInput) as e:
        Signed.from_wire(body, sig)
    assert e.value.code == "E_MALFORMED" and why in e.value.message


def test_signed_from_wire_refuses_an_oversize_action():
    body = encode({"pad": "x" * MAX_ACTION_BYTES})
    with pytest.raises(TooLarge) as e:
        Signed.from_wire(body, b"s" * 64)
    assert e.value.code == "E_TOO_LARGE"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=70))
def test_signed_from_wire_on_random_bytes_raises_only_malformed(body, sig):
    try:
        s = Signed.from_wire(body, sig)
    except (MalformedInput, TooLarge):
        return
    assert isinstance(s.action, dict) and s.body == body


@pytest.mark.parametrize("leaf", [None, b"", "", True])
def test_too_many_plain_leaves_in_one_array_is_too_large(leaf):
    """Leaves of one array are counted without a call per item: a flat array of MAX_ITEMS hashes
    or strings is still refused, by the count after the loop."""
    with pytest.raises(TooLarge):
        encode([leaf] * MAX_ITEMS)
    with pytest.raises(TooLarge):
        decode(cbor2.dumps([leaf] * MAX_ITEMS, canonical=True))
    assert decode(encode([leaf] * (MAX_ITEMS - 1))) == [leaf] * (MAX_ITEMS - 1)
