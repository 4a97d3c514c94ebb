"""`budgetnode up`: run a local cluster, or one node that joins others, until SIGINT/SIGTERM.
Every node gets an app server (agent websocket + /metrics) with a fresh token."""

from __future__ import annotations

import json
import os
import signal
from contextlib import asynccontextmanager

import trio

from .core.crypto import from_text, to_text
from .core.errors import InvalidInput, WrongNetwork
from .net.cluster import LocalCluster, libp2p_factory
from .net import rogue as adversarial
from .net.node import NetNode, fetch_dna, find_dna
from .store import store_path

TOKEN_FILE = "app.token"
MDNS_WAIT_S = 30.0  # `up --mdns` on a new store: how long to look for a network on the LAN


def _describe(node, server) -> dict:
    listen = node.transport.listen_addrs()
    d = {
        "peer_id": listen[0].rsplit("/p2p/", 1)[-1],
        "node_key": to_text("agent", node.id),
        "listen": listen,
        "dna": node.dna.hash_text,
        "path": node.directory,
        "agents": node.agents(),
    }
    if server is not None:
        d.update(app_url=server.app_url, metrics_url=server.metrics_url, token=server.token)
    return d


def _print(nodes, servers, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"nodes": [_describe(n, s) for n, s in zip(nodes, servers)]}), flush=True)
        return
    for i, (n, s) in enumerate(zip(nodes, servers)):
        d = _describe(n, s)
        print(
            f"node {i}  {d['listen'][0]}\n        network {d['dna']}  store {d['path']}", flush=True
        )
        if s is not None:
            print(
                f"        app {s.app_url}  metrics {s.metrics_url}\n        token {s.token}",
                flush=True,
            )
    print("running; Ctrl-C stops", flush=True)


def _write_token(directory: str, token: str) -> str:
    """DIR/app.token (0600): the operator's copy of this run's token, replaced atomically."""
    path = os.path.join(directory, TOKEN_FILE)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


