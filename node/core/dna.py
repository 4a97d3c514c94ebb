"""The network identity: its rules (costs, window, caps, stewards) and the hash that names it.

Two nodes with different DNA hashes are on different networks: a change to any
rule is a new network, so no peer can quietly run with cheaper costs. The cost table
comes from the application (`Dna.for_app`); the core knows no application.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .crypto import blake2b_256, from_text, to_text
from .encoding import PlainMap, encode
from .errors import InvalidInput, WrongNetwork

if TYPE_CHECKING:
    from .app import App
from .money import MRU_PER_RU as MRU_PER_RU  # re-exported: apps take it from here

MEMBRANES = ("open", "invite")
# what `dna={...}` may set for a new network (the cost table and integrity come from the app,
# the stewards from the network's creation)
RULES: dict[str, type] = {
    "name": str,
    "version": int,
    "window_s": int,
    "base_mru": int,
    "cap_mru": int,
    "max_results": int,
    "max_future_us": int,
    "membrane": str,
    "max_grants_per_window": int,
    "resources": dict,
    "max_ledger_actions_per_window": int,
    "governance": dict,
    "resource_costs": dict,
}
# a resource's name: "ru" always, and others the governance of a network adds
MAX_RESOURCES = 16
DEFAULT_MINT_LIMIT_MRU = 10_000 * 1000


# who votes on allocation proposals and how they resolve (node/core/governance.py): voters are
# "stewards", "agents" or a list of agent keys; the threshold is on the 0-1000 allocation score
GOVERNANCE0: dict[str, Any] = {
    "voters": "stewards",
    "quorum": 1,
    "threshold_milli": 500,
    "idle_windows": 7,
}


def _default_governance() -> dict[str, Any]:
    return dict(GOVERNANCE0)


def _default_resources() -> dict[str, dict[str, int]]:
    return {"ru": {"mint_limit": DEFAULT_MINT_LIMIT_MRU}}


@dataclass(frozen=True)
class Dna:
    name: str = "rose-forest"
    version: int = 1
    window_s: int = 86_400
    base_mru: int = 100 * MRU_PER_RU
    cap_mru: int = 200 * MRU_PER_RU
    costs: dict[str, int] = field(default_factory=dict)  # op -> milli-RU, from the app
    per_result: tuple[str, ...] = ()
    stewards: tuple[bytes, ...] = ()
    max_results: int = 1000  # bound on one recall, and so on one read charge
    max_future_us: int = 300_000_000  # authorities refuse actions stamped further ahead
    integrity: bytes = b""  # the app's integrity fingerprint (core.app.App.fingerprint)
    # "open": anyone may start an agent (unsuited to untrusted agents: each new agent brings a
    # fresh allowance); "invite": a genesis must carry a steward's single-use invite
    membrane: str = "open"
    # grants one agent's chain may claim in one window; None: no limit (a network made before
    # the rule, whose DNA does not name it: its hash, and so its identity, stays what it was)
    max_grants_per_window: int | None = 3
    # what budgets hold (integer units; "ru" in milli-RU), each with the most a steward may
    # mint of it in one of its windows
    resources: dict[str, dict[str, int]] = field(default_factory=_default_resources)
    max_ledger_actions_per_window: int = 256  # mint, fund, card, accept, revoke, hold, ...
    # what an op costs beyond its RU (the app's cost table): op -> {resource: units}, paid only
    # by a budget holding them (the allowance holds only RU); in the hash only when not empty,
    # so a network made without it keeps its identity
    resource_costs: dict[str, dict[str, int]] = field(default_factory=dict)
    # a network made before budgets, whose DNA names neither rule above: its hash (so its
    # identity) stays what it was, and nothing may be minted on it (mint_limit 0)
    before_budgets: bool = False
    governance: dict[str, Any] = field(default_factory=_default_governance)

    @classmethod
    def for_app(cls, app: App, **rules: Any) -> Dna:
        """A network running `app` (a core.app.App): its cost table and integrity fingerprint,
        and `rules` as given."""
        return cls(
            costs=dict(app.costs),
            per_result=tuple(app.per_result),
            integrity=app.fingerprint,
            **rules,
        )

    def __post_init__(self) -> None:
        if self.max_grants_per_window is not None and self.max_grants_per_window < 1:
            raise InvalidInput("max_grants_per_window is at least 1")
        if self.membrane not in MEMBRANES:
            raise InvalidInput(
                f"unknown membrane {self.membrane!r}; a membrane is one of {', '.join(MEMBRANES)}"
            )
        r = self.resources
        if (
            not isinstance(r, dict)
            or "ru" not in r
            or len(r) > MAX_RESOURCES
            or not all(
                isinstance(k, str)
                and 0 < len(k) <= 64
                and isinstance(v, dict)
                and set(v) == {"mint_limit"}
                and type(v["mint_limit"]) is int
                and 0 <= v["mint_limit"] < 1 << 53
                for k, v in r.items()
            )
        ):
            raise InvalidInput(
                'resources: a map of at most 16 names (with "ru") to {"mint_limit": units}'
            )
        if not 1 <= self.max_ledger_actions_per_window <= 1 << 20:
            raise InvalidInput("max_ledger_actions_per_window: 1 to 2^20")
        object.__setattr__(self, "governance", _governance(self.governance))
        self._check_resource_costs()

    def _check_resource_costs(self) -> None:
        rc = self.resource_costs
        if not isinstance(rc, dict):
            raise InvalidInput("resource_costs: a map of ops to {resource: units}")
        for op, c in rc.items():
            if op not in self.costs:
                raise InvalidInput(
                    f"resource_costs: unknown op {op!r} (the cost table has {sorted(self.costs)})"
                )
            if not isinstance(c, dict) or not c:
                raise InvalidInput(f"resource_costs {op}: a map of resources to units")
            for k, x in c.items():
                if k == "ru" or k not in self.resources:
                    raise InvalidInput(
                        f"resource_costs {op}: {k!r} is not one of the DNA's resources other "
                        f"than ru {sorted(set(self.resources) - {'ru'})} (RU costs are the app's)"
                    )
                if type(x) is not int or not 0 < x < 1 << 53:
                    raise InvalidInput(f"resource_costs {op}: {k} is a whole number of units > 0")

    @classmethod
    def rules(cls, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The rule overrides a new network may be made with (`dna={...}`), checked: any other
        key is refused, as the DNA names the network and a misspelt rule must not be ignored."""
        if not isinstance(overrides, Mapping):
            raise InvalidInput("dna overrides are a map of rule names to values")
        bad = sorted(set(overrides) - set(RULES))
        if bad:
            raise InvalidInput(f"unknown DNA rule(s) {bad}; rules: {', '.join(RULES)}")
        for k, v in overrides.items():
            if not isinstance(v, RULES[k]) or isinstance(v, bool):
                raise InvalidInput(f"DNA rule {k!r} is a {RULES[k].__name__}")
        out = dict(overrides)
        if "resources" in out and "ru" not in out["resources"]:  # "ru" is always there
            out["resources"] = {**_default_resources(), **out["resources"]}
        return out

    def check_app(self, app: App) -> None:
        """Refuse to run this network with `app` unless its integrity zomes are the ones the
        network was made with (so their costs and rules are the network's)."""
        if (
            app.fingerprint != self.integrity
            or dict(app.costs) != dict(self.costs)
            or tuple(app.per_result) != tuple(self.per_result)
        ):
            raise WrongNetwork(
                f"network {self.hash_text} runs other integrity zomes than this "
                f"node's app (fingerprint {self.integrity.hex()[:16]}, this app's "
                f"{app.fingerprint.hex()[:16]}): nodes with different validation "
                f"rules are on different networks"
            )

    def to_dict(self) -> PlainMap:
        d: PlainMap = {
            "name": self.name,
            "version": self.version,
            "window_s": self.window_s,
            "base_mru": self.base_mru,
            "cap_mru": self.cap_mru,
            "costs": dict(self.costs),
            "per_result": list(self.per_result),
            "stewards": list(self.stewards),
            "max_results": self.max_results,
            "max_future_us": self.max_future_us,
            "integrity": self.integrity,
            "membrane": self.membrane,
        }
        if self.max_grants_per_window is not None:
            d["max_grants_per_window"] = self.max_grants_per_window
        if not self.before_budgets:
            d["resources"] = {k: dict(v) for k, v in sorted(self.resources.items())}
            d["max_ledger_actions_per_window"] = self.max_ledger_actions_per_window
        if self.governance != GOVERNANCE0:  # the default is implied, so older hashes stand
            d["governance"] = dict(self.governance)
        if self.resource_costs:
            d["resource_costs"] = {
                op: dict(sorted(c.items())) for op, c in sorted(self.resource_costs.items())
            }
        return d

    @classmethod
    def from_dict(cls, d: PlainMap) -> Dna:
        if not isinstance(d.get("integrity"), bytes):
            raise ValueError("the DNA names no integrity fingerprint")
        return cls(
            name=d["name"],
            version=d["version"],
            window_s=d["window_s"],
            base_mru=d["base_mru"],
            cap_mru=d["cap_mru"],
            costs=dict(d["costs"]),
            per_result=tuple(d["per_result"]),
            stewards=tuple(d["stewards"]),
            max_results=d["max_results"],
            max_future_us=d["max_future_us"],
            integrity=d["integrity"],
            membrane=d["membrane"],
            max_grants_per_window=d.get("max_grants_per_window"),
            governance=dict(d.get("governance") or GOVERNANCE0),
            resource_costs={op: dict(c) for op, c in d.get("resource_costs", {}).items()},
            **(
                {
                    "resources": {k: dict(v) for k, v in d["resources"].items()},
                    "max_ledger_actions_per_window": d["max_ledger_actions_per_window"],
                }
                if "resources" in d
                else {"resources": {"ru": {"mint_limit": 0}}, "before_budgets": True}
            ),
        )

    def encoded(self) -> bytes:
        return encode(self.to_dict())

    @cached_property
    def hash(self) -> bytes:  # read on every message; a frozen DNA's hash never changes
        return blake2b_256(self.encoded())

    @property
    def hash_text(self) -> str:
        return to_text("dna", self.hash)

    @property
    def window_us(self) -> int:
        return self.window_s * 1_000_000

    def may_vote(self, agent: bytes) -> bool:
        """Whether `agent` votes on allocation proposals: "stewards" (the default), "agents"
        (every agent of the network: suited to an invite membrane), or the listed keys."""
        v = self.governance["voters"]
        if v == "agents":
            return True
        return agent in (self.stewards if v == "stewards" else v)

    def cost(self, op: str, count: int = 1) -> int:
        return self.costs[op] * (count if op in self.per_result else 1)

    def resource_cost(self, op: str, count: int = 1) -> dict[str, int]:
        """What `op` costs beyond its RU (`resource_costs`), for `count` results of a
        per-result op: empty for most ops."""
        n = count if op in self.per_result else 1
        return {k: x * n for k, x in sorted(self.resource_costs.get(op, {}).items())}


def _governance(g: Any) -> dict[str, Any]:
    """The governance rules, checked, with defaults for what `g` leaves out; voters may be
    given as agent ids (text), and are kept as keys."""
    if not isinstance(g, Mapping) or set(g) - set(GOVERNANCE0):
        raise InvalidInput(f"governance: a map of {', '.join(GOVERNANCE0)}")
    out = {**GOVERNANCE0, **g}
    v = out["voters"]
    if v not in ("stewards", "agents"):
        if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 256:
            raise InvalidInput(
                'governance voters: "stewards", "agents" or a list of 1-256 agent ids'
            )
        v = [from_text("agent", x) if isinstance(x, str) else x for x in v]
        if not all(isinstance(x, bytes) and len(x) == 32 for x in v):
            raise InvalidInput("governance voters: agent ids")
        out["voters"] = sorted(set(v))
    for k, lo, hi in (("quorum", 1, 256), ("threshold_milli", 0, 1000), ("idle_windows", 1, 1000)):
        x = out[k]
        if type(x) is not int or not lo <= x <= hi:
            raise InvalidInput(f"governance {k}: a whole number, {lo} to {hi}")
    return out
