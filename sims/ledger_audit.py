"""The budget ledger re-derived on its own, for the simulator's checks (issue 16).

`replay_ledger` walks one chain's signed actions with its own arithmetic — deliberately not
node.core.ledger — and keeps, per budget, what it received and what left it (moved to other
chains, spent on writes or used up by a settle with no payee, held pending). It reports what
no honest chain may contain: a budget or card spending past what it received (over-spent), a
spend on a void budget, a hold settled or cancelled twice or settled after its timeout, an
offer accepted twice or by someone it was not made to, a return larger than what was funded.
Schema rules (ops, max_per_call, min_reserve, expiry) are left to the validator: this checks
the money.

`check_books` puts the chains of every honest agent together (node.core.ledger's books beside
this replay's) and checks, per resource:

    minted = Σ held by honest budgets (available + pending + spent) + in transit
             + sent to other chains − taken from other chains

where *in transit* is every value-carrying offer (mint, fund, card, settle, a holder's revoke
or a return) between honest chains that its recipient's chain has not accepted, matched by
hash across chains. Chains of rogue or Byzantine nodes are outside the books: what honest
chains sent them counts as gone, what honest chains accepted from them as come in, so a
warranted chain's own spending (its overspend included) never enters honest books; each such
chain may give back at most what it was given. Also: every budget's books balance and nothing
is negative, both derivations agree, every node holding a chain at the same head derives the
same ledger, and the lineage of every paid write reaches a steward's mint. Governance (issue 18:
proposals, votes, endorsements, grants) is replayed beside the money by sims/gov_audit.py; a grant
is a fund, so its value is in transit until the entity's holder accepts it, like any other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from node.core.action import Signed
from node.core.crypto import to_text

from .gov_audit import GovReplay, GovRules, compare_gov

MAX_LINEAGE = 64
MAX_PROBLEMS = 20  # per check: the first ones tell the story
VALUE_KINDS = ("mint", "fund", "card", "settle")  # their `amounts` move; revoke/accept: `returned`
KINDS = {
    k: "_" + k
    for k in "mint fund card hold settle cancel revoke accept propose vote endorse".split()
}


def _add(a: dict, b: Any, sign: int = 1) -> dict:
    out = dict(a)
    if isinstance(b, dict):
        for k, x in b.items():
            if type(x) is int:
                out[k] = out.get(k, 0) + sign * x
    return {k: x for k, x in out.items() if x}


def _neg(a: dict) -> str | None:
    for k, x in a.items():
        if x < 0:
            return k
    return None


def offer_value(v: dict) -> dict:
    """The value a ledger action moves to its recipient (`to`): nothing for a funder's notice."""
    key = "amounts" if v.get("kind") in VALUE_KINDS else "returned"
    return _add({}, v.get(key))


def _id(h: Any) -> str:
    return to_text("budget", h)[:16] if isinstance(h, bytes) else repr(h)


@dataclass
class Books:
    """One budget as the replay keeps it: held = got - out; free = held - spent - pending."""

    kind: str
    funder: bytes | None
    got: dict = field(default_factory=dict)
    out: dict = field(default_factory=dict)
    spent: dict = field(default_factory=dict)
    pending: dict = field(default_factory=dict)
    void: bool = False

    def held(self) -> dict:
        return _add(self.got, self.out, -1)

    def free(self) -> dict:
        return _add(_add(self.held(), self.spent, -1), self.pending, -1)


