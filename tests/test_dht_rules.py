"""What a node takes from a peer about the DHT: validation receipts (evidence that an authority
checked an action) and signed peer infos (who is on this network, where). Each is refused unless
its signer signed exactly what is claimed, for this network."""

import pytest

from chainkit import ALICE, BOB, DNA, T0, Chain, key
from node.core import dht
from node.core.dna import Dna
from node.core.encoding import encode
from node.core.errors import MalformedInput

VALIDATOR = key(11)
OTHER_DNA = Dna(stewards=(BOB.public,))


# -- receipts


def test_a_receipt_vouches_for_one_action_by_one_validator():
    s = Chain(ALICE).create()
    other = Chain(BOB).create()
    sig = dht.sign_receipt(s.hash, VALIDATOR)
    assert dht.check_receipt(s.hash, VALIDATOR.public, sig)
    assert not dht.check_receipt(other.hash, VALIDATOR.public, sig)  # another action
    assert not dht.check_receipt(s.hash, BOB.public, sig)  # claimed by another
    assert not dht.check_receipt(s.hash, BOB.public, dht.sign_receipt(s.hash, VALIDATOR))
    forged = BOB.sign(dht.receipt_body(s.hash, VALIDATOR.public))  # not its key
    assert not dht.check_receipt(s.hash, VALIDATOR.public, forged)


@pytest.mark.parametrize(
    "action_hash,validator",
    [
        ("a" * 32, VALIDATOR.public),
        (b"h" * 32, VALIDATOR.public.hex()),
        (None, None),
        (bytearray(32), VALIDATOR.public),
    ],
)
def test_a_receipt_naming_something_other_than_bytes_is_refused(action_hash, validator):
    assert not dht.check_receipt(action_hash, validator, b"s" * 64)
    with pytest.raises(MalformedInput):
        dht.receipt_body(action_hash, validator)


# -- peer infos


def info(k=VALIDATOR, dna=DNA, **body):
    i = dht.peer_info(k, dna.hash, ["/memory/1"], [ALICE.public], T0)
    i["body"].update(body)
    return i


def resigned(i, k=VALIDATOR):
    """A peer info whose body was changed by its own signer: only the shape can be wrong."""
    return {"body": i["body"], "sig": k.sign(encode(i["body"]))}


def test_a_signed_peer_info_for_this_network_is_taken():
    body = dht.check_peer_info(info(), DNA.hash)
    assert body == {
        "peer": VALIDATOR.public,
        "dna": DNA.hash,
        "addrs": ["/memory/1"],
        "agents": [ALICE.public],
        "ts": T0,
    }


def test_a_peer_info_is_bounded_when_signed():
    i = dht.peer_info(
        VALIDATOR,
        DNA.hash,
        [f"/memory/{n}" for n in range(100)],
        [key(n % 250 + 1).public for n in range(2000)],
        T0,
    )
    assert len(i["body"]["addrs"]) == 16 and len(i["body"]["agents"]) == 1024
    assert dht.check_peer_info(i, DNA.hash) is not None


def test_a_forged_or_altered_peer_info_is_refused():
    i = info()
    assert dht.check_peer_info({"body": i["body"], "sig": BOB.sign(b"x")}, DNA.hash) is None
    altered = {"body": {**i["body"], "addrs": ["/memory/evil"]}, "sig": i["sig"]}
    assert dht.check_peer_info(altered, DNA.hash) is None
    # claiming to be another peer: that peer's key did not sign it
    assert dht.check_peer_info(resigned(info(peer=BOB.public)), DNA.hash) is None
    # the shape alone passes: the signature is what decides
    assert dht.peer_info_body(altered, DNA.hash) == altered["body"]


def test_a_peer_info_for_another_network_is_refused():
    i = info(dna=OTHER_DNA)
    assert dht.check_peer_info(i, OTHER_DNA.hash) is not None
    assert dht.check_peer_info(i, DNA.hash) is None
    assert dht.peer_info_body(i, DNA.hash) is None


@pytest.mark.parametrize(
    "case",
    [
        "not a map",
        "body not a map",
        "no body",
        "peer as text",
        "peer missing",
        "sig not bytes",
        "addrs not a list",
        "agents not a list",
        "ts as text",
        "ts missing",
        "dna missing",
    ],
)
def test_a_peer_info_of_the_wrong_shape_is_refused(case):
    i = info()
    spoilt = {
        "not a map": lambda: [i["body"], i["sig"]],
        "body not a map": lambda: {"body": [1, 2], "sig": i["sig"]},
        "no body": lambda: {"sig": i["sig"]},
        "peer as text": lambda: resigned(info(peer=VALIDATOR.public.hex())),
        "peer missing": lambda: {
            "body": {k: v for k, v in i["body"].items() if k != "peer"},
            "sig": i["sig"],
        },
        "sig not bytes": lambda: {"body": i["body"], "sig": i["sig"].hex()},
        "addrs not a list": lambda: resigned(info(addrs="/memory/1")),
        "agents not a list": lambda: resigned(info(agents=ALICE.public)),
        "ts as text": lambda: resigned(info(ts=str(T0))),
        "ts missing": lambda: resigned({"body": {k: v for k, v in i["body"].items() if k != "ts"}}),
        "dna missing": lambda: resigned(
            {"body": {k: v for k, v in i["body"].items() if k != "dna"}}
        ),
    }[case]()
    assert dht.peer_info_body(spoilt, DNA.hash) is None
    assert dht.check_peer_info(spoilt, DNA.hash) is None


# -- the ring


def test_a_member_is_its_own_nearest_and_a_small_ring_gives_all_it_has():
    members = [key(n).public for n in range(20, 25)]
    ring = dht.Ring(members)
    for m in members:
        assert ring.nearest(m, 1) == [m] == dht.nearest(m, members, 1)
        assert ring.nearest(m, 3)[0] == m
    # fewer members than R: every member, nearest first; none: nothing
    assert sorted(ring.nearest(b"basis", 9)) == sorted(members)
    assert ring.nearest(b"basis", 9) == dht.nearest(b"basis", members, 9)
    assert dht.Ring([]).nearest(b"basis", 3) == [] == dht.nearest(b"basis", [], 3)
