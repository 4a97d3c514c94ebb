"""The habits that keep the codebase honest, checked like any behaviour: the linter, the formatter
and the type checker each pass over the tree as pyproject.toml configures them (mypy strict on
node/core and the wire protocol). A failure shows the tool's own report."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # from the root, so each tool reads pyproject.toml and checks what it configures
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "args",
    [("ruff", "check", "."), ("ruff", "format", "--check", "."), ("mypy",)],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_passes(args: tuple[str, ...]) -> None:
    done = _run(*args)
    assert done.returncode == 0, (
        f"`{' '.join(args)}` exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )
