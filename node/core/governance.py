"""Governance as data (docs/ARCHITECTURE.md, "Governance"): proposals, votes and endorsements
are ledger actions, and every number derived from them (a vote's allocation score, a
proposal's outcome, an entity's market weight, the most a grant may move) is a pure function
here, in integers, so every node computes the same value.

Each rule is checked on one chain plus signed references, as the ledger's are:
- a proposal is filed on its proposer's chain, which holds the budget it would be paid from;
- a vote is a notice on its voter's chain (one per proposal, only by a voter the DNA names),
  offered to the proposer, whose chain tallies it when it accepts it; the accept that reaches
  the quorum resolves the proposal;
- a grant is a `fund` from that budget that names the approved proposal: at most what was
  requested times (1 + market weight), once;
- an endorsement is a stake paid from its author's allowance, offered to the entity's holder,
  whose chain tallies the stakes; a grant cites the endorsements its market weight counts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from .dna import Dna
from .errors import AlreadyVoted, InvalidInput, NoEvidence, NotAuthorized
from .schema import EMPTY, Amounts, Plain, none

ENTITY_TYPES = ("agent", "record")
DECISIONS = ("approve", "reject", "defer")
# the allocation score's weights, in thousandths (they sum to 1000)
SCORE_WEIGHTS = (("evidence", 350), ("novelty", 250), ("alignment", 200), ("community", 200))
MAX_JUSTIFICATION = 2000
MAX_EVIDENCE = 16
MAX_PROPOSALS = 4096  # open or resolved, filed by one chain
MAX_VOTED = 1 << 16  # proposals one chain has voted on
MAX_ENTITIES = 4096  # entities one chain tallies endorsements for
MAX_CITED = 64  # endorsements an entity's market weight counts, and a grant cites
# market weight: 0.5 x net stake / (total stake + damping), so a lone small stake moves little
MARKET_WEIGHT_MAX_MILLI = 500
MARKET_DAMPING_MRU = 10_000
MAX_STAKE_MRU = 10_000


Entity = tuple[str, bytes]
Tally = tuple[int, int, tuple[bytes, ...]]


@dataclass(frozen=True)
class Vote:
    voter: bytes
    decision: str
    scores: tuple[int, int, int, int]  # thousandths, in SCORE_WEIGHTS order
    hash: bytes  # the vote action's

    @property
    def score(self) -> int:
        return sum(w * s for (_, w), s in zip(SCORE_WEIGHTS, self.scores)) // 1000


@dataclass(frozen=True)
class Proposal:
    id: bytes  # the propose action's hash
    entity: Entity
    holder: bytes  # whose chain holds the entity's envelope
    amounts: Amounts  # requested
    from_budget: bytes
    created_at: int  # unix seconds
    state: str = "open"  # open, approved, rejected, deferred, granted
    votes: tuple[Vote, ...] = ()
    granted: Amounts = none()
    grant: bytes | None = None  # the fund action that paid it

    @property
    def score(self) -> int | None:
        """The mean allocation score of its votes, in thousandths (None before any)."""
        return sum(v.score for v in self.votes) // len(self.votes) if self.votes else None


@dataclass(frozen=True)
class Gov:
    proposals: MappingProxyType[bytes, Proposal] = none()
    voted: frozenset[bytes] = frozenset()
    # entity -> what the endorsements this chain took for it count: stake for, stake against
    # (milli-RU), and the endorsements' hashes (the first MAX_CITED: a grant cites them)
    endorsed: MappingProxyType[Entity, Tally] = none()


GOV0 = Gov()


def _put(m: MappingProxyType[Any, Any], k: Any, v: Any) -> MappingProxyType[Any, Any]:
    d = dict(m)
    d[k] = v
    return MappingProxyType(d)


def _key(v: Any, what: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != 32:
        raise InvalidInput(f"{what}: a 32-byte id")
    return v


def entity(v: Any) -> Entity:
    """An entity as a chain records it: [type, 32-byte id]."""
    if not isinstance(v, (list, tuple)) or len(v) != 2 or v[0] not in ENTITY_TYPES:
        raise InvalidInput(f"an entity is [type, id], type one of {ENTITY_TYPES}")
    return (v[0], _key(v[1], "entity id"))


def scores(v: Any) -> tuple[int, int, int, int]:
    """A vote's four scores, in thousandths (0-1000 each)."""
    names = [n for n, _ in SCORE_WEIGHTS]
    if not isinstance(v, dict) or sorted(v) != sorted(names):
        raise InvalidInput(f"scores name exactly {', '.join(names)}")
    out = []
    for n in names:
        x = v[n]
        if type(x) is not int or not 0 <= x <= 1000:
            raise InvalidInput(f"score {n} is in [0, 1] (0-1000 thousandths on a chain)")
        out.append(x)
    return (out[0], out[1], out[2], out[3])


