"""One node process of a nemesis run: `budgetnode up --listen … --bootstrap …` on its own host
(network namespace), with its data directory kept across restarts, its own output in files, and
every wait bounded. A harness over real processes polls them (has it printed its address yet,
has it exited) with a deadline: those are the conditions, there is nothing to wait on instead."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import trio

from node.core.crypto import from_text

APP_PORT = 8700
P2P_PORT = 4001
START_TIMEOUT_S = 90.0  # an interpreter start with libp2p's imports, on a loaded 2-core machine
STOP_TIMEOUT_S = 20.0
POLL_S = 0.05


class NodeFailed(Exception):
    """A node process did not start, or exited when it should not have."""


class NodeProc:
    def __init__(self, lan, host: int, directory: str):
        self.lan = lan
        self.host = host
        self.directory = directory
        self.port = P2P_PORT
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.paused = False
        self.cut = False
        self.serving = False  # its current run's address and token are known
        self.starts = 0

    # -- what the rest of the run reads
    @property
    def ip(self) -> str:
        return self.lan.address(self.host)

    @property
    def addr(self) -> str:
        """The multiaddr others bootstrap from (its current port)."""
        return f"/ip4/{self.ip}/tcp/{self.port}/p2p/{self.info['peer_id']}"

    @property
    def node_id(self) -> bytes:
        return from_text("agent", self.info["node_key"])

    @property
    def url(self) -> str:
        return self.info["app_url"]

    @property
    def token(self) -> str:
        return self.info["token"]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def reachable(self) -> bool:
        """Running, not paused, not cut off: worth asking over its socket."""
        return self.serving and self.running and not self.paused and not self.cut

    # -- lifecycle
    async def start(self, bootstrap: list[str]) -> None:
        """Start the process and wait (bounded) for the line `up --json` prints once it serves."""
        os.makedirs(self.directory, exist_ok=True)
        out_path = os.path.join(self.directory, "up.out")
        argv = [
            *self.lan.exec_prefix(self.host),
            sys.executable,
            "-m",
            "node.cli",
            "up",
            "--listen",
            f"/ip4/{self.ip}/tcp/{self.port}",
            "--path",
            self.directory,
            "--app-host",
            self.ip,
            "--app-port",
            str(APP_PORT),
            "--json",
        ]
        for addr in bootstrap[:16]:
            argv += ["--bootstrap", addr]
        self.starts += 1
        self.serving = False
        with open(out_path, "w") as out, open(os.path.join(self.directory, "up.err"), "a") as err:
            err.write(f"--- start {self.starts} at {time.time():.3f}: {' '.join(argv)}\n")
            err.flush()
            # its own session: the harness's Ctrl-C reaches the harness, which stops the nodes
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.paused = False
        with trio.move_on_after(START_TIMEOUT_S):
            while True:
                with open(out_path) as f:
                    line = f.readline()
                if line.endswith("\n"):
                    self.info = json.loads(line)["nodes"][0]
                    self.serving = True
                    return
                if self.proc.poll() is not None:
                    raise NodeFailed(
                        f"node {self.host} exited ({self.proc.returncode}) while starting: "
                        f"{_tail(os.path.join(self.directory, 'up.err'))}"
                    )
                await trio.sleep(POLL_S)
        self.kill()
        raise NodeFailed(f"node {self.host} did not start within {START_TIMEOUT_S:.0f} s")

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9, and reap it (a killed process is gone at once; the wait is bounded)."""
        self.serving = False
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise NodeFailed(f"node {self.host} did not die on SIGKILL") from None
        self.paused = False

    async def stop(self) -> int | None:
        """SIGTERM (resumed first if paused) and wait for a clean exit; SIGKILL past the bound.
        Returns the exit status (None: it had to be killed)."""
        self.serving = False
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        if self.paused:
            self.signal(signal.SIGCONT)
            self.paused = False
        self.signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT_S):
            while self.proc.poll() is None:
                await trio.sleep(POLL_S)
            return self.proc.returncode
        self.kill()
        return None


def _tail(path: str, n: int = 400) -> str:
    try:
        with open(path) as f:
            return f.read()[-n:].strip()
    except OSError:
        return "(no output)"
