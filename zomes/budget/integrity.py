"""budget integrity: a steward's record of each grant it signed."""

from node.core.app import EntryDef, IntegrityZome, need_keys
from node.core.crypto import to_text
from node.core.dna import MRU_PER_RU
from node.core.errors import InvalidInput


def validate_allocation(c):
    need_keys(c, {"grant", "sig"})
    if not isinstance(c.get("grant"), dict) or not isinstance(c.get("sig"), bytes):
        raise InvalidInput("an allocation records a grant and its signature")


def present_allocation(c):
    g = c["grant"]
    return {
        "grantee": to_text("agent", g["grantee"]),
        "steward": to_text("agent", g["steward"]),
        "amount_ru": g["amount"] / MRU_PER_RU,
        "ts": g["ts"],
    }


ZOME = IntegrityZome(
    "budget",
    rules_version=1,
    entry_defs=(
        # Free because only a steward may write it (the validator refuses anyone else's).
        EntryDef(
            "allocation",
            "allocate_budget",
            validate_allocation,
            lambda c: [("grant_to", c["grant"]["grantee"].hex())],
            keys=("grant_to",),
            steward_only=True,
            present=present_allocation,
        ),
    ),
    costs={"allocate_budget": 0, "claim_allocation": 0},
    grant_entry="allocation",
    claim_op="claim_allocation",
)
