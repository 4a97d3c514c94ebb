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


class NodeFailed(Exception):
    """A node process did not start, or exited when it should not have."""


class NodeProc:
    def __init__(self, lan, host: int, directory: str):
        self.lan = lan
        self.host = host
        self.directory = directory
        self.port = P2P_PORT
        self.proc: trio.Process | None = None
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
    async def start(self, bootstrap: list[str], extra: tuple[str, ...] = ()) -> None:
        """Start the process and wait (bounded) for the line `up --json` prints once it serves.
        `extra`: more `up` options (`--mdns`, `--relay ADDR`, `--relay-service`)."""
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
        argv += extra
        self.starts += 1
        self.serving = False
        err = _log(
            self.directory, f"--- start {self.starts} at {time.time():.3f}: {' '.join(argv)}"
        )
        try:
            # its own session: the harness's Ctrl-C reaches the harness, which stops the nodes
            self.proc = await trio.lowlevel.open_process(
                argv,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(err)
        self.paused = False
        assert self.proc.stdout is not None
        with trio.move_on_after(START_TIMEOUT_S):
            line = await _first_line(self.proc.stdout)
            await self.proc.stdout.aclose()  # `up --json` prints this one line only
            if line is None:
                await self.proc.wait()
                raise NodeFailed(
                    f"node {self.host} exited ({self.proc.returncode}) while starting: "
                    f"{_last_line(os.path.join(self.directory, 'up.err'))}"
                )
            self.info = json.loads(line)["nodes"][0]
            await trio.Path(self.directory, "up.out").write_bytes(line)
            self.serving = True
            return
        await self.kill()
        raise NodeFailed(f"node {self.host} did not start within {START_TIMEOUT_S:.0f} s")

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def kill(self) -> None:
        """kill -9, and reap it (a killed process is gone at once; the wait is bounded)."""
        self.serving = False
        self.paused = False
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.kill()
        with trio.move_on_after(STOP_TIMEOUT_S):
            await self.proc.wait()
            return
        raise NodeFailed(f"node {self.host} did not die on SIGKILL")

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
            return await self.proc.wait()
        await self.kill()
        return None


async def _first_line(stream, limit: int = 1 << 16) -> bytes | None:
    """The first line the stream gives (None: it ended first, or sent `limit` bytes without)."""
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        buf += chunk
    return buf.split(b"\n", 1)[0] + b"\n" if b"\n" in buf else None


def _log(directory: str, header: str) -> int:
    """The node's stderr file (appended across restarts), opened for the child, with a header."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, "up.err"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, (header + "\n").encode())
    return fd


def _last_line(path: str) -> str:
    """The node's last word on stderr (a refusal is one line: `CODE: message`)."""
    return (_tail(path).splitlines() or ["(no output)"])[-1]


def _tail(path: str, n: int = 400) -> str:
    try:
        with open(path) as f:
            return f.read()[-n:].strip()
    except OSError:
        return "(no output)"
