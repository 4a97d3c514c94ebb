"""The chain validator: a pure function of (actions, DNA, app) that re-derives every
BudgetState. The author's node runs it on open and before each append; authorities
run the same steps on every op they receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from . import budget, ledger
from .action import Signed, grant_hash
from .app import App, EntryDef
from .budget import BudgetState
from .crypto import blake2b_256, verify
from .dna import Dna
from .encoding import PlainMap, decode, encode
from .errors import BudgetError, InsufficientRU, InvalidChain, InvalidInput
from .ledger import LEDGER0, Ledger
from .witness import check_invite, check_witness

MAX_CHAIN = 10_000_000


@dataclass(frozen=True, slots=True)
class ChainState:
    """What a validator remembers about a chain after its last valid action."""

    author: bytes
    seq: int
    hash: bytes
    ts: int
    budget: BudgetState
    claimed: frozenset[bytes]  # grant hashes already claimed on this chain
    # the budgets this chain holds (core/ledger.py); None where only one step is known (a
    # step anchor), so ledger rules are left to those holding the whole chain
    ledger: Ledger | None = LEDGER0
    window_claims: int = 0  # grants claimed in the current window (dna.max_grants_per_window)


def _get(action: PlainMap, key: str, typ: type, seq: int | None) -> Any:
    v = action.get(key)
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise InvalidChain("malformed", seq, f"field {key!r} missing or of the wrong type")
    return v


def _header(action: PlainMap, seq_hint: int | None) -> tuple[int, bytes, int, str]:
    seq = _get(action, "seq", int, seq_hint)
    author = _get(action, "author", bytes, seq)
    ts = _get(action, "ts", int, seq)
    typ = _get(action, "type", str, seq)
    if len(author) != 32:
        raise InvalidChain("malformed", seq, "author is not a 32-byte key")
    return seq, author, ts, typ


def _check_sig(s: Signed, author: bytes, seq: int) -> None:
    if not verify(author, s.sig, s.body):
        raise InvalidChain("bad_signature", seq)


def validate_genesis(s: Signed, dna: Dna, verify_sig: bool = True) -> ChainState:
    """A genesis: under `membrane: invite` it carries a steward's invite and that steward's
    witness over it (the steward signs each invite into one genesis), unless its author is a
    steward. A witnessed genesis starts its first window at the witness's time."""
    a = s.action
    seq, author, ts, typ = _header(a, 0)
    if typ != "genesis" or seq != 0 or a.get("prev") is not None:
        raise InvalidChain("bad_genesis", seq)
    if a.get("dna") != dna.hash:
        raise InvalidChain("wrong_dna", seq)
    inv, w = a.get("invite"), a.get("witness")
    ih = None
    if inv is not None:
        issuer, ih = check_invite(inv, dna, seq)
        if w is None:
            raise InvalidChain("not_invited", seq, "an invite is used with its issuer's witness")
        if not isinstance(w, dict) or w.get("by") != issuer:
            raise InvalidChain("bad_witness", seq, "the invite's issuer did not witness it")
    elif dna.membrane == "invite" and author not in dna.stewards:
        raise InvalidChain("not_invited", seq, "this network admits invited agents only")
    ws = ts
    if w is not None:
        _, ws = check_witness(w, dna, author, None, ih, seq)
        if ts < ws:
            raise InvalidChain("timestamp_before_window", seq)
    if verify_sig:
        _check_sig(s, author, seq)
    return ChainState(author, 0, s.hash, ts, budget.initial(ws, dna), frozenset())