@dataclass
class Replay:
    author: bytes
    budgets: dict = field(default_factory=dict)  # id -> Books
    children: dict = field(
        default_factory=dict
    )  # fund/card hash -> [holder, parent, amounts, back]
    holds: dict = field(default_factory=dict)  # task -> [budget, amounts, expires_us, state]
    wallet: bytes | None = None
    sent: list = field(default_factory=list)  # (hash, to, value, kind)
    accepted: dict = field(default_factory=dict)  # offer hash -> (sender, value)
    minted: dict = field(default_factory=dict)
    paid: list = field(default_factory=list)  # (write hash, budget id)
    index: dict = field(default_factory=dict)  # hash -> action: own and embedded offers
    problems: list = field(default_factory=list)
    seq: int = 0
    rules: GovRules = field(default_factory=GovRules)
    gov: GovReplay = field(init=False)

    def __post_init__(self) -> None:
        self.gov = GovReplay(self.author, self.rules, self.problem)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            who = to_text("agent", self.author)[:14]
            self.problems.append(f"{who} seq {self.seq}: {text}")

    def _expire(self, ts: int) -> None:
        """A pending hold past its timeout gives its amounts back (expiry resolves it)."""
        for h in self.holds.values():
            if h[3] == "pending" and ts >= h[2]:
                h[3] = "expired"
                b = self.budgets.get(h[0])
                if b is not None:
                    b.pending = _add(b.pending, h[1], -1)

    def _cancel_holds(self, bid: Any) -> None:
        """A budget voided: its pending holds are cancelled, their amounts back in it."""
        b = self.budgets.get(bid)
        for h in self.holds.values():
            if h[0] == bid and h[3] == "pending" and b is not None:
                h[3] = "cancelled"
                b.pending = _add(b.pending, h[1], -1)

    def _debit(
        self, bid: Any, what: str, out: Any = None, spent: Any = None, pend: Any = None
    ) -> Books | None:
        b = self.budgets.get(bid)
        if b is None:
            self.problem(f"{what} from budget {_id(bid)}, which this chain does not hold")
            return None
        if b.void and (spent or pend):
            self.problem(f"{what} on void budget {_id(bid)}")
        b.out = _add(b.out, out or {})
        b.spent = _add(b.spent, spent or {})
        b.pending = _add(b.pending, pend or {})
        k = _neg(b.free())
        if k is not None:
            self.problem(
                f"{what} over-spends {b.kind} {_id(bid)}: {k} short by {-b.free()[k]} "
                f"(received {b.got.get(k, 0)})"
            )
        return b

    def step(self, s: Signed, stewards: tuple, dna: Any = None) -> None:
        a: Any = s.action
        self.seq = a.get("seq", self.seq)
        ts = a.get("ts", 0)
        self.index[s.hash] = a
        self._expire(ts)
        rec = a.get("budget") if isinstance(a.get("budget"), dict) else {}
        if a.get("type") in ("create", "charge") and rec.get("pay") is not None:
            cost = rec.get("cost")
            self.paid.append((s.hash, rec["pay"]))
            spent = {"ru": cost if type(cost) is int else 0}
            if dna is not None and isinstance(rec.get("op"), str):  # what else the DNA prices
                count = a.get("count") if a.get("type") == "charge" else 1
                spent = _add(
                    spent, dna.resource_cost(rec["op"], count if type(count) is int else 1)
                )
            self._debit(rec["pay"], "a paid write", spent=spent)
            return
        v = a.get("ledger")
        if a.get("type") != "ledger" or not isinstance(v, dict):
            return
        kind, to = v.get("kind"), v.get("to")
        value = offer_value(v)
        if to is not None:
            self.sent.append((s.hash, to, value, kind))
        handler = KINDS.get(kind) if isinstance(kind, str) else None
        getattr(self, handler or "_unknown")(s.hash, v, value, ts, stewards)

    def _unknown(self, h, v, value, ts, stewards) -> None:
        self.problem(f"unknown ledger kind {v.get('kind')!r}")

    def _mint(self, h, v, value, ts, stewards) -> None:
        if self.author not in stewards:
            self.problem("a mint by an agent that is not a steward")
        self.minted = _add(self.minted, value)

    def _fund(self, h, v, value, ts, stewards) -> None:
        if v.get("kind") == "fund" and v.get("proposal") is not None:
            self.gov.grant(v, value)
        self._debit(v.get("parent"), f"a {v.get('kind')}", out=value)
        self.children[h] = [v.get("to"), v.get("parent"), value, {}]

    _card = _fund

    def _propose(self, h, v, value, ts, stewards) -> None:
        self.gov.propose(h, v, self.budgets)

    def _vote(self, h, v, value, ts, stewards) -> None:
        self.gov.vote(v)

    def _endorse(self, h, v, value, ts, stewards) -> None:
        pass  # its stake is charged to the allowance (sims/invariants.py audits that)

    def _hold(self, h, v, value, ts, stewards) -> None:
        task = v.get("task_id")
        if task in self.holds:
            self.problem(f"a second hold with task_id {task!r}")
            return
        amt = _add({}, v.get("amounts"))
        self.holds[task] = [v.get("budget"), amt, v.get("expires_us", 0), "pending"]
        self._debit(v.get("budget"), "a hold", pend=amt)

    def _resolve(self, v, ts, how: str):
        h = self.holds.get(v.get("task_id"))
        if h is None:
            self.problem(f"a {how} of unknown hold {v.get('task_id')!r}")
            return None
        done = "settled" if how == "settle" else "cancelled"
        if h[3] != "pending":
            self.problem(f"hold {v.get('task_id')!r} {done} after it was {h[3]}")
            return None
        h[3] = done
        b = self.budgets.get(h[0])
        if b is not None:
            b.pending = _add(b.pending, h[1], -1)
        return h, b

    def _settle(self, h, v, value, ts, stewards) -> None:
        got = self._resolve(v, ts, "settle")
        if got is None:
            return
        hold, b = got
        if _neg(_add(hold[1], value, -1)) is not None:
            self.problem(f"settle of {value} past its hold of {hold[1]}")
        if b is not None and v.get("to") is None:  # used up (metered work): spent here
            b.spent = _add(b.spent, value)
        elif b is not None:  # paid to another agent's wallet
            b.out = _add(b.out, value)

    def _cancel(self, h, v, value, ts, stewards) -> None:
        self._resolve(v, ts, "cancel")

    def _revoke(self, h, v, value, ts, stewards) -> None:
        tid = v.get("target")
        if tid in self.budgets:  # a holder voids its own budget: what is left goes back
            b = self.budgets[tid]
            if b.void:
                self.problem(f"budget {_id(tid)} revoked twice by its holder")
            self._cancel_holds(tid)
            b.void = True
            self._debit(tid, "a return", out=value)
        elif tid in self.children:  # a funder's notice: no value moves
            if value:
                self.problem("a funder's revoke notice carries value")
        else:
            self.problem(f"revoke of {_id(tid)}, neither held nor funded here")

    def _accept(self, h, v, value, ts, stewards) -> None:
        try:
            o = Signed.from_wire(*v["offer"])
        except Exception:  # noqa: BLE001 - a malformed embed is the problem reported
            self.problem("an accept embeds no readable offer")
            return
        ov: Any = o.action.get("ledger") if isinstance(o.action.get("ledger"), dict) else {}
        if ov.get("to") != self.author:
            self.problem(f"accepted offer {_id(o.hash)} made to someone else")
            return
        if o.hash in self.accepted:
            self.problem(f"offer {_id(o.hash)} accepted twice")
            return
        self.index[o.hash] = o.action
        ovalue = offer_value(ov)
        self.accepted[o.hash] = (o.author, ovalue)
        kind = ov.get("kind")
        if kind in ("mint", "fund", "card"):
            if kind == "mint" and o.author not in stewards:
                self.problem("accepted a mint from an agent that is not a steward")
            self.budgets[o.hash] = Books(kind, None if kind == "mint" else o.author, ovalue)
        elif kind == "settle":
            if self.wallet is None:
                self.wallet = h
                self.budgets[h] = Books("wallet", None)
            w = self.budgets[self.wallet]
            w.got = _add(w.got, ovalue)
        elif kind == "revoke" and ov.get("target") not in self.children:
            self._notice(o, ov, value)
        elif kind in ("revoke", "accept"):
            self._return(o, ov, v, ovalue, value)
        elif kind == "vote":
            self.gov.tally(o, ov)
        elif kind == "endorse":
            self.gov.endorsed += 1
        else:
            self.problem(f"accepted a {kind!r}, which is not an offer")

    def _notice(self, o: Signed, ov: dict, value: dict) -> None:
        """A funder's revoke notice: the budget is voided here and what was left goes back."""
        tid = ov.get("target")
        b = self.budgets.get(tid)
        if b is None:  # never taken here, and now never will be: all of it goes back
            if tid in self.accepted:
                self.problem(f"revoke notice for {_id(tid)}, accepted here but not held")
                return
            moved = _add({}, ov.get("amounts"))
            self.accepted[tid] = (o.author, moved)
            if _neg(_add(moved, value, -1)) is not None:
                self.problem(f"returned {value} for an offer of {moved}")
            return
        if b.funder != o.author:
            self.problem(f"revoke notice for {_id(tid)} from someone who did not fund it")
        if b.void:
            if value:
                self.problem(f"budget {_id(tid)} voided twice, returning {value}")
            return
        self._cancel_holds(tid)
        b.void = True
        self._debit(tid, "a return", out=value)

    def _return(self, o: Signed, ov: dict, v: dict, ovalue: dict, value: dict) -> None:
        """What a child's holder gave back: into the parent it came from, never more than it
        got; passed on up (`to`) when that parent is void."""
        tid = ov.get("target")
        if ov.get("kind") == "accept" and tid is None:
            try:
                tid = Signed.from_wire(*ov["offer"]).action["ledger"].get("target")
            except Exception:  # noqa: BLE001
                tid = None
        child = self.children.get(tid)
        if child is None or child[0] != o.author:
            self.problem(f"a return for {_id(tid)} from someone who does not hold it")
            return
        child[3] = _add(child[3], ovalue)
        if _neg(_add(child[2], child[3], -1)) is not None:
            self.problem(f"returns {child[3]} for {_id(tid)} exceed the {child[2]} it got")
        p = self.budgets.get(child[1])
        if p is None:
            self.problem(f"a return into {_id(child[1])}, which this chain does not hold")
            return
        p.out = _add(p.out, ovalue, -1)
        if value:  # passed on up
            if v.get("target") != child[1]:
                self.problem("a return passed on names another budget")
            self._debit(child[1], "a return passed on", out=value)

    def hold_states(self, now_us: int) -> Counter:
        c: Counter = Counter()
        for _, _, exp, state in self.holds.values():
            c["expired" if state == "pending" and now_us >= exp else state] += 1
        return c


