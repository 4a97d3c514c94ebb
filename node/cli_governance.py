"""`budgetnode proposals`, `vote`, `envelopes` and `rebalance`: governance from the command
line, on a store (--path) or a running node (--url), as node/cli.py does for budgets."""

from __future__ import annotations

import json

from .core.errors import InvalidInput

SORTS = ("priority", "roi", "market", "spend")
_SORT_KEY = {
    "priority": "priority_score",
    "roi": "roi_score",
    "market": "market_weight",
    "spend": "llm_tokens_spent",
}


async def _rows(args, what: str) -> list[dict]:
    cli = args.cli
    if cli._remote(args):
        from .app.client import NodeClient

        async with NodeClient.connect(args.url, token=cli._token(args)) as node:
            return await getattr(node, what)()
    async with cli._open(args) as node:
        views = node.governance.proposals() if what == "proposals" else node.governance.envelopes()
        return [v.to_dict() for v in views]


async def _proposals(args):
    rows = await _rows(args, "proposals")
    if args.state:
        rows = [r for r in rows if r["state"] == args.state]
    if args.json:
        args.cli._emit(rows, True)
        return
    print(f"{'proposal':<46} {'state':<9} {'score':>5} {'votes':>5}  entity / requested")
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        print(f"{r['id']:<46} {r['state']:<9} {score:>5} {len(r['votes']):>5}  {_entity(r)}")
        print(f"{'':<69}{_amounts(r['requested'])} -> granted {_amounts(r['granted']) or '-'}")


def sort_envelopes(rows: list[dict], by: str) -> list[dict]:
    """Highest first; an envelope without the number (no grant, nothing spent) last."""
    if by not in SORTS:
        raise InvalidInput(f"--sort is one of {', '.join(SORTS)}")
    k = _SORT_KEY[by]
    return sorted(rows, key=lambda r: (r[k] is None, -(r[k] or 0), _entity(r)))


async def _envelopes(args):
    rows = sort_envelopes(await _rows(args, "envelopes"), args.sort)
    if args.plot:
        from .plot import plot_envelopes

        plot_envelopes(
            [
                {
                    "entity": _entity(r),
                    "llm_tokens_spent": r["llm_tokens_spent"],
                    "roi": r["roi_score"],
                    "priority_score": r["priority_score"],
                }
                for r in rows
            ],
            args.plot,
        )
    if args.json:
        args.cli._emit(rows, True)
        return
    print(f"{'entity':<56} {'priority':>8} {'market':>7} {'roi':>9} {'tokens':>9} {'edges':>6}")
    for r in rows:
        pr = "-" if r["priority_score"] is None else f"{r['priority_score']:.3f}"
        roi = "-" if r["roi_score"] is None else f"{r['roi_score']:.3g}"
        print(
            f"{_entity(r):<56} {pr:>8} {r['market_weight']:>+7.3f} {roi:>9} "
            f"{r['llm_tokens_spent']:>9} {r['edges']:>6}"
        )
    if args.plot:
        print(f"plot: {args.plot}")


async def _vote(args):
    try:
        scores = json.loads(args.scores)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"--scores is not JSON: {e}") from None
    cli = args.cli
    payload = {"proposal_id": args.proposal, "decision": args.decision, "scores": scores}
    if cli._remote(args):
        from .app.client import connect

        async with connect(args.url, token=cli._token(args), agent=args.agent) as agent:
            cli._emit(await agent.call("governance", "vote", payload), args.json)
        return
    async with cli._open(args) as node:
        agent = await node.agent(args.agent)
        cli._emit(await agent.call("governance", "vote", payload), args.json)


async def _rebalance(args):
    cli = args.cli
    payload = {"dry_run": args.dry_run}
    if cli._remote(args):
        if not args.agent:
            raise InvalidInput("--url needs --agent: whose envelopes to rebalance")
        from .app.client import connect

        async with connect(args.url, token=cli._token(args), agent=args.agent) as agent:
            moves = await agent.call("governance", "rebalance", payload)
    else:
        async with cli._open(args) as node:
            agent = await node.agent(args.agent) if args.agent else node.steward
            if agent is None:
                raise InvalidInput("this node holds no steward: give --agent")
            moves = await agent.call("governance", "rebalance", payload)
    if args.json:
        cli._emit(moves, True)
        return
    for m in moves:
        status = f"  [{m['status']}]" if "status" in m else ""
        print(f"{m['reason']:<8} {m['from']} -> {m['to']}  {_amounts(m['amounts'])}{status}")
    print(f"{len(moves)} move(s){' planned' if args.dry_run else ''}")


def _entity(r: dict) -> str:
    return f"{r['entity_type']}:{r['entity_id']}"


def _amounts(a: dict) -> str:
    return ", ".join(f"{v:g} {k.upper() if k == 'ru' else k}" for k, v in a.items())


def add_parsers(sub, with_store, cli) -> None:
    """`cli`: the shared plumbing (its `_open`, `_remote`, `_token`, `_emit`), passed in so
    this module does not import node/cli.py, which imports it."""
    p = with_store(
        sub.add_parser("proposals", help="allocation proposals, their votes, scores and grants"),
        url=True,
    )
    p.add_argument(
        "--state", choices=("open", "approved", "rejected", "deferred", "granted"), default=None
    )
    p.set_defaults(run=_proposals, cli=cli)
    v = with_store(sub.add_parser("vote", help="vote on a proposal as an agent"), url=True)
    v.add_argument("--agent", required=True, help="the voting agent's id")
    v.add_argument("proposal", help="the proposal's id (ac…)")
    v.add_argument("decision", choices=("approve", "reject", "defer"))
    v.add_argument(
        "--scores",
        required=True,
        help='JSON: {"evidence": 0-1, "novelty": 0-1, "alignment": 0-1, "community": 0-1}',
    )
    v.set_defaults(run=_vote, cli=cli)
    e = with_store(
        sub.add_parser(
            "envelopes", help="entities' envelopes: budgets, priority, market weight, ROI"
        ),
        url=True,
    )
    e.add_argument("--sort", choices=SORTS, default="priority", help="highest first")
    e.add_argument("--plot", metavar="PNG", help="also draw ROI against LLM-token spend")
    e.set_defaults(run=_envelopes, cli=cli)
    r = with_store(
        sub.add_parser(
            "rebalance", help="move idle and low-ROI budgets to high-ROI envelopes (a steward)"
        ),
        url=True,
    )
    r.add_argument("--agent", help="whose funded envelopes (default: the node's steward)")
    r.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    r.set_defaults(run=_rebalance, cli=cli)
