"""What a warrant must be before anyone believes it. Any peer can sign a warrant with its own key,
so every refusal below is for a warrant whose issuer signature is good: what is refused is the
shape or the proof, never merely a bad signature."""

import copy

import pytest

from node.core.errors import MalformedInput
from node.net import protocol as P

from chainkit import ALICE, BOB, MALLORY, T0, Chain, key
from node.core import warrant as W
from node.core.action import Signed
from node.core.encoding import encode, encode_trusted
from node.core.crypto import from_text, to_text
from node.sdk import LocalCluster

ISSUER = key(7)
PEER = key(9)  # a node operator's key: it signs the batches it publishes
RECIPIENT = key(10)


def signed_wire(body: dict, by=ISSUER) -> dict:
    """`body` as a wire warrant signed by `by` (encode_trusted: some bodies are not plain data)."""
    return {"body": body, "sig": by.sign(encode_trusted(body))}


def two_creates():
    c = Chain(ALICE)
    return c, c.create(), c.create()


def twin(s: Signed, k=ALICE) -> Signed:
    """Another action at the same seq, signed by `k` (the author, unless framed)."""
    return Signed.sign({**s.action, "ts": s.action["ts"] + 1}, k)


def fork(a: Signed, b: Signed) -> W.Warrant:
    return W.make("fork", ALICE.public, "fork", a.seq, [a, b], ISSUER, T0)


# -- from_wire: the shape, and the issuer's signature over it


def test_a_warrant_survives_the_wire_unchanged():
    _, s1, s2 = two_creates()
    w = W.make(
        "invalid", ALICE.public, "over_spend", s2.seq, [s2, s1], ISSUER, T0, entry=b"entry bytes"
    )
    got = W.from_wire(signed_wire(w.body))
    assert got is not None and got.hash == w.hash and got.body == w.body
    assert got.evidence() == [s2, s1] and got.issuer == ISSUER.public
    assert got.to_dict() == {
        "agent_id": to_text("agent", ALICE.public),
        "kind": "invalid",
        "reason": "over_spend",
        "issuer": to_text("agent", ISSUER.public),
        "seq": s2.seq,
    }


def _mutations():
    """(name, how to spoil a well-formed invalid warrant's body) pairs; each is re-signed."""

    def drop(k):
        return lambda b: {x: v for x, v in b.items() if x != k}

    def put(k, v):
        return lambda b: {**b, k: v}

    return [
        ("unknown kind", put("kind", "slander")),
        ("kind missing", drop("kind")),
        ("offender as text", put("offender", ALICE.public.hex())),
        ("reason not text", put("reason", 7)),
        ("seq as text", put("seq", "2")),
        ("evidence not a list", lambda b: {**b, "evidence": {"a": b["evidence"][0]}}),
        ("no evidence", put("evidence", [])),
        ("three pieces of evidence", lambda b: {**b, "evidence": b["evidence"] * 3}),
        ("an evidence item of one element", lambda b: {**b, "evidence": [b["evidence"][0][:1]]}),
        ("an evidence item of three", lambda b: {**b, "evidence": [b["evidence"][0] + [b""]]}),
        ("an evidence item as bytes", lambda b: {**b, "evidence": [b["evidence"][0][0]]}),
        ("evidence that is not CBOR", put("evidence", [[b"\xff\x00", b"s" * 64]])),
        ("entry as text", put("entry", "water is wet")),
        ("entry as a number", put("entry", 5)),
        ("issuer missing", drop("issuer")),
        ("issuer as a number", put("issuer", 5)),
        ("a float in the body", put("ts", 1.5)),
    ]


@pytest.mark.parametrize("name,spoil", _mutations(), ids=[m[0] for m in _mutations()])
def test_a_warrant_of_the_wrong_shape_is_refused_not_raised(name, spoil):
    _, _, s2 = two_creates()
    w = W.make("invalid", ALICE.public, "over_spend", s2.seq, [s2], ISSUER, T0)
    assert W.from_wire(signed_wire(w.body)) is not None  # the unspoilt warrant is fine
    assert W.from_wire(signed_wire(spoil(copy.deepcopy(w.body)))) is None


@pytest.mark.parametrize(
    "wire", [None, "warrant", [1, 2], {"sig": b"s" * 64}, {"body": [1], "sig": b"s" * 64}]
)
def test_a_warrant_that_is_not_a_map_with_a_body_map_is_refused(wire):
    assert W.from_wire(wire) is None


