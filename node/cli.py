"""The `budgetnode` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

import trio

from .core.errors import BudgetError, InvalidInput, NotAuthorized, NotFound
from .errgroups import unwrap_single_errors
from .store import store_path

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _jsonable(v):
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _emit(value, as_json: bool) -> None:
    if as_json or not isinstance(value, str):
        print(json.dumps(_jsonable(value), indent=None if as_json else 2, sort_keys=True))
    else:
        print(value)


def _open(args, create: bool = False):
    from .sdk import LocalNode

    if not create and not os.path.exists(store_path(args.path)):
        raise NotFound(
            f"no node store at {args.path!r} (create one with: budgetnode init --path DIR)"
        )
    return LocalNode.open(path=args.path, durability=args.durability, dna=_rules(args))


def _rules(args) -> dict | None:
    """The rules `init` was asked to make the network with (None: the defaults, or whatever
    network the store holds): `--dna FILE.toml`, and `--membrane` over it."""
    rules = {} if getattr(args, "dna", None) is None else _dna_file(args.dna)
    membrane = getattr(args, "membrane", None)
    if membrane is not None:
        if rules.get("membrane", membrane) != membrane:
            raise InvalidInput(f"--membrane {membrane} and {args.dna}'s {rules['membrane']!r}")
        rules["membrane"] = membrane
    return rules or None


def _dna_file(path: str) -> dict:
    """A TOML file of DNA rules (node/core/dna.py RULES), checked as `dna={...}` is."""
    import tomllib

    from .apps import resolve
    from .core.dna import Dna

    try:
        with open(path, "rb") as f:
            rules = tomllib.load(f)
    except OSError as e:
        raise InvalidInput(f"--dna {path}: cannot be read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"--dna {path}: not TOML ({e})") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"--dna {path}: not UTF-8 text") from None
    try:
        Dna.for_app(resolve(None), **Dna.rules(rules))  # each value checked, nothing made yet
        return rules
    except InvalidInput as e:
        raise InvalidInput(f"--dna {path}: {e.message}") from None


async def _verify(args):
    from .verifier import verify_path

    _emit(verify_path(args.path), args.json)


async def _init(args):
    async with _open(args, create=True) as node:
        _emit(
            {
                "dna": node.dna.hash_text,
                "path": node.directory,
                "steward": node.steward.agent_id if node.steward else None,
            },
            args.json,
        )


async def _new_agent(args):
    if _remote(args):
        from .app.client import connect

        async with connect(args.url, token=_token(args), invite=args.invite) as a:
            _emit(a.agent_id if not args.json else {"agent_id": a.agent_id}, args.json)
        return
    async with _open(args) as node:
        a = await node.new_agent(invite=args.invite)
        _emit(a.agent_id if not args.json else {"agent_id": a.agent_id}, args.json)


async def _invite(args):
    """A steward's single-use invite, as text (the node must hold a steward's key)."""
    if _remote(args):
        from .app.client import NodeClient, connect

        async with NodeClient.connect(args.url, token=_token(args)) as node:
            st = await node.status()
        steward = next((a["agent_id"] for a in st["agents"] if a["steward"]), None)
        if steward is None:
            raise NotAuthorized("this node holds no steward of its network: it cannot invite")
        async with connect(args.url, token=_token(args), agent=steward) as a:
            text = await a.invite(args.note)
    else:
        async with _open(args) as node:
            if node.steward is None:
                raise NotAuthorized("this node holds no steward of its network: it cannot invite")
            text = await node.steward.invite(args.note)
    _emit(text if not args.json else {"invite": text}, args.json)


def _remote(args):
    """--url given: the node's app socket; else the store at --path."""
    if args.url and args.path:
        raise InvalidInput("give --url or --path, not both")
    if not args.url and not args.path:
        raise InvalidInput("give --path DIR (a store) or --url URL (a running node)")
    return bool(args.url)


def _token(args) -> str:
    from .app.client import TOKEN_ENV

    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise InvalidInput(f"--url needs the node's token (--token, or {TOKEN_ENV})")
    return token