def validate_next(
    cs: ChainState,
    s: Signed,
    dna: Dna,
    app: App,
    entry: bytes | None = None,
    verify_sig: bool = True,
    now_us: int | None = None,
    ledger_errors: bool = False,
    offers: Callable[[Signed], bool | None] | None = None,
) -> ChainState:
    """`ledger_errors`: a ledger rule's refusal is raised as its BudgetError (the author's
    pre-flight), not as InvalidChain. `offers`: whether an offer an `accept` embeds is valid on
    its author's chain (None: not known yet), for a validator that holds other chains; without
    it that check is left to those that do (the offer's own signature and rules are checked
    here)."""
    a = s.action
    seq, author, ts, typ = _header(a, cs.seq + 1)
    if author != cs.author:
        raise InvalidChain("wrong_author", seq)
    if seq != cs.seq + 1:
        raise InvalidChain("bad_seq", seq, f"expected {cs.seq + 1}")
    if a.get("prev") != cs.hash:
        raise InvalidChain("bad_prev", seq)
    if ts < cs.ts:
        raise InvalidChain("timestamp_backwards", seq)
    if now_us is not None and ts > now_us + dna.max_future_us:
        raise InvalidChain("future_timestamp", seq)
    if verify_sig:
        _check_sig(s, author, seq)

    rec = a.get("budget")
    if not isinstance(rec, dict):
        raise InvalidChain("not_paid", seq, f"{typ} action carries no BudgetState")
    claimed = cs.claimed
    paid = rec.get("pay") is not None
    if typ == "create":
        et = _get(a, "entry_type", str, seq)
        eh = _get(a, "entry", bytes, seq)
        edef = app.entry_def(et)
        if edef is None:
            raise InvalidChain("unknown_entry_type", seq, et)
        op = rec.get("op")
        if op != edef.op:
            raise InvalidChain("not_paid", seq, f"{et} is paid by {edef.op}, not {op!r}")
        if edef.steward_only and author not in dna.stewards:
            # free only because only a steward records its grants; anyone else would write for
            # nothing
            raise InvalidChain("not_paid", seq, f"only a steward may record {et}")
        expected_cost = dna.cost(op)
        if entry is not None:
            _check_entry(entry, eh, et, edef, seq)
    elif typ == "charge":
        op = rec.get("op")
        count = _get(a, "count", int, seq)
        if not isinstance(op, str) or op not in dna.per_result:  # per_result holds only text
            raise InvalidChain("not_paid", seq, f"{op!r} is not a per-result charge")
        if not 1 <= count <= dna.max_results:
            raise InvalidChain("malformed", seq, "charge count out of range")
        expected_cost = dna.cost(op, count)
    elif typ == "claim":
        expected_cost = 0
        if app.claim_op is None or rec.get("op") != app.claim_op:
            raise InvalidChain("not_paid", seq, f"a claim is recorded as {app.claim_op}")
        amount, gh = _check_grant(a, author, dna, seq)
        if gh in claimed:
            raise InvalidChain("grant_claimed_twice", seq)
        claimed = claimed | {gh}
    elif typ == "ledger":
        try:  # an endorsement's stake is paid from the allowance
            expected_cost = ledger.allowance_cost(a.get("ledger"))
        except BudgetError as e:
            raise InvalidChain("malformed", seq, str(e)) from None
        if rec.get("op") != "ledger" or paid:
            raise InvalidChain("not_paid", seq, "a ledger action is recorded as op ledger")
    else:
        raise InvalidChain("unknown_action_type", seq, typ)
    if paid and typ not in ("create", "charge"):
        raise InvalidChain("not_paid", seq, "only writes are paid by a budget")
    extra = dna.resource_cost(str(op)) if typ in ("create", "charge") else {}  # op: text here
    if extra and not paid:  # the allowance holds only RU
        raise InvalidChain("not_paid", seq, f"{op} also costs {extra}: a budget holding it pays")

    start = cs.budget
    w = a.get("witness")
    window_claims = 0 if w is not None else cs.window_claims
    if typ == "claim":
        window_claims += 1
        if not budget.grants_fit(window_claims, dna):
            raise InvalidChain("too_many_grants", seq, f"past {dna.max_grants_per_window}")
    if w is not None:
        _, at = check_witness(w, dna, author, cs.hash, None, seq)
        if not budget.due(cs.budget, at, dna):
            raise InvalidChain("early_window_reset", seq, "witnessed before the window ended")
        if ts < at:
            raise InvalidChain("timestamp_before_window", seq)
        start = budget.open_window(cs.budget, at, dna)
    new_budget = _derive(
        start,
        cs.budget,
        rec,
        expected_cost,
        ts,
        dna,
        seq,
        amount if typ == "claim" else None,
        paid,
    )
    led = cs.ledger
    if led is not None and (paid or typ == "ledger" or led.call is not None):
        try:
            led = _ledger_step(led, a, rec, typ, paid, expected_cost, s.hash, new_budget, dna, app)
            if offers is not None and typ == "ledger":
                _check_cited(ledger.cited(a["ledger"], author), offers, seq)
        except InvalidChain:
            raise
        except BudgetError as e:
            if ledger_errors:
                raise
            raise InvalidChain(ledger.to_reason(e), seq, str(e)) from None
    return ChainState(author, seq, s.hash, ts, new_budget, claimed, led, window_claims)