def replay_ledger(
    actions: list[Signed], stewards: tuple, rules: GovRules | None = None, dna: Any = None
) -> Replay:
    """The ledger of one chain (list of Signed from genesis), re-derived on its own; `rules`:
    the DNA's governance (None: its defaults, with these stewards voting); `dna` prices paid
    writes in resources beyond RU (its resource_costs; None: RU only)."""
    rules = rules if rules is not None else GovRules(tuple(stewards))
    r = Replay(actions[0].author if actions else b"", rules=rules)
    for s in actions:
        try:
            r.step(s, stewards, dna)
        except Exception as e:  # noqa: BLE001 - a malformed action of a rogue chain
            r.problem(f"unreadable ledger action: {e!r}"[:200])
    return r


def view_problems(led: Any) -> list[str]:
    """What is wrong with one ledger as node.core.ledger keeps it: a budget whose books do not
    balance (funded = available + pending + spent + out), a negative amount, a card that spent
    more than its limit."""
    out = []
    for b in led.budgets.values():
        keys = set(b.funded) | set(b.available) | set(b.pending) | set(b.spent) | set(b.out)
        for k in keys:
            f, a, p, s, o = (
                x.get(k, 0) for x in (b.funded, b.available, b.pending, b.spent, b.out)
            )
            if min(f, a, p, s, o) < 0 or f != a + p + s + o or s > f:
                out.append(
                    f"{b.kind} {_id(b.id)} {k}: funded {f} != available {a} + pending {p} + "
                    f"spent {s} + out {o}, or negative, or spent past funded"
                )
                break
    return out


