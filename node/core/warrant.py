"""Warrants: signed, checkable claims that an agent broke the rules.

A fork warrant proves itself (two actions by one author at one seq). An invalid-action
warrant carries the action; a receiver re-runs the validator on it against its own
view of the author's chain before it believes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .action import Signed
from .crypto import SigningKey, blake2b_256, to_text, verify
from .encoding import Plain, PlainMap, encode, encode_trusted
from .errors import BudgetError, MalformedInput
from .errors import Warranted as Warranted  # re-exported: its old import path

# Reasons that say "not yet", never "invalid": such an action waits, it is not warranted.
# an accept whose offer's chain is not held yet waits (core/ledger.py); it is checked again
RETRYABLE = frozenset({"future_timestamp", "offer_unverified"})
# Reasons that blame whoever handed the action over, not its author: a signature that does not
# verify, entry bytes that do not hash to what the author signed, an entry left out.
MESSENGER_FAULTS = frozenset({"bad_signature", "entry_hash_mismatch", "entry_missing"})
# Refused without a warrant: an uninvited genesis starts no chain, so nothing of its author is
# held, and a warrant per throwaway identity would let a Sybil flood fill the warrant book.
# An accept of an offer its author's chain does not validly hold is refused too: proving it
# takes that other chain, which a warrant's evidence does not carry (the offer's author is
# warranted for it by its own authorities).
REFUSED_ONLY = frozenset({"not_invited", "offer_invalid"})


def proves(reason: str) -> bool:
    """Whether a validation failure with this reason is the author's own doing, worth a
    warrant."""
    return reason not in RETRYABLE and reason not in MESSENGER_FAULTS and reason not in REFUSED_ONLY


@dataclass(frozen=True)
class Warrant:
    body: PlainMap
    sig: bytes
    hash: bytes

    @property
    def offender(self) -> bytes:
        offender: bytes = self.body["offender"]  # from_wire checked the body's types
        return offender

    @property
    def agent_id(self) -> str:
        return to_text("agent", self.offender)

    @property
    def reason(self) -> str:
        reason: str = self.body["reason"]
        return reason

    @property
    def kind(self) -> str:
        kind: str = self.body["kind"]
        return kind

    @property
    def issuer(self) -> bytes:
        issuer: bytes = self.body["issuer"]
        return issuer

    def evidence(self) -> list[Signed]:
        return [Signed.from_wire(b, s) for b, s in self.body["evidence"]]

    def to_wire(self) -> PlainMap:
        return {"body": self.body, "sig": self.sig}

    def to_dict(self) -> dict[str, object]:
        return {
            "agent_id": self.agent_id,
            "kind": self.kind,
            "reason": self.reason,
            "issuer": to_text("agent", self.issuer),
            "seq": self.body["seq"],
        }


KINDS = ("fork", "invalid", "peer")


def make(
    kind: str,
    offender: bytes,
    reason: str,
    seq: int,
    evidence: list[Signed],
    issuer: SigningKey,
    ts_us: int,
    entry: bytes | None = None,
    batch: PlainMap | None = None,
) -> Warrant:
    """`entry` lets a receiver re-validate an invalid create; `batch` is a peer's signed
    publish batch (the proof that the peer itself sent an action with a forged signature)."""
    body = {
        "kind": kind,
        "offender": offender,
        "reason": reason,
        "seq": seq,
        "evidence": [[s.body, s.sig] for s in evidence],
        "issuer": issuer.public,
        "ts": ts_us,
        "entry": entry,
        "batch": batch,
    }
    raw = encode(body)
    return Warrant(body, issuer.sign(raw), blake2b_256(raw))


def from_wire(w: Plain) -> Warrant | None:
    """Check shape and the issuer's signature; the evidence is checked by the caller."""
    if not isinstance(w, dict) or not isinstance(w.get("body"), dict):
        return None
    body, sig = w["body"], w.get("sig")
    try:
        if body["kind"] not in KINDS or not isinstance(sig, bytes):
            return None
        if not isinstance(body["offender"], bytes) or not isinstance(body["reason"], str):
            return None
        if not isinstance(body["seq"], int) or not isinstance(body["evidence"], list):
            return None
        if not 1 <= len(body["evidence"]) <= 2:
            return None
        # each item a [body, sig] pair, the entry bytes or absent: anything else would escape
        # later as a ValueError or TypeError (an unpacking, a hash of text) from a signed warrant
        # any peer can make with its own key
        if not all(isinstance(e, list) and len(e) == 2 for e in body["evidence"]):
            return None
        if body.get("entry") is not None and not isinstance(body["entry"], bytes):
            return None
        raw = encode(body)
        if not verify(body["issuer"], sig, raw):
            return None
        warrant = Warrant(body, sig, blake2b_256(raw))
        ev = warrant.evidence()
    except (KeyError, TypeError, BudgetError):
        return None
    # fork: two actions at the offence's seq; invalid: the action, optionally followed by the
    # action before it (so the step can be re-checked without the author's chain)
    seqs = [body["seq"]] * len(ev)
    if warrant.kind == "invalid" and len(ev) == 2:
        seqs[1] = body["seq"] - 1
    if warrant.kind != "peer" and any(
        s.action.get("author") != warrant.offender or s.action.get("seq") != q
        for s, q in zip(ev, seqs)
    ):
        return None
    return warrant


