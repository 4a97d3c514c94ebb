"""The `--economy` workload: budgets as authorizers (issue 16) on the simulator's virtual clock,
every step through the SDK's agent handles, every choice from the run's seed.

node 0's steward mints root budgets to random honest agents; holders fund child budgets and
delegate cards to agents on other nodes, whose chains accept them when the offer arrives (the
recipient waits for that, as a condition on its own chain, bounded); agents refine with lists
of their budgets (some fail over to the next, some are refused), commit holds with timeouts and
settle some (to payees on other nodes), cancel some, let some expire (and are refused a late
settle); funders revoke some children and cards, holders void some budgets. Agents of
`overspend_budget` rogue nodes get cards too and spend past them.

The checks (sims/ledger_audit.py) run on the chains honest nodes hold: each node's view of every
budget every few seconds (partitions included), and after convergence the whole economy.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio

from node.core.crypto import blake2b_256, from_text, to_text
from node.core.errors import BudgetError, HoldExpired
from node.core.ledger import Budget, dump
from node.local_node import AgentClient

from .gov_audit import GovRules
from .governance import GovWorkload
from .rogue import GOV_CHEATS
from .ledger_audit import check_books, replay_ledger, view_problems
from .workload import WORDS, seeded_steps

if TYPE_CHECKING:
    from .sim import Simulation
    from .workload import SimAgent

# what agents refine with: "zome.fn" -> its cost in RU (the DNA's)
INSTRUCTIONS = {
    "memory.transmit_understanding": 3,
    "memory.validate_triple": 2,
    "rose_forest.create_thought_credential": 10,
    "rose_forest.add_knowledge": 33,
}
OPS = (
    ["*"],
    ["memory.*"],
    ["rose_forest.*"],
    ["memory.transmit_understanding", "memory.validate_triple"],
    ["rose_forest.create_thought_credential"],
)
KINDS = ("mint", "fund", "card", "refine", "hold", "revoke")
WEIGHTS = (1.0, 2.0, 3.0, 6.0, 4.0, 1.5)
ARRIVAL_TIMEOUT_S = 1200.0  # longer than any partition a mixed seed draws
VIEW_CHECK_EVERY_S = 5.0
MAX_ISSUED = 256  # children and cards remembered for revoking
MAX_WAITERS = 1024


def _permits(ops, op: str) -> bool:
    return "*" in ops or op in ops or op.split(".")[0] + ".*" in ops


class Economy:
    def __init__(self, sim: Simulation, rng: random.Random):
        self.sim = sim
        self.rng = rng
        self.done: Counter[str] = Counter()  # SDK calls that did what they were asked
        self.refused: Counter[str] = Counter()  # "verb:code" of refusals (expected ones too)
        self.issued: list[tuple[SimAgent, str]] = []  # (funder, child or card id)
        self.tasks = 0
        self._waiters: dict[tuple[bytes, bytes], trio.Event] = {}
        self._next_view_check = 0.0
        self._views_seen: dict[tuple[int, bytes], Any] = {}  # (node, holder) -> ledger checked
        self.violations: list[str] = []  # ledger violations seen during the run and after
        self.final: dict = {}
        # governance (issue 18), from a stream of its own: off, an economy run is as before
        self.gov = (
            GovWorkload(self, random.Random(f"{sim.cfg.seed}:governance"))
            if sim.cfg.governance
            else None
        )

    def _rules(self) -> tuple[tuple, GovRules | None]:
        """(the stewards, the governance rules) the DNA declares."""
        dna = self.sim.dna
        return (dna.stewards, GovRules.of(dna)) if dna is not None else ((), None)

    # -- who
    def _agents(self, honest: bool = True) -> list[SimAgent]:
        return [
            a
            for a in self.sim.workload.agents
            if a.slot.node is not None
            and a.pub in a.slot.node.cells
            and (not honest or not a.rogue)
        ]

    def _overspenders(self) -> list[SimAgent]:
        return [a for a in self._agents(False) if "overspend_budget" in a.slot.rogue]

    def _handle(self, a: SimAgent) -> AgentClient | None:
        node = a.slot.node
        cell = node.cells.get(a.pub) if node is not None else None
        return None if cell is None else AgentClient(node, cell)

    def _elsewhere(self, a: SimAgent, pool: list[SimAgent]) -> SimAgent | None:
        """Someone on another node (or, on a one-node network, anyone else)."""
        others = [b for b in pool if b.slot is not a.slot] or [b for b in pool if b is not a]
        return self.rng.choice(others) if others else None

    # -- offers arriving: a condition on the recipient's chain
    def committed(self, s) -> None:
        """Every commit of every node (Simulation._committed): an accept wakes whoever waits
        for the offer it takes."""
        v = s.action.get("ledger")
        if s.action.get("type") != "ledger" or v.get("kind") != "accept":
            return
        ev = self._waiters.pop((s.author, blake2b_256(v["offer"][0])), None)
        if ev is not None:
            ev.set()

    async def arrived(self, a: SimAgent, budget_id: str) -> bool:
        """Wait until `a`'s chain has accepted budget `budget_id` (bounded); False if not."""
        bid = from_text("budget", budget_id)
        key = (a.pub, bid)
        with trio.move_on_after(ARRIVAL_TIMEOUT_S):
            while True:
                node = a.slot.node
                cell = node.cells.get(a.pub) if node is not None else None
                if cell is not None and bid in cell.ledger.budgets:
                    self.done["arrived"] += 1
                    return True
                if key not in self._waiters and len(self._waiters) >= MAX_WAITERS:
                    break
                await self._waiters.setdefault(key, trio.Event()).wait()
        self._waiters.pop(key, None)
        self.done["arrival_timed_out"] += 1
        return False

    # -- the run
    async def run(self, start: float, end: float) -> None:
        per_hour = self.sim.cfg.economy_per_hour
        async with trio.open_nursery() as n:
            n.start_soon(self._bootstrap, n)
            if self.gov is not None:
                n.start_soon(self.gov.run, start, end)
            await seeded_steps(
                self.rng,
                per_hour,
                start,
                end,
                KINDS,
                WEIGHTS,
                lambda k: n.start_soon(self._act, k, n),
            )
            await trio.sleep_until(end)
            n.cancel_scope.cancel()  # holds and waits still in flight are abandoned

    async def _bootstrap(self, nursery) -> None:
        """Roots for a few agents, then (each root arrived, or given up on) a card from one of
        them for each overspending rogue agent."""
        for _ in range(min(3, len(self._agents()))):
            picked = self._pick_mint()
            if picked is not None:
                await self._guard("mint", picked[0], picked[1](nursery, True))
        roots = [a for a in self._agents() if self._budgets(a)]
        for r in self._overspenders():
            if roots:
                a = self.rng.choice(roots)
                await self._guard("card", a, self._transfer("card", a, r, nursery))

    async def _act(self, kind: str, nursery) -> None:
        """Pick who acts (from the run's seed), then let them act through the SDK."""
        picked = getattr(self, "_pick_" + kind)()
        if picked is not None:
            actor, step = picked
            await self._guard(kind, actor, step(nursery))

    async def _guard(self, verb: str, actor: SimAgent, step) -> None:
        """Run one step; count its refusals. An honest actor refused as warranted, or any other
        exception while the actor's node is up, is a violation."""
        node = actor.slot.node
        try:
            await step
        except BudgetError as e:
            self.refused[f"{verb}:{e.code}"] += 1
            if e.code == "E_WARRANTED" and not actor.rogue:
                self.sim.violation(f"economy {verb}: honest {actor.agent_id[:14]} is warranted")
        except Exception as e:  # noqa: BLE001 - a store closed under a crashing node, etc.
            self.refused[f"{verb}:{type(e).__name__}"] += 1
            if actor.slot.node is node and not getattr(node, "_sim_closing", False):
                self.sim.violation(f"economy {verb} by {actor.agent_id[:14]}: unexpected {e!r}")

    def _budgets(self, a: SimAgent, usable: bool = True) -> list:
        """The budgets `a`'s chain holds (a peek at its state, to pick an actor)."""
        node = a.slot.node
        cell = node.cells.get(a.pub) if node is not None else None
        if cell is None:
            return []
        return [b for b in cell.ledger.budgets.values() if not (usable and b.void)]

    def _holder(self, pred) -> tuple[SimAgent, Budget] | None:
        cands = [(a, b) for a in self._agents() for b in self._budgets(a) if pred(b)]
        return self.rng.choice(cands) if cands else None

    # -- the verbs: _pick_<kind>() -> (who acts, what they do given the nursery) or None
    def _pick_mint(self):
        """node 0's steward mints (an agent of node 0 stands for it in _guard, which watches
        that node)."""
        slot0 = self.sim.slots[0]
        pool = self._agents()
        steward = slot0.node.steward if slot0.node is not None else None
        host = next((a for a in pool if a.slot is slot0), None)
        if steward is None or host is None:
            return None
        holder = self.rng.choice(pool)
        ru = self.rng.choice((200, 500, 1000))
        return (host, lambda n, wait=False: self._mint(steward, holder, ru, wait))

    async def _mint(self, steward, holder: SimAgent, ru: int, wait: bool) -> None:
        schema = {"ops": ["*"], "can_fund": True, "can_delegate": True}
        bid = await steward.mint_budget(
            {"ru": ru}, holder=holder.agent_id, name="root", schema=schema
        )
        self.done["mint"] += 1
        if wait:
            await self.arrived(holder, bid)

    def _pick_fund(self):
        return self._pick_transfer("fund", lambda b: b.schema.can_fund, self._agents())

    def _pick_card(self):
        # rogue agents get cards too (an overspender spends past them); a governance rogue
        # cheats on governance alone (sims/governance.py)
        to = [a for a in self._agents(False) if not set(a.slot.rogue) & set(GOV_CHEATS)]
        return self._pick_transfer("card", lambda b: b.schema.can_delegate, to)

    def _pick_transfer(self, kind: str, may, recipients):
        found = self._holder(lambda b: may(b) and b.available.get("ru", 0) >= 1000)
        if found is None:
            return None
        a, parent = found
        to = self._elsewhere(a, recipients)
        if to is None:
            return None
        return (a, lambda n: self._transfer(kind, a, to, n, parent))

    async def _transfer(self, kind, a: SimAgent, to: SimAgent, nursery, parent=None) -> None:
        """`a` funds a child budget or delegates a card to `to`, who uses it once it arrives."""
        rng = self.rng
        if parent is None:
            parent = next((b for b in self._budgets(a) if b.schema.can_delegate), None)
        h = self._handle(a)
        if parent is None or h is None:
            return
        ps = parent.schema
        schema: dict = {"ops": list(rng.choice(OPS))}
        if kind == "fund":
            schema["can_fund"] = ps.can_fund and rng.random() < 0.3
            schema["can_delegate"] = ps.can_delegate and rng.random() < 0.5
            if rng.random() < 0.3:
                schema["max_per_call"] = {"ru": rng.choice((5, 12, 40))}
            if rng.random() < 0.3:
                schema["min_reserve"] = {"ru": rng.choice((2, 5, 10))}
        exp = None
        if ps.expires_at is not None or rng.random() < 0.2:
            exp = int(a.slot.clock()) + rng.randint(300, 1800)
            exp = exp if ps.expires_at is None else min(exp, ps.expires_at)
        pid = to_text("budget", parent.id)
        if kind == "fund":
            ru = rng.randint(1, max(1, min(parent.available.get("ru", 0) // 1000, 150)))
            if exp is not None:
                schema["expires_at"] = exp
            child = await h.fund_budget(pid, {"ru": ru}, holder=to.agent_id, schema=schema)
        else:
            ru = rng.choice((5, 10, 20, 40))
            child = await h.delegate_budget(
                pid, holder=to.agent_id, max_spend={"ru": ru}, schema=schema, expires_at=exp
            )
        self.done[kind] += 1
        self.issued = (self.issued + [(a, child)])[-MAX_ISSUED:]
        nursery.start_soon(self._use, to, child)

    async def _use(self, a: SimAgent, budget_id: str) -> None:
        if await self.arrived(a, budget_id):
            await self._guard("refine", a, self._refine_with(a, [budget_id]))

    def _pick_refine(self):
        spenders = self._overspenders()
        pool = [
            a
            for a in self._agents(False)
            if (not a.rogue or a in spenders) and self._budgets(a, usable=False)
        ]
        if not pool:
            return None
        a = self.rng.choice(pool)
        mine = [to_text("budget", b.id) for b in self._budgets(a, usable=False)]
        self.rng.shuffle(mine)
        mine = mine[: self.rng.randint(1, 3)]
        return (a, lambda n: self._refine_with(a, mine))

    async def _refine_with(self, a: SimAgent, budgets: list[str]) -> None:
        """Refine with `budgets` in order: instructions the first allows (or, one time in four,
        any), so some calls fail over to a later budget; a rogue asks, in one call, for more
        than its card has left."""
        h = self._handle(a)
        if h is None:
            return
        rng = self.rng
        first = from_text("budget", budgets[0])
        b = next((x for x in self._budgets(a, usable=False) if x.id == first), None)
        ops = list(b.schema.ops) if b is not None and (a.rogue or rng.random() < 0.75) else ["*"]
        op = rng.choice([op for op in INSTRUCTIONS if _permits(ops, op)] or list(INSTRUCTIONS))
        count = rng.randint(1, 3)
        if a.rogue and b is not None:
            count = min(16, b.available.get("ru", 0) // (INSTRUCTIONS[op] * 1000) + 1)
        r = await h.refine(
            instructions=[self._instruction(op) for _ in range(count)], budgets=budgets
        )
        self.done["rogue_refine" if a.rogue else "refine_paid"] += 1
        if r.authorized_by != budgets[0]:
            self.done["refine_failover"] += 1

    def _instruction(self, op: str) -> dict:
        w = self.rng.choice
        zome, fn = op.split(".")
        payload: dict[str, Any]
        if fn in ("transmit_understanding", "validate_triple"):
            payload = {"subject": w(WORDS), "predicate": "feeds", "object": w(WORDS)}
        elif fn == "add_knowledge":
            payload = {"content": f"{w(WORDS)} {self.rng.getrandbits(32)}", "tags": [w(WORDS)]}
        else:
            payload = {"title": w(WORDS), "body": w(WORDS) * 3}
        return {"zome": zome, "fn": fn, "payload": payload}

    def _pick_hold(self):
        found = self._holder(lambda b: b.available.get("ru", 0) >= 1000)
        if found is None:
            return None
        a, b = found
        payee = self._elsewhere(a, self._agents(False))
        if payee is None:
            return None
        return (a, lambda n: self._hold(a, b, payee, n))

    async def _hold(self, a: SimAgent, b, payee: SimAgent, nursery) -> None:
        """Commit a hold, then (as the agent's work takes its time) settle part of it to
        someone on another node, cancel it, or let it expire and be refused a late settle."""
        h = self._handle(a)
        if h is None:
            return
        rng = self.rng
        bid = to_text("budget", b.id)
        avail = b.available.get("ru", 0) // 1000
        ru = rng.randint(1, max(1, avail)) if rng.random() < 0.9 else avail + 5
        self.tasks += 1
        task = f"econ-{self.tasks}"
        timeout = rng.uniform(60, 600)
        plan = rng.random()
        hold = await h.commit_spend(bid, {"ru": ru}, task_id=task, timeout_s=timeout)
        self.done["hold"] += 1
        if rng.random() < 0.2:  # a retry with the same parameters is the same hold
            again = await h.commit_spend(bid, {"ru": ru}, task_id=task, timeout_s=timeout)
            self.done["hold_retry"] += 1
            if again.id != hold.id:
                self.ledger_violation(f"a retried commit_spend {task} made another hold")
        nursery.start_soon(self._resolve, a, task, ru, timeout, plan, payee)

    async def _resolve(self, a: SimAgent, task: str, ru: int, timeout, plan, payee) -> None:
        """The paid work takes its time (or outlives the hold); then the agent's node (which may
        have restarted meanwhile) settles or cancels it."""
        late = plan >= 0.75
        await trio.sleep(
            timeout + self.rng.uniform(5, 60) if late else self.rng.uniform(1, 0.8 * timeout)
        )
        h = self._handle(a)
        if h is None:
            self.done["hold_holder_down"] += 1
        elif plan < 0.45:
            amounts = {"ru": self.rng.randint(1, ru)}
            await self._guard(
                "settle",
                a,
                self._count("settle", h.settle_spend(task, amounts, payee=payee.agent_id)),
            )
        elif not late:
            await self._guard("cancel", a, self._count("cancel", h.cancel_spend(task)))
        else:
            await self._guard("late_settle", a, self._late_settle(h, task, payee))

    async def _count(self, what: str, step) -> None:
        await step
        self.done[what] += 1

    async def _late_settle(self, h, task: str, payee: SimAgent) -> None:
        try:
            await h.settle_spend(task, {"ru": 1}, payee=payee.agent_id)
        except HoldExpired:
            self.done["late_settle_refused"] += 1
            return
        self.ledger_violation(f"hold {task} was settled after its timeout")

    def _pick_revoke(self):
        live = [(a, c) for a, c in self.issued if self._handle(a) is not None]
        if live and self.rng.random() < 0.75:
            a, child = self.rng.choice(live)
            self.issued.remove((a, child))
            return (a, lambda n: self._revoke(a, child, "revoke"))
        found = self._holder(lambda b: b.funder is not None)
        if found is None:
            return None
        a, b = found
        return (a, lambda n: self._revoke(a, to_text("budget", b.id), "void"))

    async def _revoke(self, a: SimAgent, budget_id: str, verb: str) -> None:
        h = self._handle(a)
        if h is not None:
            await h.revoke_budget(budget_id)
            self.done[verb] += 1

    # -- checks
    def ledger_violation(self, text: str) -> None:
        self.violations.append(text)
        self.sim.violation(f"ledger: {text}")

    def check_views(self, now: float) -> None:
        """Every few simulated seconds, faults and all: no honest node's view of any budget
        is over-spent or out of balance."""
        if now < self._next_view_check:
            return
        self._next_view_check = now + VIEW_CHECK_EVERY_S
        seen = self._views_seen
        for s in self.sim.honest_live():
            for holder, led in s.running.ledgers():
                if seen.get((s.index, holder)) is led:
                    continue  # a ledger is immutable: one already checked is fine still
                seen[(s.index, holder)] = led
                for p in view_problems(led)[:1]:
                    self.ledger_violation(f"node {s.index} sees {p}")

    def rogue_problems(self, chain) -> list[str]:
        """A rogue chain's over-spends and governance cheats (what makes an overspend_budget or
        a governance rogue agent a cheater)."""
        return replay_ledger(chain, *self._rules(), self.sim.dna).problems

    def final_check(self) -> None:
        """After convergence, from the chains honest nodes hold: every honest agent's chain
        as its own node has it (with the ledger that node derived), checked as a whole
        (check_books); every copy another honest node holds at the same head derives the same
        ledger; and no chain any honest node holds over-spends."""
        sim = self.sim
        stewards, rules = self._rules()
        honest: dict[bytes, SimAgent | None] = {
            a.pub: a for a in sim.workload.agents if not a.rogue
        }
        for pub in stewards:
            honest.setdefault(pub, None)  # node 0's steward, which mints
        chains: dict = {}
        for pub in honest:
            owner = next((s for s in sim.honest_live() if pub in s.running.cells), None)
            if owner is None:
                self.ledger_violation(f"no live node hosts honest {to_text('agent', pub)[:14]}")
                continue
            cell = owner.running.cells[pub]
            chains[pub] = (owner.running.store.chain(pub)[: cell.state.seq + 1], cell.ledger)
        now_us = int(sim.slots[0].clock() * 1_000_000)
        found = check_books(chains, stewards, now_us, rules, sim.dna)
        for p in found.problems:
            self.ledger_violation(p)
        copies = 0
        for s in sim.honest_live():
            n = s.running
            for author, cs in list(n.chains.items()):
                mine = chains.get(author)
                if mine is not None and cs.ledger is not None and cs.seq == len(mine[0]) - 1:
                    copies += 1
                    if dump(cs.ledger) != dump(mine[1]):
                        self.ledger_violation(
                            f"node {s.index} derives another ledger for "
                            f"{to_text('agent', author)[:14]} at the same head"
                        )
                if author not in chains:  # a rogue's valid prefix, or a Byzantine's chain
                    for p in replay_ledger(
                        n.store.chain(author), stewards, rules, sim.dna
                    ).problems[:1]:
                        self.ledger_violation(f"honest node {s.index} holds {p}")
        if self.gov is not None:
            self.gov.final_check()
        t = found.totals
        self.final = {
            **{k: {r: v / 1000 if r == "ru" else v for r, v in t[k].items()} for k in t},
            "holds": dict(sorted(found.holds.items())),
            **dict(sorted(found.counts.items())),
            "ledger_copies_compared": copies,
        }

    def report(self) -> dict:
        return {
            "done": dict(sorted(self.done.items())),
            "refused": dict(sorted(self.refused.items())),
            "books": self.final,
            "ledger_violations": self.violations[:20],
            "governance": self.gov.report() if self.gov is not None else None,
        }
