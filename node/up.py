"""`budgetnode up`: run a local cluster, or one node that joins others, until SIGINT/SIGTERM."""
from __future__ import annotations

import json
import os
import signal

import trio

from .core.crypto import from_text, to_text
from .net.cluster import LocalCluster, libp2p_factory
from .net.node import NetNode, fetch_dna
from .store import store_path


def _describe(node) -> dict:
    listen = node.transport.listen_addrs()
    return {"peer_id": listen[0].rsplit("/p2p/", 1)[-1], "node_key": to_text("agent", node.id),
            "listen": listen, "dna": node.dna.hash_text, "path": node.directory,
            "agents": node.agents()}


def _print(nodes, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"nodes": [_describe(n) for n in nodes]}), flush=True)
        return
    for i, n in enumerate(nodes):
        d = _describe(n)
        print(f"node {i}  {d['listen'][0]}\n        network {d['dna']}  store {d['path']}",
              flush=True)
    print("running; Ctrl-C stops", flush=True)


async def _until_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def run(args) -> None:
    if args.bootstrap or args.listen:
        factory = libp2p_factory(args.listen or "/ip4/127.0.0.1/tcp/0")
        dna = None
        if args.bootstrap and not (args.path and os.path.exists(store_path(args.path))):
            pin = from_text("dna", args.dna_hash) if args.dna_hash else None
            dna = await fetch_dna(libp2p_factory(), args.bootstrap[0], pin)
        async with NetNode.open(factory, path=args.path, bootstrap=args.bootstrap,
                                dna=dna, rogue=("skip_preflight",) if args.rogue else ()) as node:
            _print([node], args.json)
            await _until_signal()
        return
    paths = None
    if args.path:
        paths = [os.path.join(args.path, f"node{i}") for i in range(args.nodes)]
    async with LocalCluster.open(n=args.nodes, paths=paths) as cluster:
        _print(cluster.nodes, args.json)
        await _until_signal()
