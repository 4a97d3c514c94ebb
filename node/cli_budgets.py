"""`budgetnode budgets` and `lineage`: the budgets a node's chains hold, as a table, a tree or
JSON, and a record's steps back to its mint, on a store (--path) or a running node (--url)."""

from __future__ import annotations


async def _budgets(args):
    if args.cli._remote(args):
        from .app.client import NodeClient

        async with NodeClient.connect(args.url, token=args.cli._token(args)) as node:
            rows = await node.budgets()
    else:
        async with args.cli._open(args) as node:
            rows = [v.to_dict() for v in node.budgets.all_held()]
    rows = [
        {k: r[k] for k in ("id", "name", "kind", "holder", "parent", "stage", "void", "balances")}
        for r in rows
    ]
    if args.json:
        args.cli._emit(rows, True)
        return
    if args.tree:
        print(budget_tree(rows))
        return
    print(f"{'budget':<46} {'kind':<6} {'stage':<8} {'available':>10} {'spent':>8}  name")
    for r in rows:
        b = r["balances"].get("ru", {})
        void = " (void)" if r["void"] else ""
        print(
            f"{r['id']:<46} {r['kind']:<6} {r['stage']:<8} {b.get('available', 0):>10.2f} "
            f"{b.get('spent', 0):>8.2f}  {r['name']}{void}"
        )


def budget_tree(rows: list[dict]) -> str:
    """The budgets as a tree drawn with box characters: each under its parent (one not held
    on this node is drawn as a root), with its RU balances and stage."""
    by_parent: dict = {}
    ids = {r["id"] for r in rows}
    for r in rows:
        by_parent.setdefault(r["parent"] if r["parent"] in ids else None, []).append(r)
    lines: list[str] = []

    def draw(r, prefix: str, last: bool, top: bool) -> None:
        b = r["balances"].get("ru", {})
        label = (
            f"{r['name'] or r['kind']} {r['id'][:12]}… [{r['kind']}, {r['stage']}"
            f"{', void' if r['void'] else ''}] available {b.get('available', 0):.2f} RU, "
            f"spent {b.get('spent', 0):.2f}, reserved {b.get('reserved', 0):.2f}, "
            f"pending {b.get('pending', 0):.2f}"
        )
        lines.append(label if top else prefix + ("└─ " if last else "├─ ") + label)
        kids = by_parent.get(r["id"], [])
        for i, k in enumerate(kids):
            draw(k, "" if top else prefix + ("   " if last else "│  "), i == len(kids) - 1, False)

    for r in by_parent.get(None, []):
        draw(r, "", True, True)
    return "\n".join(lines) if lines else "(no budgets)"


async def _lineage(args):
    if args.cli._remote(args):
        from .app.client import NodeClient

        async with NodeClient.connect(args.url, token=args.cli._token(args)) as node:
            steps = await node.lineage(args.hash)
    else:
        from .core.crypto import from_text

        async with args.cli._open(args) as node:
            steps = node.budgets.lineage(from_text("action", args.hash))
    if args.json:
        args.cli._emit(steps, True)
        return
    for i, s in enumerate(steps):
        amounts = ", ".join(
            f"{v:g} {k.upper() if k == 'ru' else k}" for k, v in s["amounts"].items()
        )
        print(f"{i:>2}. {s['kind']:<7} {s['hash']}  by {s['signer']}")
        print(f"    budget {s['budget']}  {amounts or '-'}  ({s['rule']})")


def add_parsers(sub, with_store, cli) -> None:
    """`cli`: the shared plumbing (its `_open`, `_remote`, `_token`, `_emit`), passed in so
    this module does not import node/cli.py, which imports it."""
    b = with_store(
        sub.add_parser("budgets", help="the budgets, cards and wallets the node's agents hold"),
        url=True,
    )
    b.add_argument("--tree", action="store_true", help="draw them as a funding tree")
    b.set_defaults(run=_budgets, cli=cli)
    ln = with_store(
        sub.add_parser("lineage", help="a record's steps back to the mint that paid for it"),
        url=True,
    )
    ln.add_argument("hash", help="the record's action id (ac…)")
    ln.set_defaults(run=_lineage, cli=cli)