def batch_digest(ops: Sequence[Sequence[Any]]) -> list[bytes]:
    # each op as the wire carries it: [action body, signature, ...] (what follows is not signed)
    return [blake2b_256(op[0] + op[1]) for op in ops]


def sign_batch(ops: Sequence[Sequence[Any]], to: bytes, ts_us: int, key: SigningKey) -> PlainMap:
    """A publisher signs what it sends, so a forged action it relays is provably its own doing."""
    if type(to) is not bytes or type(ts_us) is not int:
        raise MalformedInput("a batch names its recipient (bytes) and a time (integer us)")
    b = {"hashes": batch_digest(ops), "to": to, "ts": ts_us}  # digests: bytes, so no walk
    return {**b, "sig": key.sign(encode_trusted(b))}


def batch_shape_ok(batch: Plain) -> bool:
    """A batch as sign_batch makes it, its signature not yet checked."""
    return (
        isinstance(batch, dict)
        and isinstance(batch.get("sig"), bytes)
        and isinstance(batch.get("hashes"), list)
    )


def batch_ok(batch: Plain, sender: bytes) -> bool:
    if not batch_shape_ok(batch):
        return False
    b = {k: batch.get(k) for k in ("hashes", "to", "ts")}
    # a batch off the wire is plain data (the strict decode walked it), so encode cannot refuse it
    return verify(sender, batch["sig"], encode(b))


def prev_mismatch_proven(w: Warrant) -> bool:
    """`bad_prev` with the action before as evidence: the author signed an action at seq-1
    that the action at seq does not build on. An honest author signs one action a seq and
    builds on it, so this proves a fork (or a chain built on nothing) without any history, even
    where the receiver holds the other twin at seq-1 in its own copy."""
    ev = w.evidence()
    if w.kind != "invalid" or w.reason != "bad_prev" or len(ev) != 2:
        return False
    s, before = ev  # from_wire checked both are the offender's, at seq and seq-1
    return s.action.get("prev") != before.hash and all(
        verify(w.offender, a.sig, a.body) for a in ev
    )


def peer_proven(w: Warrant) -> bool:
    """The offending peer signed a batch naming an action whose own signature is forged."""
    ev = w.evidence()
    if w.kind != "peer" or len(ev) != 1 or not batch_ok(w.body.get("batch"), w.offender):
        return False
    s = ev[0]
    if blake2b_256(s.body + s.sig) not in w.body["batch"]["hashes"]:
        return False
    author = s.action.get("author")
    return not (isinstance(author, bytes) and verify(author, s.sig, s.body))


def fork_proven(w: Warrant) -> bool:
    ev = w.evidence()
    return (
        w.kind == "fork"
        and len(ev) == 2
        and ev[0].hash != ev[1].hash
        and all(verify(w.offender, s.sig, s.body) for s in ev)
    )
