"""The network identity: its rules (costs, window, caps, stewards) and the hash that names it.

Two nodes with different DNA hashes are on different networks: a change to any
rule is a new network, so no peer can quietly run with cheaper costs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .crypto import blake2b_256, to_text
from .encoding import encode

MRU_PER_RU = 1000

ROSE_FOREST_COSTS = {
    # rose_forest
    "add_knowledge": 33_000,
    "link_edge": 3_000,
    "create_thought_credential": 10_000,
    # memory
    "transmit_understanding": 3_000,  # 1 transmit + 2 validate
    "recall_understandings": 100,     # per result returned
    "compose_memories": 5_000,
    "validate_triple": 2_000,
    # budget
    "allocate_budget": 0,
    "claim_allocation": 0,
}
PER_RESULT_OPS = ("recall_understandings",)


@dataclass(frozen=True)
class Dna:
    name: str = "rose-forest"
    version: int = 1
    window_s: int = 86_400
    base_mru: int = 100 * MRU_PER_RU
    cap_mru: int = 200 * MRU_PER_RU
    costs: dict = field(default_factory=lambda: dict(ROSE_FOREST_COSTS))
    per_result: tuple = PER_RESULT_OPS
    stewards: tuple = ()
    max_results: int = 1000          # bound on one recall, and so on one read charge
    max_future_us: int = 300_000_000  # authorities refuse actions stamped further ahead

    def to_dict(self) -> dict:
        return {
            "name": self.name, "version": self.version, "window_s": self.window_s,
            "base_mru": self.base_mru, "cap_mru": self.cap_mru, "costs": dict(self.costs),
            "per_result": list(self.per_result), "stewards": list(self.stewards),
            "max_results": self.max_results, "max_future_us": self.max_future_us,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Dna":
        return cls(name=d["name"], version=d["version"], window_s=d["window_s"],
                   base_mru=d["base_mru"], cap_mru=d["cap_mru"], costs=dict(d["costs"]),
                   per_result=tuple(d["per_result"]), stewards=tuple(d["stewards"]),
                   max_results=d["max_results"], max_future_us=d["max_future_us"])

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

    def cost(self, op: str, count: int = 1) -> int:
        return self.costs[op] * (count if op in self.per_result else 1)