def _check_cited(cited: list[Signed], offers: Callable[[Signed], bool | None], seq: int) -> None:
    """Each action of another chain this one relies on is valid on its own chain."""
    for o in cited:
        known = offers(o)
        if known is None:
            raise InvalidChain("offer_unverified", seq, "the offer's chain is not held yet")
        if not known:
            raise InvalidChain("offer_invalid", seq, "the offer is not valid on its chain")


def _ledger_step(
    led: Ledger,
    a: PlainMap,
    rec: PlainMap,
    typ: str,
    paid: bool,
    cost: int,
    h: bytes,
    b: BudgetState,
    dna: Dna,
    app: App,
) -> Ledger:
    """The chain's ledger after one action: a ledger action applied, a paid write paid, and
    any other action closing the refine call in progress."""
    author, ts, seq = a["author"], a["ts"], a["seq"]
    if typ == "ledger":
        return ledger.apply(led, a, author, seq, ts, h, b.window_start_us, dna).ledger
    if paid:
        bid, call = rec.get("pay"), rec.get("call")
        if not isinstance(bid, bytes) or type(call) is not int or not 0 < call <= seq:
            raise InvalidInput("a paid write names its budget and call")
        op = rec["op"]
        need = ledger.write_cost(cost, op, a["count"] if typ == "charge" else 1, dna)
        return ledger.pay(led, bid, call, seq, app.op_name(op), need, author, ts)
    return ledger.end_call(led)


def _derive(
    start: BudgetState,
    prev: BudgetState,
    rec: PlainMap,
    cost: int,
    ts: int,
    dna: Dna,
    seq: int,
    grant_mru: int | None,
    paid: bool = False,
) -> BudgetState:
    """The budget after one action, from `start` (the previous window, or the one the action's
    witness opened)."""
    for k in ("cost", "ws", "rem"):
        if not isinstance(rec.get(k), int) or isinstance(rec.get(k), bool):
            raise InvalidChain("malformed", seq, f"BudgetState field {k!r}")
    if rec["cost"] != cost:
        raise InvalidChain("wrong_cost", seq, f"recorded {rec['cost']} mRU, the DNA says {cost}")
    if rec["ws"] != start.window_start_us:
        if start is prev and rec["ws"] > prev.window_start_us:
            # a window opened at the author's word: the backdating attack's mark
            due = budget.due(prev, ts, dna)
            raise InvalidChain("unwitnessed_window" if due else "early_window_reset", seq)
        raise InvalidChain("wrong_window", seq)
    if paid:  # a budget pays (core/ledger.py): the allowance is untouched
        derived = start
    elif grant_mru is None:
        try:
            derived = budget.charge(start, cost, ts, dna)
        except InsufficientRU as e:
            raise InvalidChain("over_spend", seq, str(e)) from None
    else:
        derived, granted = budget.claim(start, grant_mru, dna)
        if rec.get("granted") != granted:
            raise InvalidChain("wrong_remaining", seq, "granted amount does not match the cap")
    if rec["rem"] != derived.remaining_mru:
        raise InvalidChain(
            "wrong_remaining", seq, f"recorded {rec['rem']} mRU, re-derived {derived.remaining_mru}"
        )
    return derived


