"""docs/OPERATIONS.md lists every error code an operator can meet, each with its cause and remedy:
every code in the registry (node/core/errors.py) has a row, and the table names no code the node
does not have."""

import os
import re

from node.core.errors import _registry

DOC = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "OPERATIONS.md"
)


def _rows():
    with open(DOC) as f:
        text = f.read()
    table = text[text.index("## Errors") :]
    rows = {}
    for line in table.splitlines():
        m = re.match(r"\| `(E_[A-Z_]+)` \| (.+) \| (.+) \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def test_every_error_code_has_a_cause_and_a_remedy_in_operations_md():
    rows = _rows()
    assert set(_registry()) - set(rows) == set(), "codes without a row in docs/OPERATIONS.md"
    assert set(rows) - set(_registry()) == set(), "rows for codes the node does not have"
    assert all(cause and remedy for cause, remedy in rows.values())
