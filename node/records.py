"""Turning stored actions and entries into the plain dicts the SDK returns."""

from __future__ import annotations

from .core.action import Signed
from .core.app import App
from .core.crypto import to_text
from .core.encoding import decode


def record_dict(s: Signed, entry: bytes | None, app: App) -> dict:
    a = s.action
    rec = {
        "hash": to_text("action", s.hash),
        "author": to_text("agent", a["author"]),
        "seq": a["seq"],
        "timestamp_us": a["ts"],
        "type": a["type"],
        "budget": a.get("budget"),
    }
    if entry is not None:
        e = decode(entry)
        rec["entry_type"] = e["type"]
        rec["content"] = app.present(e["type"], e["content"])  # readable ids, as the app says
    return rec
