"""Agents calling zome functions through the SDK, with a realistic mix, on virtual time.

Profiles (seeded per agent):
* steady (~65%): an action every ~1/rate h: triples, links, triple checks, small recalls,
  credentials, now and then a composition of another agent's memories; stays under budget.
* heavy (~35%): three times as often, mostly add_knowledge (33 RU): exhausts its 100 RU and is
  refused with E_INSUFFICIENT_RU (a correct refusal, counted) until its window resets or a
  steward's grant arrives.
* agents on rogue nodes act like heavy ones; their node cheats on their behalf. Agents on
  Byzantine nodes keep their profile; neither kind counts as honest in the checks.
The steward (node 0) grants 20-150 RU to random heavy agents `grants_per_hour` times an hour.
"""

from __future__ import annotations

import heapq
import random

import trio

from node.agent_api import Deferred
from node.core.budget import InsufficientRU
from node.core.encoding import decode
from node.core.crypto import from_text
from node.core.errors import BudgetError, NoWitness
from node.core.warrant import Warranted
from node.local_node import AgentClient

WORDS = (
    "river",
    "silt",
    "oak",
    "moss",
    "fern",
    "rain",
    "stone",
    "root",
    "leaf",
    "light",
    "soil",
    "seed",
    "bark",
    "wind",
    "frost",
    "fungus",
    "bee",
    "flower",
    "ridge",
    "delta",
)


async def seeded_steps(rng, per_hour: float, start: float, end: float, kinds, weights, begin):
    """From `start` to `end` (simulated s), at Poisson arrivals `per_hour`: a kind drawn by
    `weights` from `rng`, handed to `begin(kind)`, which starts the step and returns."""
    rate = per_hour / 3600.0
    t = start
    while rate > 0:
        t += rng.expovariate(rate)
        if t >= end:
            break
        await trio.sleep_until(t)
        begin(rng.choices(kinds, weights)[0])


class SimAgent:
    __slots__ = ("index", "slot", "agent_id", "pub", "profile", "rate", "busy", "hashes", "rogue")

    def __init__(self, index, slot, agent_id, profile, rate, rogue):
        self.index, self.slot, self.agent_id = index, slot, agent_id
        self.pub = from_text("agent", agent_id)
        self.profile, self.rate, self.rogue = profile, rate, rogue
        self.busy = False
        self.hashes: list[str] = []


