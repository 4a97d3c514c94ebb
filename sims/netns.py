"""Linux network namespaces as separate hosts for `budgetnode nemesis`: one namespace per node,
each with its own address on a /24, joined by veth pairs to a bridge in the root namespace (where
the harness runs, so it reaches every node's app socket as a client on the LAN would).

Names carry a run id (`bnn<run>…`), and each run holds an flock on its state file for as long as
it lives: a later run deletes what an earlier one left behind (a harness killed with -9) only
when that run's lock is free, so two runs at once never tear down each other's hosts.

The `ip` commands take milliseconds; they run synchronously, so teardown works the same from a
`finally` under cancellation as from anywhere else.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import tempfile

from node.core.errors import Unsupported

PREFIX = "bnn"  # every namespace, bridge and veth of a nemesis run starts with it
SUBNET = "10.77"  # runs take 10.77.X.0/24, X the first not assigned on this machine
IP_TIMEOUT_S = 10.0
STATE_DIR = os.path.join(tempfile.gettempdir(), "budgetnode-nemesis")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def preflight() -> None:
    """Unsupported (E_UNSUPPORTED) unless this process can make namespaces: root, and `ip`
    with netns support."""
    if os.geteuid() != 0:
        raise Unsupported(
            "nemesis puts each node in its own network namespace, which needs root "
            "(run it as root, e.g. with sudo)"
        )
    if shutil.which("ip") is None:
        raise Unsupported("nemesis needs the `ip` command (iproute2): apt-get install iproute2")
    done = _ip("netns", "list", check=False)
    if done.returncode != 0:
        raise Unsupported(f"`ip netns` does not work here: {done.stderr.strip()}")


def unavailable() -> str | None:
    """Why namespaces cannot be made here (tests skip with it), or None."""
    try:
        preflight()
    except Unsupported as e:
        return str(e)
    return None


def _lock_free(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def clean_leftovers() -> list[str]:
    """Delete the namespaces, bridges and processes of earlier runs that are no longer alive
    (their lock is free). Returns the run ids cleaned."""
    os.makedirs(STATE_DIR, exist_ok=True)
    runs = set()
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX + "-"):
            runs.add(name.split("-")[1])
    for line in _ip("-o", "link", "show", "type", "bridge").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX + "b"):
            runs.add(name[len(PREFIX) + 1 :])
    cleaned = []
    for run in sorted(runs):
        if _lock_free(os.path.join(STATE_DIR, run)):
            _remove_run(run)
            cleaned.append(run)
    return cleaned


def _remove_run(run: str) -> None:
    # the root sides of the run's veth pairs first: deleting one removes its pair at once,
    # whereas a deleted namespace's devices go away later, in the kernel's own time
    for line in _ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith((f"{PREFIX}v{run}", f"{PREFIX}p{run}")):
            _ip("link", "del", name, check=False)
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(f"{PREFIX}-{run}-"):
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", name, check=False)
    _ip("link", "del", f"{PREFIX}b{run}", check=False)
    try:
        os.unlink(os.path.join(STATE_DIR, run))
    except OSError:
        pass


def _free_subnet() -> str:
    used = _ip("-o", "-4", "addr", "show").stdout
    for x in range(256):
        if f" {SUBNET}.{x}." not in used:
            return f"{SUBNET}.{x}"
    raise Unsupported(f"no free /24 left in {SUBNET}.0.0/16 on this machine")


class Lan:
    """A bridge and up to 200 hosts on it; `close()` removes all of it (idempotent)."""

    def __init__(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        # the global lock serialises choosing a subnet between runs that start together
        with open(os.path.join(STATE_DIR, ".lock"), "w") as g:
            fcntl.flock(g, fcntl.LOCK_EX)
            self.run = secrets.token_hex(3)
            self._lock = open(os.path.join(STATE_DIR, self.run), "w")  # noqa: SIM115 - held for the run
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            self.bridge = f"{PREFIX}b{self.run}"
            self.net = _free_subnet()
            self.hosts: list[str] = []
            self.closed = False
            try:
                _ip("link", "add", self.bridge, "type", "bridge")
                _ip("addr", "add", f"{self.net}.1/24", "dev", self.bridge)
                _ip("link", "set", self.bridge, "up")
            except BaseException:
                self.close()
                raise

    def ns(self, i: int) -> str:
        return self.hosts[i] if i < len(self.hosts) else f"{PREFIX}-{self.run}-{i}"

    def veth(self, i: int) -> str:
        return f"{PREFIX}v{self.run}{i}"  # the root side: cutting it cuts the host off

    def address(self, i: int) -> str:
        return f"{self.net}.{i + 2}"

    def add_host(self) -> int:
        i = len(self.hosts)
        if i >= 200:
            raise ValueError("a nemesis LAN holds at most 200 hosts")
        ns, veth, peer = self.ns(i), self.veth(i), f"{PREFIX}p{self.run}{i}"
        self.hosts.append(ns)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("-n", ns, "link", "set", peer, "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        return i

    def attach(self, ns: str) -> int:
        """Give the namespace `ns` (another LAN's host: a router between two LANs) an interface
        on this LAN too; its address here is `address(i)` for the index returned. The namespace
        stays its own LAN's to remove (removing it removes this interface too)."""
        i = len(self.hosts)
        if i >= 200:
            raise ValueError("a nemesis LAN holds at most 200 hosts")
        veth, peer = self.veth(i), f"{PREFIX}p{self.run}{i}"
        self.hosts.append(ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", peer)
        _ip("-n", ns, "link", "set", peer, "up")
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        return i

    def route(self, i: int, to: str, via: str) -> None:
        """Host i reaches the single address `to` through `via` (a router on this LAN)."""
        _ip("-n", self.ns(i), "route", "add", f"{to}/32", "via", via)

    def exec_prefix(self, i: int) -> list[str]:
        """The argv prefix that runs a command on host i."""
        return ["ip", "netns", "exec", self.ns(i)]

    def cut(self, i: int) -> None:
        _ip("link", "set", self.veth(i), "down")

    def mend(self, i: int) -> None:
        _ip("link", "set", self.veth(i), "up")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _remove_run(self.run)
        self._lock.close()
