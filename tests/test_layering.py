"""The layering ARCHITECTURE.md describes: the core is pure and knows no application, the node
runtime imports no application and no simulator, and no node module needs another to be
imported first (no import cycles)."""

import ast
import os
import subprocess
import sys

from node.core import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = os.path.join(ROOT, "node")


def _modules(pkg_dir: str, pkg: str) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(pkg_dir):
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out.append(rel[: -len(".__init__")] if rel.endswith(".__init__") else rel)
    return sorted(m for m in out if m == pkg or m.startswith(pkg + "."))


NODE_MODULES = _modules(NODE, "node")
CORE_MODULES = [m for m in NODE_MODULES if m == "node.core" or m.startswith("node.core.")]


def _run(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _failures(codes: dict, at_once: int = 8) -> dict:
    """Run each snippet in its own fresh interpreter (at most `at_once` at a time); the output
    of those that failed."""
    failed, items = {}, list(codes.items())
    for i in range(0, len(items), at_once):
        procs = {name: _run(code) for name, code in items[i : i + at_once]}
        for name, p in procs.items():
            out = p.communicate(timeout=120)[0]
            if p.returncode != 0:
                failed[name] = out
    return failed


def test_the_module_list_is_the_package():
    assert {
        "node.core",
        "node.core.validate",
        "node.core.rebalance",
        "node.local_node",
        "node.net.node",
        "node.app.wire",
        "node.cli",
        "node.agent_api",
    } <= set(NODE_MODULES)


def test_every_node_module_imports_alone_in_a_fresh_interpreter():
    """A cycle shows up as an ImportError when the cycle's member is imported first."""
    assert _failures({m: f"import {m}" for m in NODE_MODULES}) == {}


def test_the_core_pulls_in_no_application_runtime_or_io():
    banned = ("zomes", "sims", "trio", "sqlite3", "libp2p")
    check = (
        "import sys, importlib; importlib.import_module(%r); "
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in %r); assert not bad, bad"
    )
    assert len(CORE_MODULES) == 18  # node.core and its seventeen modules
    assert _failures({m: check % (m, banned) for m in CORE_MODULES}) == {}


def test_the_runtime_imports_no_application_until_a_node_opens_and_no_simulator():
    code = (
        "import sys\n"
        "import node.local_node, node.net.node, node.net.cluster, node.app.server, node.sdk\n"
        "import node.up, node.demo\n"
        "from node.cli import _parser\n"
        "_parser(['status', '--path', 'x']).parse_args(['status', '--path', 'x'])\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('zomes', 'sims'))\n"
        "assert not bad, bad\n"
    )
    assert _failures({"runtime": code}) == {}


def test_only_the_sim_subcommand_imports_the_simulator():
    code = (
        "import sys\n"
        "from node.cli import _parser\n"
        "_parser(['sim']).parse_args(['sim', '--seed', '3'])\n"
        "assert 'sims.cli' in sys.modules\n"
    )
    assert _failures({"sim": code}) == {}


def _imports(path: str, module: str) -> set[str]:
    """Every node module `module` imports, at any depth in its code (lazy imports count)."""
    pkg = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    out = set()
    for n in ast.walk(ast.parse(open(path).read())):
        if isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - n.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in n.names]
            out |= {x for x in names if x in NODE_MODULES} or {base}
        elif isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
    return {m for m in out if m in NODE_MODULES and m != module}


def test_node_modules_import_each_other_without_cycles_even_lazily():
    graph = {}
    for m in NODE_MODULES:
        rel = m.replace(".", os.sep)
        path = (
            os.path.join(ROOT, rel, "__init__.py")
            if os.path.isdir(os.path.join(ROOT, rel))
            else os.path.join(ROOT, rel + ".py")
        )
        graph[m] = _imports(path, m)
    assert graph["node.net.node"] >= {"node.local_node"}  # the walk sees imports
    # Package __init__ files import nothing here, so a package edge is not a cycle through it.
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in NODE_MODULES:
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_one_error_registry_knows_every_error_class_by_its_code():
    code = (
        "import importlib, pkgutil, sys\n"
        f"mods = {NODE_MODULES!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "from node.core.errors import BudgetError, error_class\n"
        "todo, seen = [BudgetError], []\n"
        "while todo:\n"
        "    c = todo.pop(); seen.append(c); todo.extend(c.__subclasses__())\n"
        "concrete = [c for c in seen if not c.__dict__.get('abstract')]\n"
        "bad = [c for c in concrete if error_class(c.code) is not c]\n"
        "assert not bad, bad\n"
    )
    assert _failures({"registry": code}) == {}
    assert errors.error_class("E_INSUFFICIENT_RU").__name__ == "InsufficientRU"
    assert errors.error_class("E_NO_SUCH_CODE") is None