def test_the_issuer_signature_must_cover_the_body_as_sent():
    _, _, s2 = two_creates()
    w = W.make("invalid", ALICE.public, "over_spend", s2.seq, [s2], ISSUER, T0)
    assert W.from_wire({"body": w.body, "sig": w.sig.hex()}) is None  # sig not bytes
    assert W.from_wire({"body": w.body, "sig": BOB.sign(encode(w.body))}) is None  # not the issuer
    assert W.from_wire({"body": {**w.body, "reason": "fork"}, "sig": w.sig}) is None  # altered


def test_evidence_must_be_the_offenders_own_actions_at_the_seq_named():
    c, s1, s2 = two_creates()
    bob = Chain(BOB).create()
    cases = [
        W.make("fork", ALICE.public, "fork", bob.seq, [bob, twin(bob, BOB)], ISSUER, T0),
        W.make("fork", ALICE.public, "fork", s2.seq + 1, [s2, twin(s2)], ISSUER, T0),
        W.make("invalid", ALICE.public, "over_spend", s2.seq, [s2, s2], ISSUER, T0),  # not seq-1
        W.make("invalid", ALICE.public, "over_spend", s1.seq, [s2], ISSUER, T0),
    ]
    assert all(W.from_wire(w.to_wire()) is None for w in cases)
    # the same, told truthfully, are taken
    assert (
        W.from_wire(
            W.make("invalid", ALICE.public, "over_spend", s2.seq, [s2, s1], ISSUER, T0).to_wire()
        )
        is not None
    )
    assert W.from_wire(fork(s2, twin(s2)).to_wire()) is not None


# -- fork warrants prove themselves


def test_two_different_signed_actions_at_one_seq_prove_a_fork():
    _, _, s2 = two_creates()
    assert W.fork_proven(W.from_wire(fork(s2, twin(s2)).to_wire()))


def test_a_fork_warrant_of_one_action_twice_proves_nothing():
    _, _, s2 = two_creates()
    w = W.from_wire(fork(s2, s2).to_wire())
    assert w is not None and not W.fork_proven(w)


def test_a_fork_warrant_needs_two_actions():
    _, _, s2 = two_creates()
    w = W.from_wire(W.make("fork", ALICE.public, "fork", s2.seq, [s2], ISSUER, T0).to_wire())
    assert w is not None and not W.fork_proven(w)


def test_a_twin_the_author_did_not_sign_frames_nobody():
    _, _, s2 = two_creates()
    w = W.from_wire(fork(s2, twin(s2, MALLORY)).to_wire())  # names Alice, signed by Mallory
    assert w is not None and not W.fork_proven(w)


def test_twins_prove_a_fork_only_in_a_fork_warrant():
    _, _, s2 = two_creates()
    w = W.from_wire(
        W.make("peer", ALICE.public, "fork", s2.seq, [s2, twin(s2)], ISSUER, T0).to_wire()
    )
    assert w is not None and not W.fork_proven(w) and not W.peer_proven(w)


# -- bad_prev: the action before, as evidence, that the action does not build on


def _bad_prev(evidence, kind="invalid", reason="bad_prev"):
    return W.make(kind, ALICE.public, reason, evidence[0].seq, evidence, ISSUER, T0)


def test_an_action_not_built_on_its_authors_action_before_proves_itself():
    _, s1, s2 = two_creates()
    assert W.prev_mismatch_proven(_bad_prev([s2, twin(s1)]))


@pytest.mark.parametrize(
    "case", ["builds on it", "other reason", "alone", "fork kind", "before forged", "action forged"]
)
def test_bad_prev_is_not_proven_by(case):
    _, s1, s2 = two_creates()
    w = {
        "builds on it": lambda: _bad_prev([s2, s1]),
        "other reason": lambda: _bad_prev([s2, twin(s1)], reason="over_spend"),
        "alone": lambda: _bad_prev([s2]),
        "fork kind": lambda: _bad_prev([s2, twin(s1)], kind="fork"),
        "before forged": lambda: _bad_prev([s2, twin(s1, MALLORY)]),
        "action forged": lambda: _bad_prev([Signed.sign(s2.action, MALLORY), twin(s1)]),
    }[case]()
    assert not W.prev_mismatch_proven(w)


# -- peer warrants: a peer signed a batch carrying an action whose signature is forged


def forged_action() -> Signed:
    """An action naming Alice as its author, signed by Mallory."""
    _, _, s2 = two_creates()
    return Signed.sign(s2.action, MALLORY)


def peer_warrant(s: Signed, batch: dict | None, offender=PEER, n=1) -> W.Warrant:
    return W.make(
        "peer", offender.public, "bad_signature", s.action["seq"], [s] * n, ISSUER, T0, batch=batch
    )


