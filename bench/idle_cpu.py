"""CPU an idle node process uses: `budgetnode up --listen` processes on 127.0.0.1, no writes,
each one's user+system time read from /proc/PID/stat over a window (after a warm-up, so the
start's imports and first gossip rounds are not counted).

    python -m bench.idle_cpu [--seconds 60] [--nodes 1] [--warmup 15]

--nodes 1 measures a lone node; --nodes 3 starts a network of three processes (the others
bootstrap from the first) and reports each, so gossip with peers is counted too."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

START_TIMEOUT_S = 90.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (fields 14 and 15 of /proc/PID/stat, after the command name)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_node(directory: str, bootstrap: str | None) -> tuple[subprocess.Popen, dict]:
    out = os.path.join(directory, "up.out")
    argv = [sys.executable, "-m", "node.cli", "up", "--listen", "/ip4/127.0.0.1/tcp/0"]
    argv += ["--path", directory, "--json"] + (["--bootstrap", bootstrap] if bootstrap else [])
    os.makedirs(directory, exist_ok=True)
    with open(out, "w") as o:
        proc = subprocess.Popen(argv, stdout=o, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:  # a real process: poll for its line, with a deadline
        with open(out) as f:
            line = f.readline()
        if line.endswith("\n"):
            return proc, json.loads(line)["nodes"][0]
        if proc.poll() is not None:
            raise SystemExit(f"the node exited ({proc.returncode}) while starting")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the node did not start in time")


def measure(nodes: int, seconds: float, warmup: float) -> dict:
    procs = []
    with tempfile.TemporaryDirectory(prefix="budgetnode-idle-") as root:
        try:
            first = None
            for i in range(nodes):
                proc, info = start_node(os.path.join(root, f"node{i}"), first)
                first = first or info["listen"][0]
                procs.append(proc)
            time.sleep(warmup)  # the measured window starts after the start-up's work
            before = [cpu_seconds(p.pid) for p in procs]
            t0 = time.monotonic()
            time.sleep(seconds)  # the measured window itself
            after = [cpu_seconds(p.pid) for p in procs]
            wall = time.monotonic() - t0
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
    used = [a - b for a, b in zip(after, before)]
    return {
        "nodes": nodes,
        "window_s": round(wall, 1),
        "cpu_s": [round(u, 3) for u in used],
        "cpu_percent": [round(100 * u / wall, 2) for u in used],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle_cpu", description=__doc__)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--warmup", type=float, default=15.0)
    a = p.parse_args(argv)
    print(json.dumps(measure(a.nodes, a.seconds, a.warmup)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
