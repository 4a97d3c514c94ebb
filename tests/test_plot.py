"""`budgetnode envelopes --plot`: node/plot.py draws one point per envelope into a real PNG, keeps
envelopes without an ROI apart from those with a zero ROI, and refuses bad rows."""

from __future__ import annotations

import struct
import sys
from fractions import Fraction

import pytest

from node.core.errors import InvalidInput, Unsupported
from node.plot import MAX_LABELS, MAX_ROWS, plot_envelopes

ROWS = [
    {"entity": "record:hyp-1", "llm_tokens_spent": 120_000, "roi": 0.004, "priority_score": 0.8},
    {"entity": "record:hyp-2", "llm_tokens_spent": 40_000, "roi": 0.0, "priority_score": None},
    {
        "entity": "agent:alice",
        "llm_tokens_spent": 9_000,
        "roi": Fraction(1, 300),
        "priority_score": 0.2,
    },
    {"entity": "record:new", "llm_tokens_spent": 0, "roi": None, "priority_score": 0.5},
]


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def test_each_envelope_is_one_point_and_those_without_roi_are_drawn_apart(tmp_path):
    out = tmp_path / "envelopes.png"
    fig = plot_envelopes(ROWS, str(out))
    w, h = png_size(out)
    assert (w, h) == (880, 550)  # 8 x 5 inches at 110 dpi
    scored, unscored = fig.axes[0].collections
    assert scored.get_offsets().tolist() == [[120_000, 0.004], [40_000, 0.0], [9_000, 1 / 300]]
    assert unscored.get_offsets().tolist() == [[0, 0.0]]
    assert list(scored.get_sizes()) == [164.0, 20.0, 56.0]  # 20 + 180 x priority
    labels = sorted(t.get_text() for t in fig.axes[0].texts)
    assert labels == sorted(r["entity"] for r in ROWS)


def test_past_the_label_bound_only_the_best_roi_are_named(tmp_path):
    rows = [
        {"entity": f"e{i}", "llm_tokens_spent": 1000 + i, "roi": i / 1000, "priority_score": None}
        for i in range(MAX_LABELS + 10)
    ]
    fig = plot_envelopes(rows, str(tmp_path / "many.png"))
    assert len(fig.axes[0].collections[0].get_offsets()) == MAX_LABELS + 10
    named = {t.get_text() for t in fig.axes[0].texts}
    assert named == {f"e{i}" for i in range(10, MAX_LABELS + 10)}


def test_no_rows_still_makes_a_picture(tmp_path):
    out = tmp_path / "empty.png"
    fig = plot_envelopes([], str(out))
    assert png_size(out) == (880, 550)
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [0, 0]


@pytest.mark.parametrize(
    "row,match",
    [
        ({"entity": "", "llm_tokens_spent": 1, "roi": 0.1}, "entity"),
        ({"entity": "a", "llm_tokens_spent": -1, "roi": 0.1}, "llm_tokens_spent"),
        ({"entity": "a", "llm_tokens_spent": 1.0, "roi": 0.1}, "llm_tokens_spent"),
        ({"entity": "a", "llm_tokens_spent": 1, "roi": float("nan")}, "roi"),
        ({"entity": "a", "llm_tokens_spent": 1, "roi": "high"}, "roi"),
        ({"entity": "a", "llm_tokens_spent": 1, "roi": 0.1, "priority_score": 1.5}, "priority"),
        ("a row", "a map"),
    ],
)
def test_a_bad_row_is_refused_and_nothing_is_written(tmp_path, row, match):
    out = tmp_path / "x.png"
    with pytest.raises(InvalidInput, match=match):
        plot_envelopes([row], str(out))
    assert not out.exists()


def test_too_many_rows_are_refused(tmp_path):
    row = {"entity": "a", "llm_tokens_spent": 1, "roi": 0.1, "priority_score": None}
    with pytest.raises(InvalidInput, match="at most 4096"):
        plot_envelopes([row] * (MAX_ROWS + 1), str(tmp_path / "x.png"))


def test_without_matplotlib_the_error_says_what_to_install(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)  # put back when the test ends
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any import of it fails
    with pytest.raises(Unsupported, match=r"pip install 'budgetnode\[plot\]'"):
        plot_envelopes(ROWS, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
