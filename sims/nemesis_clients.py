"""The nemesis's clients: writers that drive agents through each node's app socket (the remote
SDK, as any agent program would) and record what they were told, and the observer that asks the
nodes which acknowledged writes they hold.

Every call is bounded (a connect timeout, a deadline on each exchange); a write that gets no
answer is indeterminate (it may have committed), never acknowledged."""

from __future__ import annotations

import trio

from node.app.client import NodeClient, connect
from node.core.errors import BudgetError, InsufficientRU, NotFound

from .nemesis_check import Ack, History, Refusal, authorities

CALL_TIMEOUT_S = 10.0  # connect + hello + one write; a paused node answers after it resumes
CONNECT_TIMEOUT_S = 3.0
MAX_CHECKS_PER_ROUND = 2000  # get_record calls one observer round makes at one node


class Clients:
    def __init__(self, procs, history: History, t0: float, rate: float, max_agents: int):
        self.procs = procs
        self.history = history
        self.t0 = t0
        self.rate = rate
        self.max_agents = max_agents
        self.live: dict[int, list[str]] = {i: [] for i in range(len(procs))}  # agents with RU left
        self.made: dict[int, int] = {i: 0 for i in range(len(procs))}
        self.pending: dict[str, tuple[Ack, set[int], set[int]]] = {}  # hash -> (ack, must, seen)
        self.visible_at: dict[str, float] = {}
        self.seen_at: dict[str, dict[int, float]] = {}  # hash -> node -> first seen there

    def now(self) -> float:
        return trio.current_time() - self.t0

    def node_ids(self) -> list[bytes]:
        return [p.node_id for p in self.procs]

    # -- agents and writes
    async def new_agent(self, i: int) -> str | None:
        p = self.procs[i]
        if self.made[i] >= self.max_agents:
            return None
        with trio.move_on_after(CALL_TIMEOUT_S):
            async with connect(p.url, token=p.token, connect_timeout=CONNECT_TIMEOUT_S) as a:
                self.made[i] += 1
                self.history.agents[a.agent_id] = i
                self.live[i].append(a.agent_id)
                return a.agent_id
        return None

    async def writer(self, i: int) -> None:
        """Writes at `rate` a second on node i, round-robin over its agents that have RU left,
        making a new agent when all are spent (up to max_agents)."""
        n = 0
        while True:
            await trio.sleep(1 / self.rate)  # the workload's pace, not a wait for a condition
            p = self.procs[i]
            if not p.reachable:
                self.history.unavailable += 1
                continue
            try:
                if not self.live[i] and await self.new_agent(i) is None:
                    continue
            except BudgetError:
                self.history.unavailable += 1
                continue
            agent = self.live[i][n % len(self.live[i])]
            n += 1
            await self._write(i, agent, n)

    async def _write(self, i: int, agent: str, n: int) -> None:
        p = self.procs[i]
        invoked = self.now()
        h = None
        try:
            with trio.move_on_after(CALL_TIMEOUT_S):
                async with connect(
                    p.url, token=p.token, agent=agent, connect_timeout=CONNECT_TIMEOUT_S
                ) as a:
                    h = await a.transmit_understanding(f"s{i}-{n}", "observed", f"o{n}")
        except InsufficientRU as e:
            self.live[i].remove(agent)
            self.history.refusals.append(Refusal(e.code, i, agent, invoked))
            return
        except BudgetError as e:
            if e.code in ("E_NODE_UNREACHABLE", "E_CONNECTION_LOST"):
                self.history.indeterminate += 1
            else:
                self.history.refusals.append(Refusal(e.code, i, agent, invoked))
            return
        if h is None:
            self.history.indeterminate += 1
            return
        ack = Ack(h, i, agent, invoked, self.now())
        self.history.acks.append(ack)
        self.pending[h] = (ack, authorities(ack, self.node_ids()), set())

    # -- observing
    async def observe(self, interval: float) -> None:
        """Until cancelled: note when each acknowledged write is first held by every node that
        must hold it."""
        while True:
            await self.observe_round()
            await trio.sleep(interval)  # the observer's pace

    async def observe_round(self) -> None:
        for i, p in enumerate(self.procs):
            want = [h for h, (_, must, seen) in self.pending.items() if i in must and i not in seen]
            if not want or not p.reachable:
                continue
            found = await self.held_at(i, want[:MAX_CHECKS_PER_ROUND])
            t = self.now()
            for h in found or ():
                ack, must, seen = self.pending[h]
                seen.add(i)
                self.seen_at.setdefault(h, {})[i] = t
                if seen >= must:
                    self.visible_at[h] = t
                    del self.pending[h]

    async def held_at(self, i: int, hashes: list[str]) -> set[str] | None:
        """Which of `hashes` node i holds (asked as one of its agents); None: no answer."""
        p = self.procs[i]
        agent = next((a for a, host in self.history.agents.items() if host == i), None)
        if agent is None:
            return None
        found: set[str] = set()
        with trio.move_on_after(CALL_TIMEOUT_S + len(hashes) * 0.05):
            try:
                async with connect(
                    p.url, token=p.token, agent=agent, connect_timeout=CONNECT_TIMEOUT_S
                ) as a:
                    for h in hashes:
                        try:
                            await a.get_record(h)
                            found.add(h)
                        except NotFound:
                            pass
                return found
            except BudgetError:
                return None
        return None

    async def status(self, i: int) -> dict | None:
        p = self.procs[i]
        with trio.move_on_after(CALL_TIMEOUT_S):
            try:
                async with NodeClient.connect(
                    p.url, token=p.token, connect_timeout=CONNECT_TIMEOUT_S
                ) as node:
                    return await node.status()
            except BudgetError:
                return None
        return None
