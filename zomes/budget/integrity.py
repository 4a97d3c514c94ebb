"""budget integrity: a steward's record of each grant it signed."""
from node.core.app import EntryDef, need_keys
from node.core.errors import InvalidInput


def validate_allocation(c):
    need_keys(c, {"grant", "sig"})
    if not isinstance(c.get("grant"), dict) or not isinstance(c.get("sig"), bytes):
        raise InvalidInput("an allocation records a grant and its signature")


ENTRY_DEFS = [
    EntryDef("allocation", "allocate_budget", validate_allocation,
             lambda c: [("grant_to", c["grant"]["grantee"].hex())]),
]