async def _announce_until_signal(nodes, servers, as_json: bool) -> None:
    """Print the nodes, then run until SIGINT/SIGTERM. The handlers are in place before the
    line is printed, so a signal sent as soon as the line is read still stops us cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        _print(nodes, servers, as_json)
        async for _ in signals:
            return


@asynccontextmanager
async def app_servers(
    nodes, host: str = "127.0.0.1", port: int | None = 0, per_agent_metrics: bool = False
):
    """An AppServer per node (port 0: free ports; else port, port+1, …); None: no servers."""
    if port is None:
        yield [None] * len(nodes)
        return
    from .app.server import AppServer

    servers, tokens = [], []
    async with trio.open_nursery() as nursery:
        try:
            for i, node in enumerate(nodes):
                server = AppServer(node, per_agent_metrics=per_agent_metrics)
                await nursery.start(server.serve, host, port + i if port else 0)
                tokens.append(_write_token(node.directory, server.token))
                servers.append(server)
            yield servers
        finally:
            nursery.cancel_scope.cancel()
            for path in tokens:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _cap(nodes, args) -> None:
    """`--max-agents N`: each node refuses to create agents past N (E_NOT_AUTHORIZED);
    `--max-deferred-per-agent N`: each agent may queue N deferred writes (E_DEFER_QUEUE_FULL)."""
    for node in nodes:
        node.max_agents = getattr(args, "max_agents", None)
        per_agent = getattr(args, "max_deferred_per_agent", None)
        if per_agent is not None:  # `--max-deferred-per-agent N` (the node's cap stays)
            node.admissions.queue.per_agent = min(per_agent, node.admissions.queue.per_node)


MAX_PORT = 65535


def check_args(args) -> bytes | None:
    """Every refusal `up` can give from its arguments alone, given before anything is opened or
    written (so a refused start leaves the directory as it was). Returns the pinned DNA hash."""
    if args.nodes < 1:
        raise InvalidInput("--nodes must be at least 1")
    mdns, relay = getattr(args, "mdns", False), getattr(args, "relay", None)
    if args.dna_hash and not (args.bootstrap or mdns or relay):
        raise InvalidInput(
            "--dna-hash pins the network of a --bootstrap peer (or one found with --mdns): "
            "give --bootstrap too (a node that joins no one runs its store's own network)"
        )
    pin = from_text("dna", args.dna_hash) if args.dna_hash else None
    single = bool(args.bootstrap or args.listen or mdns or relay)
    single = single or getattr(args, "relay_service", False)
    count = 1 if single else args.nodes
    if args.app_port and args.app_port + count - 1 > MAX_PORT:
        raise InvalidInput(f"--app-port {args.app_port} leaves no port for {count} node(s)")
    if args.listen:
        _check_multiaddr("--listen", args.listen, peer=False)
    for addr in args.bootstrap:
        _check_multiaddr("--bootstrap", addr, peer=True)
    if relay:
        _check_multiaddr("--relay", relay, peer=True)
        if "/p2p-circuit" in relay:
            raise InvalidInput(f"--relay {relay!r} is itself relayed: give the relay's own address")
    if mdns:
        # mDNS announces the listen address as it is: a wildcard or loopback one would send
        # every peer that finds it to an address that is not this node
        if not args.listen or any(
            f"/{p}/{a}/" in args.listen
            for p, a in (("ip4", "0.0.0.0"), ("ip6", "::"), ("ip4", "127.0.0.1"), ("ip6", "::1"))
        ):
            raise InvalidInput(
                "--mdns announces this node's --listen address on the LAN: give --listen "
                "with the LAN address, e.g. /ip4/192.168.1.20/tcp/4001"
            )
    if args.path and os.path.isdir(args.path):
        cluster_store = os.path.exists(store_path(os.path.join(args.path, "node0")))
        node_store = os.path.exists(store_path(args.path))
        if single and cluster_store and not node_store:
            raise InvalidInput(
                f"{args.path} holds a local cluster's stores (node0, …): run it with "
                f"--nodes N --path {args.path}, or give one node's directory"
            )
        if not single and node_store:
            raise InvalidInput(
                f"{args.path} holds one node's store: run that node with --listen ADDR "
                f"--path {args.path} (a cluster's --path holds node0, node1, …)"
            )
    return pin


def _check_multiaddr(option: str, addr: str, peer: bool) -> None:
    import multiaddr

    try:
        ma = multiaddr.Multiaddr(addr)
        protocols = {p.name for p in ma.protocols()}
    except Exception as e:  # noqa: BLE001 - the library raises several types for bad text
        raise InvalidInput(f"{option} {addr!r} is not a multiaddr ({e})") from None
    if "tcp" not in protocols:
        raise InvalidInput(f"{option} {addr!r} names no TCP port (e.g. /ip4/0.0.0.0/tcp/4001)")
    if peer and "p2p" not in protocols:
        raise InvalidInput(f"{option} {addr!r} must end in /p2p/<peer id>")


async def run(args) -> None:
    port = None if getattr(args, "no_app", False) else args.app_port
    try:
        modes = adversarial.check(args.rogue) if getattr(args, "rogue", None) else ()
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    pin = check_args(args)
    mdns, relay = getattr(args, "mdns", False), getattr(args, "relay", None)
    if args.bootstrap or args.listen or mdns or relay or getattr(args, "relay_service", False):
        reach = dict(mdns=mdns, relay=relay, relay_service=getattr(args, "relay_service", False))
        factory = libp2p_factory(args.listen or "/ip4/127.0.0.1/tcp/0", **reach)
        # a node behind a relay joins through it: the one peer it can surely reach
        bootstrap = list(dict.fromkeys(([relay] if relay else []) + args.bootstrap))
        dna = None
        # a stat before the node starts: nothing else runs on the event loop yet
        if not (args.path and os.path.exists(store_path(args.path))):  # noqa: ASYNC240
            if bootstrap:
                dna = await fetch_dna(libp2p_factory(), bootstrap[0], pin)
            elif mdns:
                look = libp2p_factory(mdns=True, announce=False)  # it only looks
                dna = await find_dna(look, pin, MDNS_WAIT_S)
        factory, adversary = adversarial.plug(factory, modes, os.urandom(32))
        async with NetNode.open(
            factory, path=args.path, bootstrap=bootstrap, dna=dna, **adversary
        ) as node:
            _cap([node], args)
            if pin is not None and node.dna.hash != pin:
                raise WrongNetwork(
                    f"the store at {node.directory} belongs to network {node.dna.hash_text}, "
                    f"not the one --dna-hash names"
                )
            async with app_servers(
                [node], args.app_host, port, getattr(args, "metrics_per_agent", False)
            ) as servers:
                await _announce_until_signal([node], servers, args.json)
        return
    paths = None
    if args.path:
        paths = [os.path.join(args.path, f"node{i}") for i in range(args.nodes)]
    rogue = {args.nodes - 1: modes} if modes else {}
    async with LocalCluster.open(n=args.nodes, paths=paths, rogue=rogue) as cluster:
        _cap(cluster.nodes, args)
        async with app_servers(
            cluster.nodes, args.app_host, port, getattr(args, "metrics_per_agent", False)
        ) as servers:
            await _announce_until_signal(cluster.nodes, servers, args.json)
