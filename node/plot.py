"""`budgetnode envelopes --plot OUT.png`: each envelope's ROI against its LLM-token spend.

matplotlib is optional (the `plot` extra) and imported only when a plot is drawn, on its Agg
canvas: no display, and no change to pyplot's global backend for whoever else uses it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .core.errors import InvalidInput, Unsupported

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_ROWS = 4096  # the rebalancing planner's bound on budgets, so on envelopes too
MAX_LABELS = 40  # past this many points, names would hide the points: the best ROI are named
LABEL_CHARS = 16


def plot_envelopes(rows: Sequence[Mapping[str, Any]], path: str) -> Figure:
    """Write a PNG scatter to `path`: one point per envelope, x its LLM-token spend (symlog, so
    0 has a place), y its ROI (link edges per token), the size its priority score (0 to 1; None
    draws the smallest). An envelope whose ROI is None (nothing spent yet) is drawn apart, as a
    hollow grey marker on y = 0, so it is neither lost nor taken for a zero ROI. Each row:
    `{"entity": str, "llm_tokens_spent": int, "roi": float | None, "priority_score": float |
    None}`. Returns the figure (its first axes holds the ROI points' collection, then the
    None-ROI ones')."""
    parsed = _rows(rows)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise Unsupported(
            "plotting envelopes needs matplotlib: pip install 'budgetnode[plot]'"
        ) from None
    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    scored = [(r, r[2]) for r in parsed if r[2] is not None]
    unscored = [r for r in parsed if r[2] is None]
    ax.scatter(
        [r[1] for r, _ in scored],
        [roi for _, roi in scored],
        s=[_size(r[3]) for r, _ in scored],
        color="tab:blue",
        alpha=0.7,
        label="ROI",
    )
    ax.scatter(
        [r[1] for r in unscored],
        [0.0] * len(unscored),
        s=[_size(r[3]) for r in unscored],
        facecolors="none",
        edgecolors="grey",
        label="no ROI yet",
    )
    named = [r for r, _ in sorted(scored, key=lambda s: -s[1])[:MAX_LABELS]]
    for entity, x, y, _ in named + unscored[: MAX_LABELS - len(named)]:
        ax.annotate(entity[:LABEL_CHARS], (x, y or 0.0), fontsize=7, alpha=0.8)
    ax.set_xscale("symlog")
    ax.set_xlabel("LLM tokens spent")
    ax.set_ylabel("ROI (link edges per LLM token)")
    ax.set_title(f"envelopes: ROI against spend ({len(parsed)})")
    if parsed:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=110)
    except OSError as e:
        raise InvalidInput(f"cannot write the plot to {path!r}: {e.strerror}") from None
    return fig


def _size(priority: float | None) -> float:
    return 20.0 + 180.0 * (priority or 0.0)


def _rows(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, float | None, float | None]]:
    """The rows as (entity, spend, roi, priority), each field checked."""
    if not isinstance(rows, Sequence) or len(rows) > MAX_ROWS:
        raise InvalidInput(f"a plot takes a list of at most {MAX_ROWS} envelope rows")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise InvalidInput(f"row {i}: a map of entity, llm_tokens_spent, roi, priority_score")
        entity, spent = r.get("entity"), r.get("llm_tokens_spent")
        if not isinstance(entity, str) or not entity:
            raise InvalidInput(f"row {i}: entity is a non-empty string")
        if type(spent) is not int or spent < 0:
            raise InvalidInput(f"row {i}: llm_tokens_spent is a whole number, 0 or more")
        roi = _number(r.get("roi"), f"row {i}: roi", math.inf)
        priority = _number(r.get("priority_score"), f"row {i}: priority_score", 1.0)
        out.append((entity, spent, roi, priority))
    return out


def _number(v: object, what: str, hi: float) -> float | None:
    if v is None:
        return None
    f = float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else math.nan
    if not 0 <= f <= hi or f == math.inf:
        raise InvalidInput(f"{what} is None or a finite number from 0 to {hi}")
    return f
