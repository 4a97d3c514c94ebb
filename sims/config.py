"""Simulation parameters: one dataclass, the parsers for durations, partitions and scenario files.

Partition syntax (``--partition``, repeatable; ``@START-END`` in simulated time, ``h``/``m``/``s``
or ``ms`` units, a bare number is seconds):

* ``50/50@2h-4h``   symmetric split: the nodes (after a seeded shuffle) in groups of 50% and 50%;
                     any number of groups, e.g. ``20/30/50@1h-90m``; no group can reach another.
* ``30>70@1h-2h``   asymmetric: the first 30% cannot send to the other 70%; the other way works
                     (so requests from the 70% arrive, but their replies are lost).
* ``isolate@1h-2h`` one seeded random node (never node 0) is cut off both ways;
  ``isolate:5@1h-2h`` isolates node 5.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import tomllib
from dataclasses import dataclass, field

from node.core.dna import MEMBRANES
from node.net import rogue as adversarial

START_UNIX = 1_730_678_400  # the nodes' clock at simulated time 0 (2024-11-04T00:00:00Z)

# the rules `--governance` adds to the network's DNA (sims/governance.py): a second resource, and
# every agent a voter, three votes resolving a proposal
TOKENS = "llm_tokens.large"
GOVERNANCE_DNA = {
    "resources": {"ru": {"mint_limit": 10_000_000}, TOKENS: {"mint_limit": 50_000_000}},
    "governance": {"voters": "agents", "quorum": 3},
}

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}


def parse_duration(text) -> float:
    """'50ms', '2h', '1.5h', '90s', '30m', '3' (seconds) -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h|d|)\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (try 50ms, 90s, 30m, 2h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Partition:
    kind: str  # "split", "oneway", "isolate"
    start: float  # simulated seconds
    end: float
    shares: tuple = ()  # split/oneway: percentages of the nodes per group
    node: int | None = None  # isolate: which node (None: a seeded random one)
    spec: str = ""

    @classmethod
    def parse(cls, spec: str) -> Partition:
        body, sep, window = spec.partition("@")
        if not sep or "-" not in window:
            raise ValueError(f"partition {spec!r}: expected GROUPS@START-END, e.g. 50/50@2h-4h")
        a, b = window.split("-", 1)
        start, end = parse_duration(a), parse_duration(b)
        if end <= start:
            raise ValueError(f"partition {spec!r}: it must end after it starts")
        body = body.strip()
        if body.startswith("isolate"):
            node = None
            if ":" in body:
                node = int(body.split(":", 1)[1])
            return cls("isolate", start, end, (), node, spec)
        if ">" in body:
            shares = tuple(float(x) for x in body.split(">"))
            if len(shares) != 2:
                raise ValueError(f"partition {spec!r}: an asymmetric cut has two groups, A>B")
            kind = "oneway"
        else:
            shares = tuple(float(x) for x in body.split("/"))
            if len(shares) < 2:
                raise ValueError(
                    f"partition {spec!r}: a split needs two or more groups, e.g. 50/50"
                )
            kind = "split"
        if any(s <= 0 for s in shares):
            raise ValueError(f"partition {spec!r}: group shares must be positive")
        return cls(kind, start, end, shares, None, spec)


@dataclass
class SimConfig:
    seed: int = 1
    nodes: int = 20
    agents: int = 40
    hours: float = 1.0
    # network faults
    latency: float = 0.05
    jitter: float = 0.02
    loss: float = 0.0
    dup: float = 0.0
    reorder: bool = False
    partitions: list = field(default_factory=list)  # Partition
    churn: float = 0.0  # churn events per node per simulated hour
    skew: float = 0.0  # each node's clock is off by up to +-skew seconds
    rogue: int = 0
    rogue_modes: tuple = ("skip_preflight", "forge_budget", "wrong_cost", "fork")
    byzantine: int = 0  # nodes that misbehave on the wire (sims/byzantine.py), never
    # node 0 and never a rogue node
    transport: str = "sim"  # or "libp2p": real hosts on 127.0.0.1 in real time (sims/realnet)
    # the network's rules. membrane "open" is the DNA's own default, so a run asks for invites
    # only when told (sybil needs "invite": an open network admits anyone); window: the DNA's
    # window_s (None: its default, a day, which no run of a few simulated hours lives through)
    membrane: str = "open"
    window: float | None = None
    # node timing knobs (simulated seconds)
    r: int = 3
    gossip_interval: float = 60.0
    publish_interval: float = 5.0
    request_timeout: float = 5.0
    # workload
    actions_per_agent_hour: float = 4.0
    grants_per_hour: float = 6.0
    # heavy honest agents write with defer=True: a write refused for lack of RU waits in its
    # node's deferral queue for the window (or a grant) instead (off: the workload of before)
    defer: bool = False
    # budgets as authorizers (sims/economy.py): mints, funds, cards, paid refines, holds and
    # revokes beside the workload, and the ledger's invariants checked (off: as before)
    economy: bool = False
    economy_per_hour: float = 120.0  # economy steps an hour, over the whole network
    # governance (sims/governance.py): proposals, votes, endorsements, grants and token spends
    # on a DNA with a second resource and agents voting; it runs in the economy, so it turns
    # that on too (off: as before)
    governance: bool = False
    governance_per_hour: float = 150.0
    warmup: float = 120.0  # before the workload starts: nodes join and learn peers
    deadline: float = 900.0  # liveness phase: must converge within this (simulated seconds)
    check_interval: float = 1.0  # invariant checks and convergence sampling
    audit_every: float = 60.0  # a sampled re-derivation of held chains
    audit_sample: int = 8
    strict_op_authorities: bool = True  # False: only the author-key authorities must hold a write
    store_root: str | None = None  # parent directory of the per-run store tempdir
    progress: bool = False
    plot: str | None = None

    def __post_init__(self) -> None:
        """Refuse what would run as something else than asked (ValueError)."""
        self.rogue_modes = adversarial.check(self.rogue_modes)
        if not self.rogue_modes:
            raise ValueError("rogue_modes is empty; known modes: " + ", ".join(adversarial.KNOWN))
        if self.membrane not in MEMBRANES:
            raise ValueError(f"membrane is one of {', '.join(MEMBRANES)}, not {self.membrane!r}")
        if "sybil" in self.rogue_modes and self.rogue and self.membrane != "invite":
            raise ValueError(
                "rogue mode sybil needs membrane 'invite' (an open network admits every agent)"
            )
        if self.window is not None and (self.window < 1 or self.window != int(self.window)):
            raise ValueError(f"window is a whole number of seconds >= 1, not {self.window!r}")
        if self.governance:
            self.economy = True

    def dna_rules(self) -> dict:
        """The rules node 0 makes the network with (`dna={...}`)."""
        rules: dict = {}
        if self.membrane != "open":
            rules["membrane"] = self.membrane
        if self.window is not None:
            rules["window_s"] = int(self.window)
        if self.governance:
            rules.update(GOVERNANCE_DNA)
        return rules

    @property
    def sim_seconds(self) -> float:
        return self.hours * 3600.0

    def replay_command(self) -> str:
        parts = [
            "budgetnode sim",
            f"--seed {self.seed}",
            f"--nodes {self.nodes}",
            f"--agents {self.agents}",
            f"--hours {self.hours:g}",
            f"--latency {self.latency * 1000:g}ms",
            f"--jitter {self.jitter * 1000:g}ms",
        ]
        if self.loss:
            parts.append(f"--loss {self.loss:g}")
        if self.dup:
            parts.append(f"--dup {self.dup:g}")
        if self.reorder:
            parts.append("--reorder")
        for p in self.partitions:
            parts.append(f"--partition {shlex.quote(p.spec)}")  # 30>70@... is a redirect
        if self.churn:
            parts.append(f"--churn {self.churn:g}")
        if self.skew:
            parts.append(f"--skew {self.skew:g}s")
        if self.rogue:
            parts.append(f"--rogue {self.rogue}")
        if self.byzantine:
            parts.append(f"--byzantine {self.byzantine}")
        defaults = SimConfig()
        for k in (
            "r",
            "gossip_interval",
            "publish_interval",
            "request_timeout",
            "actions_per_agent_hour",
            "grants_per_hour",
            "economy_per_hour",
            "governance_per_hour",
            "warmup",
            "deadline",
        ):
            if getattr(self, k) != getattr(defaults, k):
                parts.append(f"--{k.replace('_', '-')} {getattr(self, k):g}")
        if self.transport != defaults.transport:
            parts.append(f"--transport {self.transport}")
        if tuple(self.rogue_modes) != defaults.rogue_modes:
            parts.append(f"--rogue-modes {','.join(self.rogue_modes)}")
        if self.membrane != defaults.membrane:
            parts.append(f"--membrane {self.membrane}")
        if self.window is not None:
            parts.append(f"--window {self.window:g}s")
        if self.defer:
            parts.append("--defer")
        if self.economy and not self.governance:
            parts.append("--economy")
        if self.governance:
            parts.append("--governance")
        return " ".join(parts)

    def replace(self, **kw) -> SimConfig:
        return dataclasses.replace(self, **kw)


SCENARIO_KEYS = {f.name for f in dataclasses.fields(SimConfig)}
DURATION_KEYS = {
    "latency",
    "jitter",
    "skew",
    "gossip_interval",
    "publish_interval",
    "request_timeout",
    "warmup",
    "deadline",
    "window",
}


def load_scenario(path: str) -> dict:
    """A TOML file of SimConfig fields; durations may be strings ("50ms"), partitions a list of
    specs. Returns the overrides it names."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    data = data.get("sim", data)
    out = {}
    for k, v in data.items():
        k = k.replace("-", "_")
        if k == "partition":
            k = "partitions"
        if k not in SCENARIO_KEYS:
            raise ValueError(f"{path}: unknown scenario key {k!r}")
        if k in DURATION_KEYS:
            v = parse_duration(v)
        elif k == "partitions":
            v = [Partition.parse(p) for p in ([v] if isinstance(v, str) else v)]
        elif k == "rogue_modes":
            v = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        out[k] = v
    return out
