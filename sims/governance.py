"""The `--governance` workload (issue 18), beside the economy (sims/economy.py), on a network
whose DNA declares a second resource (`llm_tokens.large`) and lets every agent vote, with a
quorum of three: every step through the SDK's agent handles, every choice from the run's seed.

node 0's steward mints pools of RU and tokens to a few proposers; proposers write a record as
evidence and file proposals for agents and records on other nodes (a record once its authorities
can serve it); voters on other nodes approve, reject or defer them with scores; agents endorse
entities with small stakes for or against; the proposer's node grants an approved proposal by
itself (node/governance.py), and the holders of granted envelopes spend them: RU on paid
refines (the economy's own verbs pick envelopes too) and tokens through holds settled to payees
on other nodes or cancelled.

Rogue nodes in the governance modes (sims/rogue.py) cheat as the workload offers: a
`double_vote` agent votes twice on one proposal, a `grant_without_quorum` agent grants its
proposal at once, an `overgrant` agent is given a pool and proposes like an honest one (its
node grants above the limit once voters approve). The checks are the economy's, with
governance replayed (sims/gov_audit.py).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING

import trio

from node.core.crypto import to_text
from node.core.errors import BudgetError

from .config import TOKENS
from .rogue import GOV_CHEATS, grant_now
from .workload import WORDS, seeded_steps

if TYPE_CHECKING:
    from .economy import Economy
    from .workload import SimAgent

KINDS = ("propose", "vote", "endorse", "spend")
WEIGHTS = (3.0, 20.0, 2.0, 3.0)
PROPOSERS = 3  # honest agents given a pool at the start
RECORD_AGE_S = 60.0  # a record younger than this may not be at its authorities yet
MAX_PROPOSALS = 256  # remembered for voting
MAX_RECORDS = 64
DECISIONS = (("approve", 0.6), ("reject", 0.2), ("defer", 0.2))


class GovWorkload:
    def __init__(self, economy: Economy, rng: random.Random):
        self.econ = economy
        self.sim = economy.sim
        self.rng = rng
        self.done: Counter[str] = Counter()
        self.proposals: list[tuple[SimAgent, str]] = []  # (proposer, proposal id)
        self.voted: set[tuple[bytes, str]] = set()
        self.votes: Counter[str] = Counter()  # votes cast, by proposal
        self.records: list[tuple[float, SimAgent, str]] = []  # (written at, author, record id)
        self.tasks = 0
        self.warranted: dict[str, dict[str, int]] = {}  # mode -> warrant reason -> agents

    def _cheaters(self, mode: str) -> list[SimAgent]:
        return [a for a in self.econ._agents(False) if mode in a.slot.rogue]

    def _rogue_gov(self, a: SimAgent) -> bool:
        return any(m in GOV_CHEATS for m in a.slot.rogue)

    # -- the run
    async def run(self, start: float, end: float) -> None:
        per_hour = self.sim.cfg.governance_per_hour

        def begin(kind: str) -> None:
            picked = getattr(self, "_pick_" + kind)()
            if picked is not None:
                actor, step = picked
                n.start_soon(self.econ._guard, kind, actor, step(n))

        async with trio.open_nursery() as n:
            n.start_soon(self._bootstrap)
            await seeded_steps(self.rng, per_hour, start, end, KINDS, WEIGHTS, begin)
            await trio.sleep_until(end)
            n.cancel_scope.cancel()

    async def _bootstrap(self) -> None:
        """Pools for a few honest proposers and every grant-cheating rogue agent."""
        honest = self.econ._agents()
        chosen = self.rng.sample(honest, min(PROPOSERS, len(honest)))
        chosen += self._cheaters("grant_without_quorum") + self._cheaters("overgrant")
        host = next((a for a in honest if a.slot is self.sim.slots[0]), None)
        for a in chosen:
            if host is not None:
                await self.econ._guard("pool", host, self._pool(a))

    async def _pool(self, a: SimAgent) -> None:
        node = self.sim.slots[0].node
        if node is None or node.steward is None:
            return
        amounts = {"ru": self.rng.choice((300, 600)), TOKENS: self.rng.choice((200_000, 500_000))}
        bid = await node.steward.mint_budget(
            amounts, holder=a.agent_id, name="pool", schema={"ops": ["*"], "can_fund": True}
        )
        self.done["pool"] += 1
        await self.econ.arrived(a, bid)

    def _pools(self, a: SimAgent) -> list:
        return [
            b
            for b in self.econ._budgets(a)
            if b.schema.can_fund and b.entity is None and b.available.get(TOKENS, 0) > 0
        ]

    # -- the verbs: _pick_<kind>() -> (who acts, what they do given the nursery) or None
    def _pick_propose(self):
        pool = [(a, b) for a in self.econ._agents(False) for b in self._pools(a)]
        pool = [(a, b) for a, b in pool if not a.rogue or self._rogue_gov(a)]
        if not pool:
            return None
        a, b = self.rng.choice(pool)
        return (a, lambda n: self._propose(a, b))

    async def _propose(self, a: SimAgent, b) -> None:
        h = self.econ._handle(a)
        if h is None:
            return
        rng = self.rng
        w = rng.choice
        payload = {"subject": w(WORDS), "predicate": "supports", "object": w(WORDS)}
        evidence = await h.call("memory", "transmit_understanding", payload)
        now = trio.current_time()
        self.records = (self.records + [(now, a, evidence)])[-MAX_RECORDS:]
        # an honest author's record: a rogue holder would take a rogue grant for it, which
        # honest nodes cannot validate (offer_invalid, no warrant), so the rogue's chain would
        # stop there for them and its own cheat after it never be seen
        old = [
            (t, x, r)
            for t, x, r in self.records
            if now - t >= RECORD_AGE_S and x is not a and not x.rogue
        ]
        if old and rng.random() < 0.4:
            entity = ("record", rng.choice(old)[2])
        else:
            to = self.econ._elsewhere(a, self.econ._agents())
            if to is None:
                return
            entity = ("agent", to.agent_id)
        amounts = {
            "ru": rng.randint(1, max(1, min(60, b.available.get("ru", 0) // 4000))),
            TOKENS: rng.randint(1, max(1, b.available[TOKENS] // 4)),
        }
        pid = await h.propose_allocation(
            *entity, amounts, f"{w(WORDS)} {w(WORDS)}", [evidence], to_text("budget", b.id)
        )
        self.done["propose"] += 1
        self.proposals.append((a, pid))
        if len(self.proposals) > MAX_PROPOSALS:  # the oldest is forgotten, with its votes
            gone = self.proposals.pop(0)[1]
            self.voted = {x for x in self.voted if x[1] != gone}
            self.votes.pop(gone, None)
        if "grant_without_quorum" in a.slot.rogue:
            await grant_now(h, pid)
            self.done["rogue_grant_now"] += 1

    def _pick_vote(self):
        voters = [
            a for a in self.econ._agents(False) if not a.rogue or "double_vote" in a.slot.rogue
        ]
        if not voters or not self.proposals:
            return None
        a = self.rng.choice(voters)
        open_ = [
            (p, pid)
            for p, pid in self.proposals
            if p.slot is not a.slot and (a.pub, pid) not in self.voted
        ]
        if not open_:
            return None
        # the proposals with the fewest votes cast, so most reach their quorum
        least = min(self.votes[pid] for _, pid in open_)
        pid = self.rng.choice([pid for _, pid in open_ if self.votes[pid] == least])
        self.voted.add((a.pub, pid))
        self.votes[pid] += 1
        return (a, lambda n: self._vote(a, pid))

    async def _vote(self, a: SimAgent, pid: str) -> None:
        h = self.econ._handle(a)
        if h is None:
            return
        rng = self.rng
        decision = rng.choices([d for d, _ in DECISIONS], [p for _, p in DECISIONS])[0]
        lo, hi = (0.55, 1.0) if decision == "approve" else (0.0, 0.7)
        names = ("evidence", "novelty", "alignment", "community")
        scores = {k: round(rng.uniform(lo, hi), 3) for k in names}
        try:
            await h.vote(pid, decision, scores)
        except BudgetError:  # e.g. the proposal not found yet: it still needs a vote
            self.votes[pid] -= 1
            raise
        self.done[f"vote_{decision}"] += 1
        if "double_vote" in a.slot.rogue:  # the second, which its own pre-flight would refuse
            await h.vote(pid, "approve", scores)
            self.done["rogue_double_vote"] += 1

    def _pick_endorse(self):
        honest = self.econ._agents()
        if not honest:
            return None
        a = self.rng.choice(honest)
        now = trio.current_time()
        old = [r for t, x, r in self.records if now - t >= RECORD_AGE_S]
        if old and self.rng.random() < 0.4:
            entity = ("record", self.rng.choice(old))
        else:
            to = self.econ._elsewhere(a, honest)
            if to is None:
                return None
            entity = ("agent", to.agent_id)
        stake = self.rng.choice((0.5, 1, 2, 5))
        direction = 1 if self.rng.random() < 0.8 else -1
        return (a, lambda n: self._endorse(a, entity, stake, direction))

    async def _endorse(self, a: SimAgent, entity, stake, direction: int) -> None:
        h = self.econ._handle(a)
        if h is not None:
            await h.endorse(entity[0], entity[1], stake, direction)
            self.done["endorse"] += 1

    def _pick_spend(self):
        found = self.econ._holder(lambda b: b.proposal is not None and b.available.get(TOKENS))
        if found is None:
            return None
        a, b = found
        payee = self.econ._elsewhere(a, self.econ._agents(False))
        if payee is None:
            return None
        return (a, lambda n: self._spend(a, b, payee, n))

    async def _spend(self, a: SimAgent, b, payee: SimAgent, nursery) -> None:
        """Reserve tokens from a granted envelope for an LLM call, then settle what it used to
        a payee on another node, or cancel it (the call failed)."""
        h = self.econ._handle(a)
        if h is None:
            return
        rng = self.rng
        n = rng.randint(1, b.available[TOKENS])
        self.tasks += 1
        task = f"gov-{self.tasks}"
        await h.commit_spend(to_text("budget", b.id), {TOKENS: n}, task_id=task, timeout_s=600)
        self.done["token_hold"] += 1
        nursery.start_soon(self._settle, a, task, n, payee)

    async def _settle(self, a: SimAgent, task: str, n: int, payee: SimAgent) -> None:
        await trio.sleep(self.rng.uniform(5, 300))
        h = self.econ._handle(a)
        if h is None:
            return
        if self.rng.random() < 0.8:
            used = {TOKENS: self.rng.randint(1, n)}
            step = h.settle_spend(task, used, payee=payee.agent_id)
            await self.econ._guard("token_settle", a, self._count("token_settle", step))
        else:
            await self.econ._guard(
                "token_cancel", a, self._count("token_cancel", h.cancel_spend(task))
            )

    async def _count(self, what: str, step) -> None:
        await step
        self.done[what] += 1

    def final_check(self) -> None:
        """After convergence: the reason each live honest node warranted each agent of a
        governance rogue node for, by mode (an agent that never got to cheat is in none)."""
        honest = self.sim.honest_live()
        seen: dict[str, Counter[str]] = {}
        for s in self.sim.slots:
            modes = [m for m in s.rogue if m in GOV_CHEATS]
            if not modes or s.node is None:
                continue
            c = seen.setdefault(modes[0], Counter())
            for pub in s.node.cells:
                ws = [h.running.warranted.get(pub) for h in honest]
                reasons = {w.reason for w in ws if w is not None}
                if ws and None not in ws and len(reasons) == 1:
                    c[reasons.pop()] += 1
                else:
                    c["not warranted everywhere" if any(ws) else "not warranted"] += 1
        self.warranted = {m: dict(sorted(c.items())) for m, c in sorted(seen.items())}

    def report(self) -> dict:
        return {**dict(sorted(self.done.items())), "rogue_warrants": self.warranted}