async def _status(args):
    if _remote(args):
        from .app.client import NodeClient

        async with NodeClient.connect(args.url, token=_token(args)) as node:
            st = await node.status()
    else:
        async with _open(args) as node:
            st = node.status()
    if args.json:
        _emit(st, True)
        return
    print(f"network {st['dna']}   store {st['path']}")
    print(f"{'agent':<48} {'remaining RU':>12} {'used RU':>8} {'resets_at':>11}  actions")
    for a in st["agents"]:
        tag = " (steward)" if a["steward"] else ""
        print(
            f"{a['agent_id']:<48} {a['remaining_ru']:>12.2f} {a['used_ru']:>8.2f} "
            f"{a['resets_at']:>11}  {a['seq'] + 1}{tag}"
        )
    if "peers" in st:
        pending = st["ops_pending"]
        print(f"node {st.get('node')}   peer id {st.get('peer_id')}")
        print(
            f"peers {len(st['peers'])}   ops pending {pending['unpublished'] + pending['limbo']} "
            f"(unpublished {pending['unpublished']}, limbo {pending['limbo']})   "
            f"warrants {len(st['warrants'])}"
        )
        for p in st["peers"]:
            print(f"  peer    {p}")
        for w in st["warrants"]:
            print(
                f"  warrant {w['agent_id']}  {w['kind']}/{w['reason']} at seq {w['seq']}  "
                f"by {w['issuer']}"
            )


async def _call(args):
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"the payload is not JSON: {e}") from None
    if args.defer and args.check:
        raise InvalidInput("give --defer or --check, not both")
    if _remote(args):
        from .app.client import connect

        async with connect(args.url, token=_token(args), agent=args.agent) as agent:
            await _call_as(agent, args, payload)
        return
    async with _open(args) as node:
        await _call_as(await node.agent(args.agent), args, payload)


async def _call_as(agent, args, payload) -> None:
    """`--check`: the dry run's Admission, and the refusal it foresees as the exit status;
    `--defer`: a write refused only for lack of RU is queued (a Deferred is printed)."""
    if not args.check:
        _emit(await agent.call(args.zome, args.fn, payload, defer=args.defer), args.json)
        return
    adm = await agent.check(args.zome, args.fn, payload)
    _emit(adm, True)
    if not adm.ok:
        e = BudgetError(adm.message)
        e.code = adm.code
        raise e


def _read_audit(args) -> list[dict]:
    from .audit import AuditLog
    from .store import Store

    if not os.path.exists(store_path(args.path)):
        raise NotFound(f"no node store at {args.path!r}")
    store = Store(store_path(args.path), args.durability)
    try:
        return AuditLog(store).read(args.agent, args.since)
    finally:
        store.close()


async def _audit(args):
    """The node's audit log: refusals, deferrals and their outcomes, low-budget alerts."""
    if _remote(args):
        from .app.client import NodeClient

        async with NodeClient.connect(args.url, token=_token(args)) as node:
            events = await node.audit(args.agent, args.since)
    else:
        events = _read_audit(args)
    if args.json:
        _emit(events, True)
        return
    for ev in events:
        what = ev.get("code") or ev.get("hash") or ("cancelled" if ev.get("cancelled") else "")
        need = f" need {ev['need']:.2f} have {ev['have']:.2f}" if "need" in ev else ""
        print(f"{ev['at']} {ev['type']:<13} {ev.get('agent_id')} {ev.get('op', '')} {what}{need}")


async def _up(args):
    from .up import run

    await run(args)


async def _demo(args):
    from . import demo

    if not args.single and args.nodes < 3:
        raise InvalidInput("the demo's cluster has at least 3 nodes (--nodes 3 or more)")
    if args.single:
        await demo.run_single(path=args.path)
    else:
        await demo.run_cluster(nodes=args.nodes)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return n


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line with a stable code, like every other refusal."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{InvalidInput.code}: {self.prog}: {message} (see --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 0 to 65535, not {port}")
    return port


