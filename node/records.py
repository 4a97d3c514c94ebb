"""Turning stored actions and entries into the plain dicts the SDK returns."""
from __future__ import annotations

from .core.action import Signed
from .core.crypto import to_text
from .core.encoding import decode

# Which 32-byte fields of each entry type hold what, so reads show readable ids.
_ID_FIELDS = {
    "edge": {"from": "action", "to": "action"},
    "composed_memory": {"agent": "agent", "refs": "action"},
}


def public_content(entry_type: str, content: dict) -> dict:
    out = dict(content)
    for field, kind in _ID_FIELDS.get(entry_type, {}).items():
        v = out.get(field)
        out[field] = [to_text(kind, x) for x in v] if isinstance(v, list) else to_text(kind, v)
    if entry_type == "allocation":
        g = content["grant"]
        out = {"grantee": to_text("agent", g["grantee"]), "steward": to_text("agent", g["steward"]),
               "amount_ru": g["amount"] / 1000, "ts": g["ts"]}
    return out


def record_dict(s: Signed, entry: bytes | None) -> dict:
    a = s.action
    rec = {"hash": to_text("action", s.hash), "author": to_text("agent", a["author"]),
           "seq": a["seq"], "timestamp_us": a["ts"], "type": a["type"],
           "budget": a.get("budget")}
    if entry is not None:
        e = decode(entry)
        rec["entry_type"] = e["type"]
        rec["content"] = public_content(e["type"], e["content"])
    return rec