def lineage_problem(h: bytes, bid: bytes, index: dict, stewards: tuple) -> str | None:
    """Walk from a write paid by `bid` back to a mint: None, or where it breaks."""
    cur = bid
    for _ in range(MAX_LINEAGE):
        a: Any = index.get(cur)
        if a is None:
            return f"{_id(cur)} is on no honest chain"
        v: Any = a.get("ledger") if a.get("type") == "ledger" else None
        kind = v.get("kind") if isinstance(v, dict) else None
        if kind == "mint":
            return None if a.get("author") in stewards else "a mint by a non-steward"
        if kind in ("fund", "card"):
            cur = v.get("parent")
        elif kind == "settle":
            cur = v.get("budget")
        elif kind == "accept":
            try:
                cur = Signed.from_wire(*v["offer"]).hash
            except Exception:  # noqa: BLE001
                return "an accept without a readable offer"
        else:
            return f"{_id(cur)} is a {kind or a.get('type')}, which makes no budget"
    return f"longer than {MAX_LINEAGE} steps"


@dataclass
class Findings:
    """What check_books found: the problems, and the economy's totals (per resource)."""

    problems: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)
    holds: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


def check_books(
    chains: dict, stewards: tuple, now_us: int, rules: GovRules | None = None, dna: Any = None
) -> Findings:
    """`chains`: {agent: (its actions from genesis, its ledger as node.core.ledger derived it)}
    for every honest agent. Conservation across them (see the module's docstring), each
    budget's books, both derivations side by side (proposals too), holds, offers, lineage, and
    that every endorsement a grant cites by an honest author is on that author's chain."""
    out = Findings()
    replays = {
        pub: replay_ledger(actions, stewards, rules, dna) for pub, (actions, _) in chains.items()
    }
    t: dict = {
        k: {} for k in ("minted", "held", "in_transit", "sent_outside", "taken_from_outside")
    }
    outside: dict = {}  # agent outside the honest set -> value it was given minus taken back
    index: dict = {}
    made = {pub: {h for h, *_ in r.sent} for pub, r in replays.items()}
    for pub, r in replays.items():
        for p in r.problems:
            out.problem(f"honest chain: {p}")
        index.update(r.index)
        led = chains[pub][1]
        who = to_text("agent", pub)[:14]
        for p in view_problems(led):
            out.problem(f"{who}: {p}")
        if set(led.budgets) != set(r.budgets):
            out.problem(
                f"{who}: the ledger holds {len(led.budgets)} budgets, the replay {len(r.budgets)}"
            )
        for bid, b in r.budgets.items():
            lb = led.budgets.get(bid)
            if lb is None:
                continue
            held = _add(_add(_add({}, dict(lb.available)), dict(lb.pending)), dict(lb.spent))
            if held != b.held() or _add({}, dict(lb.spent)) != b.spent:
                out.problem(
                    f"{who} {b.kind} {_id(bid)}: the ledger holds {held} (spent "
                    f"{dict(lb.spent)}), the replay {b.held()} (spent {b.spent})"
                )
            t["held"] = _add(t["held"], b.held())
        t["minted"] = _add(t["minted"], r.minted)
        compare_gov(r.gov, led, who, out.problem, out.counts)
        out.holds.update(r.hold_states(now_us))
        out.counts["budgets"] += len(r.budgets)
        out.counts["offers"] += len(r.sent)
        out.counts["paid_writes"] += len(r.paid)
        out.counts["void"] += sum(1 for b in r.budgets.values() if b.void)
        for h, to, value, kind in r.sent:
            out.counts[f"sent_{kind}"] += 1
            if to in replays:
                if h not in replays[to].accepted:
                    t["in_transit"] = _add(t["in_transit"], value)
                    out.counts["offers_in_transit"] += 1
            else:
                t["sent_outside"] = _add(t["sent_outside"], value)
                outside[to] = _add(outside.get(to, {}), value)
        for oh, (sender, value) in r.accepted.items():
            if sender in replays:
                if oh not in made[sender]:
                    out.problem(f"{who} accepted {_id(oh)}, which its sender's chain never made")
            else:
                t["taken_from_outside"] = _add(t["taken_from_outside"], value)
                outside[sender] = _add(outside.get(sender, {}), value, -1)
    balance = _add(
        _add(_add(t["held"], t["in_transit"]), t["sent_outside"]), t["taken_from_outside"], -1
    )
    if balance != t["minted"]:
        out.problem(
            f"conservation: minted {t['minted']} != held {t['held']} + in transit "
            f"{t['in_transit']} + sent outside {t['sent_outside']} - taken from outside "
            f"{t['taken_from_outside']}"
        )
    for agent, net in outside.items():
        if _neg(net) is not None:
            out.problem(
                f"{to_text('agent', agent)[:14]} (not honest) gave honest chains "
                f"{_add({}, net, -1)} more than it was given"
            )
    for r in replays.values():
        for eh, author in r.gov.cited:
            if author in replays and eh not in replays[author].index:
                out.problem(f"a grant cites endorsement {_id(eh)}, which its author never made")
        for h, bid in r.paid:
            why = lineage_problem(h, bid, index, stewards)
            out.counts["lineages"] += 1
            if why is not None:
                out.problem(f"lineage of {to_text('action', h)[:16]} does not reach a mint: {why}")
    out.totals = t
    return out