def _parser(argv) -> argparse.ArgumentParser:
    p = _Parser(
        prog="budgetnode",
        description="Agents that act only within a budget the network can verify.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    if argv[:1] == ["sim"]:  # the simulator is imported only to run it
        from sims.cli import add_parser as add_sim_parser

        add_sim_parser(sub)
    else:
        sub.add_parser(
            "sim",
            help="seeded network simulation of many real nodes (budgetnode sim --help)",
            add_help=False,
        )
    if argv[:1] == ["nemesis"]:  # so is the fault injector
        from sims.nemesis import add_parser as add_nemesis_parser

        add_nemesis_parser(sub)
    else:
        sub.add_parser(
            "nemesis",
            help="faults injected into real node processes on separate hosts, then a "
            "checker's verdicts (budgetnode nemesis --help; root, Linux netns)",
            add_help=False,
        )

    def with_store(sp, required=True, url=False):
        sp.add_argument("--path", required=required and not url, help="the node's data directory")
        if url:
            sp.add_argument("--url", help="a running node's app_url (printed by `budgetnode up`)")
            sp.add_argument("--token", help="with --url: the node's token (or $BUDGETNODE_TOKEN)")
        sp.add_argument(
            "--durability",
            choices=("process", "power"),
            default="process",
            help="process: commits survive a killed process; power: also power loss "
            "(an fsync per commit)",
        )
        sp.add_argument("--json", action="store_true", help="print JSON")
        return sp

    d = sub.add_parser("demo", help="a scripted day on a local cluster of real libp2p nodes")
    d.add_argument("--nodes", type=int, default=3, help="cluster size (at least 3)")
    d.add_argument("--single", action="store_true", help="one in-process node instead")
    d.add_argument("--path", default=None, help="with --single: keep the store here")
    d.set_defaults(run=_demo)
    u = sub.add_parser("up", help="run a local cluster, or one node joining others, until stopped")
    u.add_argument("--nodes", type=int, default=3, help="local cluster size (without --listen)")
    u.add_argument("--listen", help="run one node listening here, e.g. /ip4/0.0.0.0/tcp/4001")
    u.add_argument(
        "--bootstrap", action="append", default=[], help="a peer's multiaddr (repeatable)"
    )
    u.add_argument("--path", help="data directory (a cluster keeps node0, node1, … inside)")
    u.add_argument(
        "--dna-hash",
        help="refuse to join unless the network has this DNA hash (with --bootstrap or --mdns)",
    )
    u.add_argument(
        "--mdns",
        action="store_true",
        help="one node (needs --listen on a LAN address): announce it on the LAN and join the "
        "budgetnodes found there (libp2p mDNS); a new store takes the network of the first "
        "that answers",
    )
    u.add_argument(
        "--relay",
        metavar="MULTIADDR",
        help="one node others cannot dial: reserve a slot at this relay (a node run with "
        "--relay-service; its multiaddr ends in /p2p/<id>), join through it, and be reached "
        "through it (libp2p circuit relay v2)",
    )
    u.add_argument(
        "--relay-service",
        action="store_true",
        help="one node: relay for nodes run with --relay (libp2p circuit relay v2 HOP)",
    )
    u.add_argument(
        "--rogue",
        nargs="?",
        const="skip_preflight",
        metavar="MODE",
        help="adversarial test mode (one node, or a cluster's last node): "
        "skip_preflight (a bare --rogue), forge_budget, wrong_cost, fork, "
        "bad_signature, backdate (stamps in the past, opens windows without a witness), "
        "sybil (tests: sims.rogue.sybil_agent makes its agents without invites), or "
        "byzantine (it misbehaves on the wire)",
    )
    u.add_argument(
        "--app-port",
        type=_port,
        default=0,
        help="app server port (agent websocket + /metrics); 0 picks free ports; a "
        "cluster uses PORT, PORT+1, …",
    )
    u.add_argument("--app-host", default="127.0.0.1", help="app server address (default 127.0.0.1)")
    u.add_argument("--no-app", action="store_true", help="run without app servers")
    u.add_argument(
        "--max-agents",
        type=_positive,
        metavar="N",
        help="each node hosts at most N agents (its steward counts); past it E_NOT_AUTHORIZED",
    )
    u.add_argument(
        "--max-deferred-per-agent",
        type=_positive,
        metavar="N",
        help="each agent may queue N writes with defer=True (default 16; a node 1,024); "
        "past it E_DEFER_QUEUE_FULL",
    )
    u.add_argument(
        "--metrics-per-agent",
        action="store_true",
        help="/metrics also lists each agent's budget by agent id (default: aggregates only; "
        "the page needs no token)",
    )
    u.add_argument("--json", action="store_true", help="print one JSON line describing the nodes")
    u.set_defaults(run=_up)
    i = with_store(
        sub.add_parser("init", help="create a node store and a new network with one steward")
    )
    i.add_argument(
        "--membrane",
        choices=("open", "invite"),
        help="who may create agents: open (anyone; the default, unsuited to untrusted agents) "
        "or invite (only holders of a steward's single-use invite)",
    )
    i.add_argument(
        "--dna",
        metavar="FILE.toml",
        help="the new network's rules, e.g. resources and resource_costs (any rule of "
        'docs/SDK.md "Metering"); --membrane overrides the file\'s',
    )
    i.set_defaults(run=_init)
    n = with_store(sub.add_parser("new-agent", help="create an agent on a node"), url=True)
    n.add_argument("--invite", help="a steward's invite text (`budgetnode invite`)")
    n.set_defaults(run=_new_agent)
    iv = with_store(
        sub.add_parser("invite", help="a steward's single-use invite for one new agent"),
        url=True,
    )
    iv.add_argument("--note", default="", help="who or what the invite is for (kept in it)")
    iv.set_defaults(run=_invite)
    with_store(
        sub.add_parser(
            "status",
            help="agents, remaining RU, resets_at (with --url: also peers, ops pending, warrants)",
        ),
        url=True,
    ).set_defaults(run=_status)
    v = sub.add_parser(
        "verify", help="verify a store in full now (exit 1 naming the first bad chain)"
    )
    v.add_argument("--path", required=True, help="the node's data directory")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(run=_verify)
    from .cli_budgets import add_parsers as add_budget_parsers

    add_budget_parsers(sub, with_store, sys.modules[__name__])
    from .cli_governance import add_parsers as add_governance_parsers

    add_governance_parsers(sub, with_store, sys.modules[__name__])
    c = with_store(sub.add_parser("call", help="call a zome function as an agent"), url=True)
    c.add_argument("--agent", required=True, help="agent id")
    c.add_argument("zome")
    c.add_argument("fn")
    c.add_argument(
        "payload", nargs="?", default="{}", help="JSON object of the SDK's parameter names"
    )
    c.add_argument(
        "--defer",
        action="store_true",
        help="a write refused only for lack of RU waits for the agent's window (a Deferred)",
    )
    c.add_argument(
        "--check",
        action="store_true",
        help="a dry run: what the call would meet now (exit 1 with the code it would be "
        "refused with); writes nothing",
    )
    c.set_defaults(run=_call)
    a = with_store(
        sub.add_parser("audit", help="refusals, deferrals and their outcomes, alerts"), url=True
    )
    a.add_argument("--agent", help="only this agent's events")
    a.add_argument("--since", type=_unix_s, help="only events at or after UNIX_S")
    a.set_defaults(run=_audit)
    return p


def _unix_s(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected unix seconds, got {text!r}")
    return n


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    try:
        with unwrap_single_errors():  # a refusal raised inside a nursery (ours or libp2p's)
            status = trio.run(args.run, args)  # a command may return its exit status
    except BudgetError as e:
        print(str(e), file=sys.stderr)
        return EXIT_REFUSED
    except Exception as e:  # noqa: BLE001 - the demo's own checks, said plainly
        from .demo import DemoFailed

        if not isinstance(e, DemoFailed):
            raise
        print(f"demo failed: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