def _check_grant(a: PlainMap, author: bytes, dna: Dna, seq: int) -> tuple[int, bytes]:
    g = a.get("grant")
    sig = a.get("grant_sig")
    if not isinstance(g, dict) or not isinstance(sig, bytes):
        raise InvalidChain("malformed", seq, "claim without a signed grant")
    steward = g.get("steward")
    amount = g.get("amount")
    if not isinstance(steward, bytes) or not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidChain("malformed", seq, "grant fields")
    if steward not in dna.stewards:
        raise InvalidChain("grant_not_by_steward", seq)
    if not verify(steward, sig, encode(g)):
        raise InvalidChain("grant_not_by_steward", seq, "the steward's signature does not verify")
    if g.get("dna") != dna.hash:
        raise InvalidChain("wrong_dna", seq, "grant made for another network")
    if g.get("grantee") != author:
        raise InvalidChain("grant_wrong_grantee", seq)
    if not 0 < amount <= dna.cap_mru:
        raise InvalidChain("malformed", seq, "grant amount out of range")
    return amount, grant_hash(g)


def _check_entry(body: bytes, eh: bytes, et: str, edef: EntryDef, seq: int) -> None:
    if blake2b_256(body) != eh:
        raise InvalidChain(
            "entry_hash_mismatch", seq, "entry bytes do not hash to the action's entry"
        )
    try:
        e = decode(body)
        if not isinstance(e, dict) or e.get("type") != et:
            raise InvalidChain("entry_mismatch", seq, "entry type differs from the action's")
        edef.validate(e.get("content"))
    except InvalidChain:
        raise
    except BudgetError as err:
        raise InvalidChain("entry_invalid", seq, str(err)) from None


def validate_chain(
    actions: list[Signed],
    dna: Dna,
    app: App,
    entries: dict[bytes, bytes] | None = None,
    now_us: int | None = None,
) -> ChainState:
    """Validate a whole chain from genesis; `entries` (hash -> bytes), when given, must hold
    every created entry. Returns the state after the last action."""
    if not actions:
        raise InvalidChain("empty_chain")
    if len(actions) > MAX_CHAIN:
        raise InvalidChain("chain_too_long")
    return validate_tail(validate_genesis(actions[0], dna), actions[1:], dna, app, entries, now_us)


def validate_tail(
    cs: ChainState,
    actions: list[Signed],
    dna: Dna,
    app: App,
    entries: dict[bytes, bytes] | None = None,
    now_us: int | None = None,
) -> ChainState:
    """`validate_chain` past a state already validated (`cs`): the state after the last of
    `actions` (`cs` itself if there are none)."""
    for s in actions:
        entry = None
        if entries is not None and s.action.get("type") == "create":
            eh = s.action.get("entry")
            if isinstance(eh, bytes):  # any other hash is refused as malformed by validate_next
                entry = entries.get(eh)
                if entry is None:
                    raise InvalidChain("entry_missing", s.action.get("seq"))
        cs = validate_next(cs, s, dna, app, entry, now_us=now_us)
    return cs


def step_anchor(prev: Signed | None, s: Signed, dna: Dna) -> ChainState | None:
    """The chain state right after `prev`, read from the BudgetState `prev` records, if `prev`
    is the author-signed action `s` builds on; else None. Validating `s` from it checks the one
    step, not the history before it."""
    if (
        prev is None
        or prev.hash != s.action.get("prev")
        or prev.seq != s.seq - 1
        or prev.action.get("author") != s.author
        or not verify(s.author, prev.sig, prev.body)
    ):
        return None
    if prev.seq == 0:
        try:
            return validate_genesis(prev, dna, verify_sig=False)
        except InvalidChain:
            return None
    rec, ts = prev.action.get("budget"), prev.action.get("ts")
    if (
        not isinstance(rec, dict)
        or type(ts) is not int
        or not all(type(rec.get(k)) is int for k in ("ws", "rem"))
    ):
        return None
    return ChainState(
        s.author,
        prev.seq,
        prev.hash,
        ts,
        budget.BudgetState(rec["ws"], rec["rem"], 0),
        frozenset(),
        None,
    )