def batch_of(*actions: Signed, by=PEER) -> dict:
    return W.sign_batch([[a.body, a.sig, None] for a in actions], RECIPIENT.public, T0, by)


def test_a_peer_that_signed_a_batch_with_a_forged_action_is_proven():
    s = forged_action()
    w = W.from_wire(peer_warrant(s, batch_of(s)).to_wire())
    assert w is not None and W.peer_proven(w)


def test_an_action_with_no_key_for_an_author_is_forged_whatever_its_signature():
    s = Signed.sign({"author": "alice", "seq": 1, "ts": T0}, MALLORY)
    assert W.peer_proven(peer_warrant(s, batch_of(s)))


@pytest.mark.parametrize(
    "case",
    [
        "honest action",
        "batch by another peer",
        "action not in the batch",
        "batch altered",
        "no batch",
        "batch signature not bytes",
        "hashes not a list",
        "two actions",
        "fork kind",
    ],
)
def test_a_peer_is_not_proven_guilty_by(case):
    s, honest = forged_action(), two_creates()[2]
    good = batch_of(s)
    w = {
        "honest action": lambda: peer_warrant(honest, batch_of(honest)),
        "batch by another peer": lambda: peer_warrant(s, batch_of(s, by=BOB)),
        "action not in the batch": lambda: peer_warrant(s, batch_of(honest)),
        "batch altered": lambda: peer_warrant(s, {**good, "ts": T0 + 1}),
        "no batch": lambda: peer_warrant(s, None),
        "batch signature not bytes": lambda: peer_warrant(s, {**good, "sig": good["sig"].hex()}),
        "hashes not a list": lambda: peer_warrant(s, {**good, "hashes": good["hashes"][0]}),
        "two actions": lambda: peer_warrant(s, good, n=2),
        "fork kind": lambda: W.make(
            "fork", PEER.public, "bad_signature", s.action["seq"], [s], ISSUER, T0, batch=good
        ),
    }[case]()
    assert not W.peer_proven(w)


def test_a_batch_names_its_recipient_and_time_exactly():
    ops = [[b"body", b"sig", None]]
    b = W.sign_batch(ops, RECIPIENT.public, T0, PEER)
    assert W.batch_ok(b, PEER.public) and not W.batch_ok(b, BOB.public)
    assert not W.batch_ok({**b, "to": BOB.public}, PEER.public)
    for to, ts in (
        (RECIPIENT.public.hex(), T0),
        (RECIPIENT.public, float(T0)),
        (RECIPIENT.public, True),
    ):
        with pytest.raises(MalformedInput):
            W.sign_batch(ops, to, ts, PEER)


def test_only_the_authors_own_doing_is_proof():
    assert not W.proves("future_timestamp")  # not yet, not invalid
    assert not any(W.proves(r) for r in W.MESSENGER_FAULTS)
    assert W.proves("over_spend") and W.proves("bad_prev")


# -- at a node: a malformed warrant any peer can sign is refused, and nothing escapes


async def test_a_node_refuses_malformed_warrants_without_raising(clock, autojump_clock):
    """Before warrant.from_wire checked the evidence pairs and the entry, these escaped from
    _receive_warrant as ValueError / TypeError: the gossip loop catches only BudgetError, so a
    hostile gossip partner's reply could stop a node's gossiper."""
    async with LocalCluster.open(clock=lambda: clock[0], transport="memory", n=2) as c:
        a = await c.nodes[0].new_agent()
        await a.add_knowledge("first")
        await a.add_knowledge("second")
        pub = from_text("agent", a.agent_id)
        s1, s2 = c.nodes[0].store.chain(pub)[-2:]
        hostile = c.nodes[1]
        w = W.make("invalid", pub, "over_spend", s2.seq, [s2, s1], hostile.node_key, T0)
        spoilt = [
            {**w.body, "entry": "water is wet"},  # reached validate_next's hash
            {**w.body, "evidence": [[s2.body]]},
        ]  # unpacked as a pair
        judge = c.nodes[0]
        for body in spoilt:
            # refused at the edge: the typed parse (warrant.from_wire refuses them too, above)
            with pytest.raises(MalformedInput):
                P.WarrantMsg.parse(signed_wire(body, hostile.node_key))
        # and a well-formed one from the same hostile issuer is judged, not believed
        refused = judge.metrics["warrants_refused"]
        assert not await judge.warrant_book.receive(
            P.WarrantMsg.parse(signed_wire(w.body, hostile.node_key)), hostile.id
        )
        assert judge.metrics["warrants_refused"] == refused + 1
        assert pub not in judge.warranted