class Workload:
    def __init__(self, sim, rng: random.Random):
        self.sim = sim
        self.rng = rng
        self.agents: list[SimAgent] = []
        self.calls = 0
        self.refusals = 0
        self.refused: dict[str, int] = {}  # refusals by code: a budget's, a witness's
        self.errors: dict[str, int] = {}
        self.grants = 0
        self.deferred = 0  # writes queued (defer=True)
        self.deferred_run = 0  # queued writes that ran when their time came
        self.deferred_refused = 0  # queued writes refused when they ran
        # (node slot, queue id) -> [agent, the write's unique content, outcome]: what the
        # deferral invariant checks the chains against
        self.deferrals: dict[tuple[int, int], list] = {}

    def add_agent(self, slot, agent_id: str) -> SimAgent:
        cfg = self.sim.cfg
        profile = "heavy" if slot.rogue or self.rng.random() < 0.35 else "steady"
        rate = cfg.actions_per_agent_hour * (3.0 if profile == "heavy" else 1.0)
        # an agent on a Byzantine node is honest code behind a lying wire: not checked as honest
        a = SimAgent(len(self.agents), slot, agent_id, profile, rate, not slot.honest)
        self.agents.append(a)
        return a

    def _next(self, t: float, rate_per_hour: float) -> float:
        return (
            t + self.rng.expovariate(rate_per_hour / 3600.0) if rate_per_hour > 0 else float("inf")
        )

    async def run(self, start: float, end: float) -> None:
        """Drive every agent (and the steward's grants) from `start` to `end` (simulated s)."""
        heap = [(self._next(start, a.rate), i, a.index) for i, a in enumerate(self.agents)]
        seq = len(heap)
        heap.append((self._next(start, self.sim.cfg.grants_per_hour), seq, -1))
        heapq.heapify(heap)
        async with trio.open_nursery() as n:
            while heap:
                t, _, who = heapq.heappop(heap)
                if t >= end:
                    break
                await trio.sleep_until(t)
                seq += 1
                if who == -1:
                    n.start_soon(self._grant)
                    heapq.heappush(heap, (self._next(t, self.sim.cfg.grants_per_hour), seq, -1))
                    continue
                a = self.agents[who]
                if not a.busy and a.slot.node is not None:
                    a.busy = True
                    n.start_soon(self._act, a)
                heapq.heappush(heap, (self._next(t, a.rate), seq, who))
            n.cancel_scope.cancel()  # calls still in flight at the end are abandoned

    def _error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def _pick_op(self, a: SimAgent):
        r = self.rng.random()
        w = self.rng.choice
        if a.profile == "heavy":
            if r < 0.6:
                return "add_knowledge", {
                    "content": f"{w(WORDS)} {w(WORDS)} {self.rng.getrandbits(32)}",
                    "tags": [w(WORDS)],
                }
            if r < 0.8:
                return "create_thought_credential", {"title": w(WORDS), "body": w(WORDS) * 3}
            return "transmit_understanding", {
                "subject": w(WORDS),
                "predicate": "feeds",
                "object": w(WORDS),
            }
        if r < 0.4:
            return "transmit_understanding", {
                "subject": w(WORDS),
                "predicate": "feeds",
                "object": w(WORDS),
                "context": None,
            }
        if r < 0.55 and len(a.hashes) >= 2:
            f, t = self.rng.sample(a.hashes[-8:], 2)
            return "link_edge", {"from_hash": f, "to_hash": t, "relation": "supports"}
        if r < 0.7:
            return "validate_triple", {
                "subject": w(WORDS),
                "predicate": "feeds",
                "object": w(WORDS),
            }
        if r < 0.85:
            return "recall_understandings", {"subject": w(WORDS), "limit": self.rng.randint(1, 20)}
        if r < 0.95 or len(self.agents) < 2:
            return "create_thought_credential", {"title": w(WORDS), "body": w(WORDS) * 3}
        other = self.rng.choice(self.agents)
        return "compose_memories", {"other_agent_id": other.agent_id}

    async def _act(self, a: SimAgent) -> None:
        op, payload = self._pick_op(a)
        zome = (
            "rose_forest"
            if op in ("add_knowledge", "link_edge", "create_thought_credential")
            else "memory"
        )
        node = a.slot.node
        outcome = "ok"
        try:
            cell = node.cells[a.pub]
            self.calls += 1
            defer = self.sim.cfg.defer and a.profile == "heavy" and not a.rogue
            res = await AgentClient(node, cell).call(zome, op, payload, defer=defer)
            if isinstance(res, Deferred):
                outcome = f"deferred:{res.id}"
                self.deferred += 1
                self.deferrals[(a.slot.index, res.id)] = [a, payload.get("content"), None]
            elif isinstance(res, str):
                a.hashes.append(res)
                if len(a.hashes) > 16:
                    del a.hashes[:8]
        except InsufficientRU as e:
            outcome = f"refused:{e.have_mru}"
            self.refusals += 1
            self.refused[e.code] = self.refused.get(e.code, 0) + 1
            if not a.rogue:
                self.sim.check_refusal(a, node, e)
        except NoWitness as e:  # cut off from node 0's steward, the next window cannot open
            outcome = e.code
            self.refusals += 1
            self.refused[e.code] = self.refused.get(e.code, 0) + 1
        except Warranted:
            outcome = "warranted"
            self._error("E_WARRANTED")
            if not a.rogue:
                self.sim.violation(
                    f"honest agent {a.agent_id[:14]} (node {a.slot.index}) was refused as warranted"
                )
        except BudgetError as e:
            outcome = e.code
            self._error(e.code)
        except Exception as e:  # noqa: BLE001 - a closed store while the node crashes, etc.
            if a.slot.node is node and not getattr(node, "_sim_closing", False):
                outcome = type(e).__name__
                self._error(type(e).__name__)
                self.sim.violation(f"agent {a.agent_id[:14]} {op}: unexpected {e!r}")
            else:
                outcome = "node-down"
        finally:
            a.busy = False
        self.sim.net.note(f"{trio.current_time():.6f}|{a.index}|{op}|{outcome}".encode())

    def on_admission(self, slot, ev: dict) -> None:
        """A node's admission event: the outcome of a queued write."""
        if ev["type"] != "deferred_done" or ev.get("cancelled"):
            return
        known = self.deferrals.get((slot.index, ev["id"]))
        if ev.get("hash") is not None:
            self.deferred_run += 1
            outcome = "ran"
        else:
            self.deferred_refused += 1
            outcome = str(ev.get("code"))
        if known is not None:
            if known[2] is not None:
                self.sim.violation(f"queued write {slot.index}:{ev['id']} ran twice")
            known[2] = outcome

    def check_deferrals(self) -> None:
        """Queued work never changed a chain: a write with its own content (add_knowledge's
        carries a random number) is on its agent's chain once if it ran, else not at all."""
        for (_, qid), (a, content, outcome) in sorted(self.deferrals.items(), key=_by_id):
            node = a.slot.node
            if content is None or node is None or a.rogue:
                continue
            found = _contents(node, a.pub).count(content)
            if found != (1 if outcome == "ran" else 0):
                self.sim.violation(
                    f"queued write {a.slot.index}:{qid} ({outcome or 'still queued'}) of "
                    f"{a.agent_id[:14]} is on its chain {found} times"
                )

    async def _grant(self) -> None:
        steward_slot = self.sim.slots[0]
        node = steward_slot.node
        candidates = [a for a in self.agents if a.profile == "heavy" and not a.rogue]
        if node is None or node.steward is None or not candidates:
            return
        a = self.rng.choice(candidates)
        ru = self.rng.choice((20, 50, 100, 150))
        outcome = "ok"
        try:
            res = await node.steward.allocate_budget(a.agent_id, ru)
            self.grants += 1
            outcome = f"granted:{res.granted_ru}:{res.claimed}"
        except BudgetError as e:
            outcome = e.code
            self._error("grant:" + e.code)
        except Exception as e:  # noqa: BLE001
            if steward_slot.node is node:
                self.sim.violation(f"grant to {a.agent_id[:14]}: unexpected {e!r}")
            outcome = type(e).__name__
        self.sim.net.note(f"{trio.current_time():.6f}|grant|{a.index}|{ru}|{outcome}".encode())


def _by_id(item) -> tuple:
    return item[0]


def _contents(node, pub: bytes) -> list:
    """The `content` field of the entry of every create on `pub`'s chain as `node` holds it
    (one per action: two actions of one entry count twice)."""
    entries = node.store.entries_of(pub)
    out = []
    for s in node.store.chain(pub):
        body = entries.get(s.action.get("entry")) if s.action.get("type") == "create" else None
        entry = decode(body) if body is not None else None
        if isinstance(entry, dict) and isinstance(entry.get("content"), dict):
            out.append(entry["content"].get("content"))
    return out
