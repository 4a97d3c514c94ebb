"""A steward's node as time witness and invite issuer (the rules are core/witness.py).

The node holding a steward's key answers "what time is it, for this agent's next window?" by
signing its own clock, and issues invites. It signs each invite into one agent's genesis only,
remembering durably which agent used it before it answers, so a crash cannot let an invite
admit two agents (a retry for the same agent gets its witness again).
"""

from __future__ import annotations

from typing import Any

from .core.crypto import SigningKey, to_text
from .core.dna import Dna
from .core.errors import InvalidChain, InviteUsed, NotAuthorized
from .core.witness import check_invite, invite_text, make_invite, sign_witness
from .store import Store

SCHEMA = "CREATE TABLE IF NOT EXISTS invites_used(hash BLOB PRIMARY KEY, agent BLOB NOT NULL);"


class WitnessService:
    def __init__(self, key: SigningKey, dna: Dna, store: Store, now_us, randbytes):
        self.key = key
        self.dna = dna
        self.store = store
        self.now_us = now_us
        self.randbytes = randbytes
        store.create_tables(SCHEMA)

    def invite(self, note: str = "") -> str:
        """A single-use invite, as text to hand to the one who is to run the agent."""
        return invite_text(
            make_invite(self.key, self.dna.hash, self.randbytes(16), note, self.now_us())
        )

    async def witness(
        self, agent: bytes, prev: bytes | None, invite: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """This steward's signed clock for `agent`'s action after `prev` (None: its genesis,
        which `invite`, issued by this steward, admits)."""
        ih = None
        if invite is not None:
            if prev is not None:
                raise NotAuthorized("an invite admits a genesis only")
            try:
                issuer, ih = check_invite(invite, self.dna)
            except InvalidChain as e:
                raise NotAuthorized(f"invite refused: {e}") from None
            if issuer != self.key.public:
                raise NotAuthorized("the invite was issued by another steward")
            await self._use(ih, agent)
        return sign_witness(self.key, self.dna.hash, agent, prev, self.now_us(), ih)

    async def _use(self, ih: bytes, agent: bytes) -> None:
        def use(db) -> bytes:
            row = db.execute("SELECT agent FROM invites_used WHERE hash=?", (ih,)).fetchone()
            if row is None:
                db.execute("INSERT INTO invites_used VALUES (?,?)", (ih, agent))
                return agent
            return bytes(row[0])

        user = await self.store.write(use)
        if user != agent:
            raise InviteUsed(f"this invite already admitted {to_text('agent', user)}")
