"""Actions and entries as bytes: what this node reads back from its own store, and the size
bound on an entry, refused before anything is signed."""

import pytest

from chainkit import ALICE, Chain
from node.core.action import MAX_ENTRY_BYTES, Signed, entry_bytes
from node.core.encoding import decode, encode
from node.core.errors import MalformedInput, TooLarge


def test_an_action_read_back_from_the_store_is_the_one_kept():
    s = Chain(ALICE).create()
    back = Signed.from_store(s.body, s.sig)
    assert back == s and (back.seq, back.author, back.ts) == (1, ALICE.public, s.ts)


def test_a_store_row_changed_under_its_key_is_found_out():
    """from_store recomputes the hash: a caller compares it with the key the row was kept
    under, and a body altered in the file no longer matches."""
    s = Chain(ALICE).create()
    altered = encode({**s.action, "ts": s.ts + 1})
    assert Signed.from_store(altered, s.sig).hash != s.hash


@pytest.mark.parametrize("body", [encode([1, 2]), encode("action"), b"\xff\x00", b""])
def test_a_store_row_that_is_not_an_action_map_is_refused(body):
    with pytest.raises(MalformedInput):
        Signed.from_store(body, b"s" * 64)


def test_an_entry_over_the_bound_is_refused_with_its_size():
    small = entry_bytes("knowledge", {"content": "x", "tags": []})
    assert decode(small) == {"type": "knowledge", "content": {"content": "x", "tags": []}}
    overhead = len(small) - 1
    at_bound = entry_bytes(
        "knowledge", {"content": "x" * (MAX_ENTRY_BYTES - overhead - 3), "tags": []}
    )
    assert len(at_bound) <= MAX_ENTRY_BYTES
    with pytest.raises(TooLarge) as e:
        entry_bytes("knowledge", {"content": "x" * MAX_ENTRY_BYTES, "tags": []})
    assert e.value.code == "E_TOO_LARGE" and f"exceeds {MAX_ENTRY_BYTES}" in e.value.message
