"""Crash safety: a writer SIGKILLed at any point loses no write it acknowledged, and the store
it leaves behind always reopens and verifies.

tests/crash_writer.py is run as a real subprocess; the test waits for the lines it prints
(never a fixed sleep), kills it with SIGKILL, and reopens the store in this process.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from node.core.crypto import from_text
from node.sdk import LocalNode, NotFound

WRITER = Path(__file__).with_name("crash_writer.py")
ROOT = WRITER.parent.parent
ROUND_TIMEOUT_S = 60  # a guard against a hung writer, not a wait


class Writer:
    """A running crash_writer.py whose stdout is read line by line."""

    def __init__(self, proc, stderr_path: Path):
        self.proc = proc
        self.stderr_path = stderr_path
        self.buf = b""
        self.lines: list[str] = []

    @classmethod
    async def start(cls, store: Path, tmp_path: Path) -> Writer:
        stderr_path = tmp_path / f"writer-{os.urandom(4).hex()}.err"
        with open(stderr_path, "wb") as err:
            proc = await trio.lowlevel.open_process(
                [sys.executable, str(WRITER), str(store)],
                cwd=str(ROOT),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        return cls(proc, stderr_path)

    async def _fill(self) -> bool:
        chunk = await self.proc.stdout.receive_some(1 << 16)
        self.buf += chunk
        return bool(chunk)

    async def read_until(self, done) -> None:
        """Read lines until done(lines) holds; fails if the writer exits first."""
        while not done(self.lines):
            while b"\n" not in self.buf:
                if not await self._fill():
                    await self.proc.wait()
                    pytest.fail(
                        f"writer exited ({self.proc.returncode}) after {self.lines[-3:]}:"
                        f"\n{self.stderr_path.read_text()}"
                    )
            line, self.buf = self.buf.split(b"\n", 1)
            self.lines.append(line.decode())

    async def kill(self) -> list[str]:
        """SIGKILL, then collect every complete line it managed to print; returns all lines."""
        self.proc.kill()
        assert await self.proc.wait() == -signal.SIGKILL, self.stderr_path.read_text()
        while await self._fill():
            pass
        *complete, _partial = self.buf.split(b"\n")
        self.lines += [c.decode() for c in complete]
        self.buf = b""
        await self.proc.stdout.aclose()
        return self.lines

    def hashes(self) -> list[str]:
        return [ln for ln in self.lines if ln.startswith("ac")]

    def agent_id(self) -> str | None:
        ids = [ln.split()[1] for ln in self.lines if ln.startswith("agent ")]
        return ids[0] if ids else None


def reopen(store: Path):
    return LocalNode.open(path=str(store), clock=lambda: 2_000_000_000.0)


def own_agents(node) -> list[str]:
    steward = node.steward.agent_id
    return [a for a in node.agents() if a != steward]


def kill_points(seed: int, rounds: int) -> list[int]:
    rng = random.Random(seed)
    # Always one kill after the first line and one after many; the rest spread in between.
    points = [1, 150]
    while len(points) < rounds:
        points.append(rng.choice([1, 2, 3, rng.randint(4, 30), rng.randint(30, 150)]))
    rng.shuffle(points)
    return points


async def test_sigkill_never_loses_an_acknowledged_write(tmp_path):
    store = tmp_path / "store"
    acknowledged: list[str] = []
    agent_id = None
    last_seq = 0
    points = kill_points(seed=20240611, rounds=22)
    assert min(points) == 1 and max(points) >= 100

    for rounds_done, k in enumerate(points, 1):
        with trio.fail_after(ROUND_TIMEOUT_S):
            w = await Writer.start(store, tmp_path)
            await w.read_until(lambda lines, k=k: sum(ln.startswith("ac") for ln in lines) >= k)
            await w.kill()
        printed = w.hashes()
        assert len(printed) >= k
        # The writer re-attaches the same agent every time instead of starting a new one.
        if agent_id is None:
            agent_id = w.agent_id()
        assert w.agent_id() == agent_id
        acknowledged += printed

        async with reopen(store) as node:  # every chain is verified from genesis on open
            assert own_agents(node) == [agent_id]
            seqs = []
            for h in acknowledged:  # this round's writes and every earlier round's
                rec = node.get_record(h)
                assert rec["author"] == agent_id and rec["hash"] == h
                seqs.append(rec["seq"])
            assert seqs == sorted(set(seqs)), "acknowledged writes out of chain order"
            assert seqs[0] >= 1
            head = node.status()["agents"][1]
            assert head["agent_id"] == agent_id
            # At most the one write in flight at the kill is on the chain but unacknowledged.
            assert seqs[-1] <= head["seq"] <= seqs[-1] + 1
            # This round continued right where the chain ended (plus that in-flight one).
            assert last_seq < seqs[-len(printed)] <= last_seq + 2
            last_seq = head["seq"]
            # Nothing beyond the chain: every action of it is either acknowledged or in flight.
            chain = node.store.chain(from_text("agent", agent_id))
            assert len(chain) == head["seq"] + 1
            assert len(chain) - 1 - len(acknowledged) <= rounds_done

    # 100 RU a window at 3 RU a write: the writes spanned many windows, each verified on open.
    assert len(acknowledged) > 5 * 33


@pytest.mark.parametrize("kill_on", [None, "opening", "opened", "agent"])
async def test_sigkill_during_startup_leaves_a_store_that_opens(tmp_path, kill_on):
    """Killed before or while the network and the agent are created (repeatedly, on the same
    directory), the store still opens, verifies and takes writes."""
    store = tmp_path / "store"
    seen_agents: set[str] = set()
    for _ in range(3):
        with trio.fail_after(ROUND_TIMEOUT_S):
            w = await Writer.start(store, tmp_path)
            if kill_on is not None:
                await w.read_until(lambda lines: any(ln.split()[0] == kill_on for ln in lines))
            await w.kill()
        if w.agent_id():
            seen_agents.add(w.agent_id())
        if store.exists():
            async with reopen(store) as node:
                # An agent the writer announced was never lost.
                assert seen_agents <= set(own_agents(node))
                assert len(own_agents(node)) <= 1
                for h in w.hashes():
                    node.get_record(h)

    # The survivor is a working store: a writer can attach and write, and the writes persist.
    with trio.fail_after(ROUND_TIMEOUT_S):
        w = await Writer.start(store, tmp_path)
        await w.read_until(lambda lines: sum(ln.startswith("ac") for ln in lines) >= 3)
        await w.kill()
    async with reopen(store) as node:
        assert own_agents(node) == [w.agent_id()]
        assert seen_agents <= {w.agent_id()}
        for h in w.hashes():
            assert node.get_record(h)["author"] == w.agent_id()


async def test_crash_between_key_and_genesis_leaves_an_orphan_key_only(tmp_path, monkeypatch):
    """new_agent saves the key before the genesis: a crash in between (simulated by the
    genesis append failing) leaves a key no chain names, which must not break reopening."""
    from node.store import Store

    async with reopen(tmp_path) as node:
        alice = await node.new_agent()
        h = await alice.transmit_understanding("s", "p", "o")
        real_append = Store.append

        def crash(self, s, prev_seq, *a, **kw):
            if prev_seq is None:
                raise KeyboardInterrupt("simulated crash before the genesis commit")
            return real_append(self, s, prev_seq, *a, **kw)

        monkeypatch.setattr(Store, "append", crash)
        with pytest.raises(KeyboardInterrupt):
            await node.new_agent()
        monkeypatch.undo()
        keys_on_disk = len(node.keystore.keys)

    async with reopen(tmp_path) as node:
        assert own_agents(node) == [alice.agent_id]
        assert len(node.keystore.keys) == keys_on_disk == 3  # steward, alice, the orphan
        assert node.get_record(h)["author"] == alice.agent_id
        bob = await node.new_agent()
        await bob.transmit_understanding("s", "p", "o")
        with pytest.raises(NotFound):
            node.get_record("ac" + "A" * 43)
    async with reopen(tmp_path) as node:
        assert own_agents(node) == [alice.agent_id, bob.agent_id]
