"""A tiny, explicit builder of hand-made source chains for the validator tests.

It builds actions exactly the way node/cell.py does (same fields, same budget
record), but lets a test stop before appending, tamper with the action and re-sign
it with the author's real key, so a rejection proves the *rule* and not merely
the signature.
"""

from __future__ import annotations

import copy

from node.core import budget
from node.core.action import Signed, entry_bytes, grant_body
from node.core.crypto import SigningKey, blake2b_256
from node.core.dna import Dna
from node.core.encoding import encode
from node.core.witness import sign_witness

from zomes import APP

US = 1_000_000
DAY_US = 86_400 * US
T0_S = 1_730_678_400  # 2024-11-04T00:00:00Z, a round window start
T0 = T0_S * US


def key(n: int) -> SigningKey:
    """A deterministic key: seed = 32 copies of byte n."""
    return SigningKey(bytes([n]) * 32)


STEWARD = key(1)
ALICE = key(2)
BOB = key(3)
MALLORY = key(4)
DNA = Dna.for_app(APP, stewards=(STEWARD.public,))


def make_grant(
    grantee: bytes,
    amount_mru: int,
    *,
    signer: SigningKey = STEWARD,
    steward: bytes | None = None,
    dna: Dna = DNA,
    ts: int = T0,
    nonce: bytes = b"\x00" * 16,
) -> tuple[dict, bytes]:
    """A grant body and the signature over it (by `signer`, naming `steward`)."""
    g = grant_body(
        dna.hash, steward if steward is not None else signer.public, grantee, amount_mru, ts, nonce
    )
    return g, signer.sign(encode(g))


KNOWLEDGE = {"content": "water is wet", "tags": ["physics"]}


class Chain:
    """One author's chain under construction, plus the entries it created."""

    def __init__(self, k: SigningKey = ALICE, dna: Dna = DNA, ts: int = T0, app=APP):
        self.key = k
        self.dna = dna
        self.app = app
        g = Signed.sign(
            {
                "type": "genesis",
                "author": k.public,
                "seq": 0,
                "prev": None,
                "ts": ts,
                "dna": dna.hash,
            },
            k,
        )
        self.actions: list[Signed] = [g]
        self.entries: dict[bytes, bytes] = {}
        self.state = budget.initial(ts, dna)

    # -- what the next action would be (nothing is appended)
    @property
    def head(self) -> Signed:
        return self.actions[-1]

    def header(self, ts: int) -> dict:
        h = {
            "author": self.key.public,
            "seq": len(self.actions),
            "prev": self.head.hash,
            "ts": ts,
        }
        if budget.due(self.state, ts, self.dna):  # as a cell does: the steward witnesses it
            h["witness"] = sign_witness(STEWARD, self.dna.hash, self.key.public, self.head.hash, ts)
        return h

    def start(self, ts: int) -> budget.BudgetState:
        """The window an action at `ts` spends from (a due window is witnessed open at `ts`)."""
        return budget.roll(self.state, ts, self.dna)

    def create_action(self, entry_type: str, content: dict, ts: int) -> tuple[dict, bytes]:
        edef = self.app.entry_def(entry_type)
        body = entry_bytes(entry_type, content)
        cost = self.dna.cost(edef.op)
        b = budget.charge(self.start(ts), cost, ts, self.dna)
        a = {
            "type": "create",
            **self.header(ts),
            "entry_type": entry_type,
            "entry": blake2b_256(body),
            "budget": {
                "op": edef.op,
                "cost": cost,
                "ws": b.window_start_us,
                "rem": b.remaining_mru,
            },
        }
        return a, body

    def charge_action(self, count: int, ts: int, op: str = "recall_understandings") -> dict:
        cost = self.dna.cost(op, count)
        b = budget.charge(self.start(ts), cost, ts, self.dna)
        return {
            "type": "charge",
            **self.header(ts),
            "count": count,
            "budget": {"op": op, "cost": cost, "ws": b.window_start_us, "rem": b.remaining_mru},
        }

    def claim_action(self, grant: dict, sig: bytes, ts: int) -> dict:
        b, granted = budget.claim(self.start(ts), grant["amount"], self.dna)
        return {
            "type": "claim",
            **self.header(ts),
            "grant": grant,
            "grant_sig": sig,
            "budget": {
                "op": "claim_allocation",
                "cost": 0,
                "granted": granted,
                "ws": b.window_start_us,
                "rem": b.remaining_mru,
            },
        }

    # -- appending valid actions
    def append(self, action: dict, body: bytes | None = None) -> Signed:
        s = Signed.sign(action, self.key)
        rec = action["budget"]
        w = action.get("witness")
        start = self.state if w is None else budget.open_window(self.state, w["at"], self.dna)
        if action["type"] == "claim":
            self.state, _ = budget.claim(start, action["grant"]["amount"], self.dna)
        else:
            self.state = budget.charge(start, rec["cost"], action["ts"], self.dna)
        assert (self.state.window_start_us, self.state.remaining_mru) == (rec["ws"], rec["rem"])
        self.actions.append(s)
        if body is not None:
            self.entries[action["entry"]] = body
        return s

    def create(
        self, entry_type: str = "knowledge", content: dict | None = None, ts: int | None = None
    ) -> Signed:
        a, body = self.create_action(
            entry_type, KNOWLEDGE if content is None else content, self._ts(ts)
        )
        return self.append(a, body)

    def charge(self, count: int, ts: int | None = None) -> Signed:
        return self.append(self.charge_action(count, self._ts(ts)))

    def claim(self, grant: dict, sig: bytes, ts: int | None = None) -> Signed:
        return self.append(self.claim_action(grant, sig, self._ts(ts)))

    def _ts(self, ts):
        return self.head.ts + US if ts is None else ts

    # -- tampering helpers
    def signed(self, action: dict, k: SigningKey | None = None) -> Signed:
        """`action` properly signed by the author (or by `k`)."""
        return Signed.sign(action, k or self.key)

    def with_(self, extra: Signed) -> list[Signed]:
        return self.actions + [extra]


def tweak(action: dict, **budget_fields) -> dict:
    """A deep copy of `action` with some budget-record fields replaced."""
    a = copy.deepcopy(action)
    a["budget"].update(budget_fields)
    return a
