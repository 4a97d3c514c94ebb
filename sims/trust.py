"""The simulator's side of issue 15 (time and identity): how agents join the network (an invite
from node 0's steward, handed over out of band as a user would; a sybil node's without one), each
action's real authoring time, and the checks that follow from them: the real-time spending bound
over every chain honest nodes hold, and that no honest node holds or warrants a sybil's agent or
a backdated window.

Kept apart from sim.py (over its size already); the Simulation gives it its slots and clock.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import trio

from node.core.errors import InviteUsed, NoWitness

from .invariants import audit_chain, spending_bound
from .rogue import sybil_agent

if TYPE_CHECKING:
    from node.core.action import Signed

    from .sim import Simulation, Slot

INVITE_TRIES = 5  # a lost witness request or reply: a fresh invite, after a pause
INVITE_RETRY_S = 10.0


class TrustRoots:
    def __init__(self, sim: Simulation):
        self.sim = sim
        self.authored: dict[tuple[bytes, int], float] = {}  # (author, seq) -> real time written
        self.windows_opened = 0  # by honest agents' witnessed writes
        self.sybils: list[tuple[Slot, bytes]] = []
        self.invite_failures: Counter[str] = Counter()

    # -- agents
    async def new_agent(self, slot: Slot, j: int):
        """Agent `j` of `slot`'s node: with an invite on an invite network (a fresh one after a
        lost witness: the lost reply may have used the last), without on a sybil node."""
        node = slot.running
        if "sybil" in slot.rogue:
            agent = await sybil_agent(node)
            self.sybils.append((slot, agent._cell.key.public))
            return agent
        if self.sim.cfg.membrane != "invite":
            return await node.new_agent()
        for attempt in range(INVITE_TRIES):
            n0 = self.sim.slots[0].node
            steward = n0.steward if n0 is not None else None
            if steward is not None:
                invite = await steward.invite(f"sim agent {j}")
                try:
                    return await node.new_agent(invite=invite)
                except (NoWitness, InviteUsed) as e:
                    self.invite_failures[e.code] += 1
            await trio.sleep(INVITE_RETRY_S * (attempt + 1))
        return None

    # -- authoring times
    def committed(self, s: Signed, honest: bool) -> None:
        """`s` was just written at its author's node: now is its real authoring time (a fork's
        twin, at the same seq, shares it)."""
        self.authored[(s.author, s.seq)] = trio.current_time()
        if honest and s.seq > 0 and "witness" in s.action:
            self.windows_opened += 1

    def _time_of(self, s: Signed) -> float | None:
        return self.authored.get((s.author, s.seq))

    # -- checks
    def held_chains(self):
        """(slot, author, chain) for every distinct chain an honest live node holds."""
        seen = set()
        for slot in self.sim.honest_live():
            n = slot.running
            for author in [*n.chains, *n.cells]:
                head = n._head(author)
                if head is None or (author, head[1]) in seen:
                    continue
                seen.add((author, head[1]))
                yield slot, author, n.store.chain(author)

    def check_spending_bound(self) -> int:
        """The real-time spending bound over every chain honest nodes hold; returns how many
        chains were checked."""
        skew = self.sim.cfg.skew
        checked = 0
        for slot, _, chain in self.held_chains():
            checked += 1
            for p in spending_bound(chain, self._time_of, slot.running.dna, skew):
                self.sim.violation(f"honest node {slot.index} holds a chain past the bound: {p}")
        return checked

    def _held_anywhere(self, author: bytes, actions) -> int:
        """How many of `actions` (by `author`) some honest live node holds."""
        honest = [s.running for s in self.sim.honest_live()]
        held = 0
        for s in actions:
            for n in honest:
                hd = n._head(author)
                if (hd is not None and hd[0] >= s.seq) or n.dht.has_action(s.hash):
                    held += 1
                    break
        return held

    def accepted_cheats(self) -> dict[str, int]:
        """What honest nodes took of the identity and time cheaters: a sybil agent's actions (all
        of them are uninvited), a backdating agent's from its first invalid one on; and the
        honest nodes' warrants against sybil agents (refused, never warranted). Each nonzero count
        is also a violation."""
        out = {"sybil_agents": len(self.sybils), "sybil_accepted": 0, "sybil_warranted": 0}
        honest = [s.running for s in self.sim.honest_live()]
        for slot, pub in self.sybils:
            n = slot.node
            if n is None:
                continue
            out["sybil_accepted"] += self._held_anywhere(pub, n.store.chain(pub))
            out["sybil_warranted"] += sum(1 for h in honest if pub in h.warranted)
        out["backdated_accepted"] = 0
        for slot in self.sim.slots:
            if "backdate" not in slot.rogue or slot.node is None:
                continue
            n = slot.node
            for pub in n.cells:
                chain = n.store.chain(pub)
                bad = first_invalid(chain, n.dna)
                if bad is not None:
                    out["backdated_accepted"] += self._held_anywhere(pub, chain[bad:])
        for k, v in out.items():
            if v and k != "sybil_agents":
                self.sim.violation(f"{k}: {v} (must be 0)")
        return out


def first_invalid(chain, dna) -> int | None:
    """The index of the first action audit_chain finds fault with, or None (a fault in a prefix
    is a fault in every longer one, so a bisection finds it)."""
    if not audit_chain(chain, dna)[0]:
        return None
    lo, hi = 0, len(chain) - 1  # chain[:lo + 1] is clean (or lo = 0), chain[:hi + 1] is not
    if audit_chain(chain[:1], dna)[0]:
        return 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if audit_chain(chain[: mid + 1], dna)[0]:
            hi = mid
        else:
            lo = mid
    return hi
