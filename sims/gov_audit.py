"""Governance re-derived on its own, for the simulator's ledger replay (sims/ledger_audit.py):
proposals, votes, endorsements and grants, from the signed actions of one chain and the rules
the DNA declares — deliberately not node.core.governance, whose arithmetic it restates from
issue 18, so a bug there shows up as a disagreement here.

What it reports, per chain:
- a vote by an agent the DNA does not name as a voter, a second vote by one voter on one
  proposal (on the voter's chain, and in the tally of the proposer's chain);
- a vote taken by a chain that never filed its proposal;
- a grant (a `fund` naming a proposal) of a proposal this chain did not file, before its
  chain tallied an approving quorum, a second grant of one proposal, one that funds another
  entity or pays from another budget, one above requested x (1 + the market weight of the
  endorsements it cites), or one recording another market weight than those give.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from node.core.action import Signed
from node.core.crypto import to_text, verify

# issue 18: allocation_score = 0.35 evidence + 0.25 novelty + 0.20 alignment + 0.20 community
WEIGHTS = {"evidence": 350, "novelty": 250, "alignment": 200, "community": 200}
# market weight = 0.5 x net stake / (total stake + 10 RU), in thousandths
MW_MAX, MW_DAMPING = 500, 10_000


@dataclass(frozen=True)
class GovRules:
    """Who votes and how a proposal resolves, as the DNA declares them (its defaults:
    stewards, quorum 1, threshold 500 thousandths)."""

    stewards: tuple = ()
    voters: Any = "stewards"  # "stewards", "agents" or a collection of agent keys
    quorum: int = 1
    threshold: int = 500

    @classmethod
    def of(cls, dna: Any) -> GovRules:
        g = dna.governance
        return cls(tuple(dna.stewards), g["voters"], g["quorum"], g["threshold_milli"])

    def may_vote(self, agent: Any) -> bool:
        if self.voters == "agents":
            return True
        return agent in (self.stewards if self.voters == "stewards" else tuple(self.voters))


def vote_score(scores: Any) -> int:
    """One vote's allocation score, in thousandths (0 for malformed scores: the validator
    refuses those; this only counts)."""
    if not isinstance(scores, dict):
        return 0
    total = 0
    for k, w in WEIGHTS.items():
        x = scores.get(k)
        total += w * (x if type(x) is int else 0)
    return total // 1000


def weight_of(pro: int, con: int) -> int:
    net = pro - con
    w = MW_MAX * abs(net) // (pro + con + MW_DAMPING)
    return w if net >= 0 else -w


@dataclass
class Proposal:
    entity: Any
    holder: Any
    amounts: dict
    budget: Any
    votes: list = field(default_factory=list)  # (voter, decision, score)
    state: str = "open"  # open, approved, rejected, deferred
    granted: bool = False

    def resolve(self, rules: GovRules) -> None:
        n = len(self.votes)
        approve = sum(1 for _, d, _ in self.votes if d == "approve")
        defer = sum(1 for _, d, _ in self.votes if d == "defer")
        reject = sum(1 for _, d, _ in self.votes if d == "reject")
        mean = sum(s for _, _, s in self.votes) // n
        if 2 * approve > n and mean >= rules.threshold:
            self.state = "approved"
        else:
            self.state = "deferred" if defer > reject else "rejected"


@dataclass
class GovReplay:
    """The governance of one chain, as its actions build it."""

    author: bytes
    rules: GovRules
    problem: Callable[[str], None]
    proposals: dict = field(default_factory=dict)  # propose hash -> Proposal
    voted: set = field(default_factory=set)  # proposals this chain voted on
    endorsed: int = 0  # endorsements this chain took
    grants: int = 0
    cited: list = field(default_factory=list)  # (endorsement hash, its author): grants cite

    def propose(self, h: bytes, v: dict, budgets: dict) -> None:
        bid = v.get("from_budget")
        b = budgets.get(bid)
        if b is None or b.void:
            self.problem(f"a proposal paid from {_pid(bid)}, which is not an open budget here")
        amt = {k: x for k, x in (v.get("amounts") or {}).items() if type(x) is int and x}
        self.proposals[h] = Proposal(_entity(v.get("entity")), v.get("holder"), amt, bid)

    def vote(self, v: dict) -> None:
        pid = v.get("proposal")
        if not self.rules.may_vote(self.author):
            self.problem(f"a vote on {_pid(pid)} by an agent the DNA does not name as a voter")
        if pid in self.voted:
            self.problem(f"a second vote on proposal {_pid(pid)}")
        self.voted.add(pid)

    def tally(self, o: Signed, ov: dict) -> None:
        """The proposer's chain takes vote `o`: counted while its proposal is open."""
        pid = ov.get("proposal")
        p = self.proposals.get(pid)
        if p is None:
            self.problem(f"took a vote on {_pid(pid)}, a proposal this chain never filed")
            return
        if not self.rules.may_vote(o.author):
            self.problem(f"took a vote on {_pid(pid)} by an agent that is not a voter")
            return
        if any(voter == o.author for voter, _, _ in p.votes):
            self.problem(f"took a second vote by one voter on proposal {_pid(pid)}")
            return
        if p.state != "open":
            return  # a late vote changes nothing
        p.votes.append((o.author, ov.get("decision"), vote_score(ov.get("scores"))))
        if len(p.votes) >= self.rules.quorum:
            p.resolve(self.rules)

    def grant(self, v: dict, value: dict) -> None:
        """A fund naming a proposal: checked before its value leaves the parent."""
        pid = v.get("proposal")
        p = self.proposals.get(pid)
        if p is None:
            self.problem(f"a grant of {_pid(pid)}, a proposal this chain never filed")
            return
        if p.granted:
            self.problem(f"a second grant of proposal {_pid(pid)}")
        elif p.state != "approved":
            self.problem(
                f"a grant of proposal {_pid(pid)} before its chain tallied an approving quorum "
                f"({p.state}, {len(p.votes)} of {self.rules.quorum} votes)"
            )
        if _entity(v.get("entity")) != p.entity or v.get("to") != p.holder:
            self.problem(f"a grant of {_pid(pid)} to another entity than the proposal's")
        if v.get("parent") != p.budget:
            self.problem(f"a grant of {_pid(pid)} from another budget than the proposal's")
        weight = self._weight(v.get("endorsements"), p.entity)
        if v.get("market_weight") != weight:
            self.problem(
                f"a grant of {_pid(pid)} records market weight {v.get('market_weight')!r}; "
                f"its endorsements give {weight}"
            )
        limit = {k: x * (1000 + weight) // 1000 for k, x in p.amounts.items()}
        over = {k: x for k, x in value.items() if x > limit.get(k, 0)}
        if over:
            self.problem(
                f"a grant of {_pid(pid)} moves {value}, above requested {p.amounts} "
                f"x (1 + {weight}/1000) = {limit}"
            )
        p.granted = True
        self.grants += 1

    def _weight(self, cited: Any, entity: Any) -> int:
        """The market weight the signed endorsements a grant cites give (each once)."""
        if cited is None:
            cited = []
        if not isinstance(cited, list):
            self.problem("a grant's endorsements are not a list")
            return 0
        pro = con = 0
        seen: set = set()
        for x in cited:
            try:
                o = Signed.from_wire(*x)
                ok = verify(o.author, o.sig, o.body)
            except Exception:  # noqa: BLE001 - a malformed citation is the problem reported
                ok = False
            ov: Any = o.action.get("ledger") if ok else None
            if not isinstance(ov, dict) or ov.get("kind") != "endorse":
                self.problem("a grant cites something that is not a signed endorsement")
                continue
            if _entity(ov.get("entity")) != entity or o.hash in seen:
                self.problem("a grant cites an endorsement of another entity, or one twice")
                continue
            seen.add(o.hash)
            self.cited.append((o.hash, o.author))
            x = ov.get("stake")
            stake = x if isinstance(x, int) and not isinstance(x, bool) else 0
            if ov.get("direction") == 1:
                pro += stake
            else:
                con += stake
        return weight_of(pro, con)

    def state_of(self, pid: bytes) -> str:
        p = self.proposals[pid]
        return "granted" if p.granted else p.state


def _entity(e: Any) -> Any:
    return tuple(e) if isinstance(e, (list, tuple)) else e


def _pid(h: Any) -> str:
    return to_text("action", h)[:16] if isinstance(h, bytes) else repr(h)


def compare_gov(g: GovReplay, led: Any, who: str, problem: Callable[[str], None], counts) -> None:
    """The proposals a chain filed, as node.core.governance (`led.gov`) and this replay see
    them; their numbers added to `counts`."""
    counts["proposals"] += len(g.proposals)
    counts["votes"] += len(g.voted)
    counts["grants"] += g.grants
    counts["endorsements_taken"] += g.endorsed
    for pid in g.proposals:
        counts[f"proposals_{g.state_of(pid)}"] += 1
    gov = getattr(led, "gov", None)
    if gov is None:
        return
    if set(gov.proposals) != set(g.proposals):
        problem(
            f"{who}: the ledger has {len(gov.proposals)} proposals, the replay {len(g.proposals)}"
        )
        return
    for pid, p in gov.proposals.items():
        mine = g.proposals[pid]
        if p.state != g.state_of(pid) or len(p.votes) != len(mine.votes):
            problem(
                f"{who}: proposal {_pid(pid)} is {p.state} with {len(p.votes)} votes in the "
                f"ledger, {g.state_of(pid)} with {len(mine.votes)} in the replay"
            )
