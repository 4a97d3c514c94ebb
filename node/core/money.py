"""Money: integer milli-RU, and how an amount reads (no floats on the way)."""

from __future__ import annotations

MRU_PER_RU = 1000


def fmt_ru(mru: int, up: bool = False) -> str:
    """Two decimals without floats; `have` rounds down and `need` up so neither flatters."""
    centi = -(-mru // 10) if up else mru // 10
    sign = "-" if centi < 0 else ""
    centi = abs(centi)
    return f"{sign}{centi // 100}.{centi % 100:02d}"