# -- the rules of each action (the ledger calls them with the parts they need)
def propose(
    gov: Gov, v: Plain, h: bytes, ts: int, amt: Amounts, from_budget: bytes, author: bytes
) -> Gov:
    e = entity(v.get("entity"))
    holder = _key(v.get("holder"), "holder")
    if e[0] == "agent" and holder != e[1]:
        raise InvalidInput("an agent's envelope is held by that agent")
    j = v.get("justification")
    if not isinstance(j, str) or not 1 <= len(j) <= MAX_JUSTIFICATION:
        raise InvalidInput(f"a justification is text of 1-{MAX_JUSTIFICATION} characters")
    ev = v.get("evidence")
    if not isinstance(ev, list) or not ev:
        raise NoEvidence("a proposal cites at least one existing record as evidence")
    if len(ev) > MAX_EVIDENCE or not all(isinstance(x, bytes) and len(x) == 32 for x in ev):
        raise InvalidInput(f"evidence is 1-{MAX_EVIDENCE} record hashes")
    if not amt:
        raise InvalidInput("a proposal requests some amount")
    if len(gov.proposals) >= MAX_PROPOSALS:
        raise InvalidInput(f"a chain files at most {MAX_PROPOSALS} proposals")
    p = Proposal(h, e, holder, amt, from_budget, ts // 1_000_000)
    return replace(gov, proposals=_put(gov.proposals, h, p))


def vote(gov: Gov, v: Plain, author: bytes, dna: Dna) -> Gov:
    """A vote on the voter's own chain: only by a voter, once per proposal."""
    if not dna.may_vote(author):
        raise NotAuthorized("only a voter the DNA names may vote (its stewards by default)")
    pid = _key(v.get("proposal"), "proposal")
    if v.get("decision") not in DECISIONS:
        raise InvalidInput(f"a decision is one of {', '.join(DECISIONS)}")
    scores(v.get("scores"))
    _key(v.get("to"), "to")
    if pid in gov.voted:
        raise AlreadyVoted("this agent already voted on that proposal")
    if len(gov.voted) >= MAX_VOTED:
        raise InvalidInput(f"a chain votes at most {MAX_VOTED} times")
    return replace(gov, voted=gov.voted | {pid})


def tally(gov: Gov, v: Plain, voter: bytes, h: bytes, dna: Dna) -> tuple[Gov, Proposal | None]:
    """The proposer's chain takes a vote: counted while the proposal is open (a vote that
    arrives after it resolved is taken, and changes nothing). Returns the proposal if this vote
    resolved it."""
    if not dna.may_vote(voter):
        raise NotAuthorized("only a voter the DNA names may vote")
    # checked as the voter's chain checks it: the embedded vote is the proposer's to choose
    if v.get("decision") not in DECISIONS:
        raise InvalidInput(f"a decision is one of {', '.join(DECISIONS)}")
    p = gov.proposals.get(_key(v.get("proposal"), "proposal"))
    if p is None:
        raise InvalidInput("a vote taken here is on a proposal this chain filed")
    if p.state != "open":
        return gov, None
    if any(x.voter == voter for x in p.votes):
        raise AlreadyVoted("that voter's vote on this proposal was already counted")
    p = replace(p, votes=(*p.votes, Vote(voter, v["decision"], scores(v.get("scores")), h)))
    resolved = None
    if len(p.votes) >= dna.governance["quorum"]:
        p = replace(p, state=outcome(p, dna))
        resolved = p
    return replace(gov, proposals=_put(gov.proposals, p.id, p)), resolved


def outcome(p: Proposal, dna: Dna) -> str:
    """At quorum: approved if the approvals are a majority and the score meets the threshold;
    else deferred if deferrals outnumber rejections; else rejected."""
    n = {d: sum(1 for x in p.votes if x.decision == d) for d in DECISIONS}
    score = p.score or 0
    if 2 * n["approve"] > len(p.votes) and score >= dna.governance["threshold_milli"]:
        return "approved"
    return "deferred" if n["defer"] > n["reject"] else "rejected"


def endorse(v: Plain) -> tuple[Entity, int, int]:
    """An endorsement's (entity, stake in milli-RU, direction)."""
    e = entity(v.get("entity"))
    stake, d = v.get("stake"), v.get("direction")
    if type(stake) is not int or not 1 <= stake <= MAX_STAKE_MRU:
        raise InvalidInput(f"a stake is 0.001 to {MAX_STAKE_MRU // 1000} RU")
    if d not in (1, -1):
        raise InvalidInput("an endorsement's direction is +1 or -1")
    return e, stake, d


def take_endorsement(gov: Gov, v: Plain, h: bytes) -> Gov:
    """The entity's holder takes endorsement `h`: counted among the first MAX_CITED (one a
    grant can cite them all); a later one is taken and changes nothing."""
    e, stake, d = endorse(v)
    pro, con, hs = gov.endorsed.get(e, (0, 0, ()))
    if e not in gov.endorsed and len(gov.endorsed) >= MAX_ENTITIES:
        raise InvalidInput(f"a chain tallies endorsements of at most {MAX_ENTITIES} entities")
    if len(hs) >= MAX_CITED:
        return gov
    pro, con = (pro + stake, con) if d == 1 else (pro, con + stake)
    return replace(gov, endorsed=_put(gov.endorsed, e, (pro, con, (*hs, h))))


def market_weight(pro: int, con: int) -> int:
    """In thousandths, within +-MARKET_WEIGHT_MAX_MILLI: 0 with no stakes."""
    net, total = pro - con, pro + con + MARKET_DAMPING_MRU
    w = MARKET_WEIGHT_MAX_MILLI * abs(net) // total
    return w if net >= 0 else -w


def grant_limit(p: Proposal, weight_milli: int) -> Amounts:
    """The most a grant for `p` may move: requested x (1 + market weight), per resource."""
    return MappingProxyType(
        {k: x * (1000 + weight_milli) // 1000 for k, x in p.amounts.items() if x}
    )


def grant(gov: Gov, pid: bytes, e: Entity, to: bytes, parent: bytes, amt: Amounts) -> Gov:
    """Mark `pid` granted by a fund of `amt` (the caller checked it against `grant_limit`)."""
    p = gov.proposals.get(pid)
    if p is None:
        raise InvalidInput("a grant names a proposal this chain filed")
    if p.state == "granted":
        raise InvalidInput("that proposal was already granted")
    if p.state != "approved":
        raise NotAuthorized(f"a grant needs an approved proposal (it is {p.state})")
    if e != p.entity or to != p.holder or parent != p.from_budget:
        raise InvalidInput("a grant funds the proposal's entity, from its budget")
    p = replace(p, state="granted", granted=amt)
    return replace(gov, proposals=_put(gov.proposals, pid, p))


def record_grant(gov: Gov, pid: bytes, h: bytes) -> Gov:
    p = gov.proposals[pid]
    return replace(gov, proposals=_put(gov.proposals, pid, replace(p, grant=h)))


# -- kept with the chain's checkpoint (core/ledger.py dump/load)
def dump(g: Gov) -> list[Any]:
    return [
        [
            [
                p.id,
                list(p.entity),
                p.holder,
                dict(p.amounts),
                p.from_budget,
                p.created_at,
                p.state,
                [[x.voter, x.decision, list(x.scores), x.hash] for x in p.votes],
                dict(p.granted),
                p.grant,
            ]
            for p in g.proposals.values()
        ],
        sorted(g.voted),
        [[list(e), pro, con, list(hs)] for e, (pro, con, hs) in g.endorsed.items()],
    ]


def load(v: list[Any] | None) -> Gov:
    if not v:
        return GOV0
    P = MappingProxyType
    props = {
        r[0]: Proposal(
            r[0],
            (r[1][0], r[1][1]),
            r[2],
            P(r[3]),
            r[4],
            r[5],
            r[6],
            tuple(Vote(x[0], x[1], (x[2][0], x[2][1], x[2][2], x[2][3]), x[3]) for x in r[7]),
            P(r[8]),
            r[9],
        )
        for r in v[0]
    }
    endorsed = {(r[0][0], r[0][1]): (r[1], r[2], tuple(r[3])) for r in v[2]}
    return Gov(P(props), frozenset(v[1]), P(endorsed))


__all__ = ["EMPTY", "Gov", "GOV0", "Proposal", "Vote"]
