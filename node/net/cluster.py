"""Several network nodes in one process: real libp2p hosts on 127.0.0.1, or the in-memory
transport for fast tests."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ..core import dht
from ..core.crypto import to_text
from ..core.errors import ConsistencyTimeout
from .memory import MemoryNetwork
from .transport import Handler, TransportFactory
from ..errgroups import unwrap_single_errors
from .node import NetNode
from . import rogue as adversarial

if TYPE_CHECKING:
    from .libp2p_transport import Libp2pTransport


def libp2p_factory(listen: str = "/ip4/127.0.0.1/tcp/0", **reach) -> TransportFactory:
    """`reach`: open_libp2p_transport's mdns, announce, relay, relay_service."""
    from .libp2p_transport import open_libp2p_transport  # libp2p costs ~0.7 s to import

    def factory(seed: bytes, handler: Handler) -> AbstractAsyncContextManager[Libp2pTransport]:
        return open_libp2p_transport(seed, handler, listen=(listen,), **reach)

    return factory


class LocalCluster:
    def __init__(self, nodes: list[NetNode], network: MemoryNetwork | None):
        self.nodes = nodes
        self.network = network
        self._change = trio.Event()
        self.accountable = nodes

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        n: int = 3,
        clock=None,
        *,
        rogue=(),
        transport: str = "libp2p",
        r: int = dht.DEFAULT_R,
        gossip_interval: float = 0.5,
        publish_interval: float = 0.5,
        paths=None,
        rogue_modes=("skip_preflight",),
        app=None,
        dna: dict | None = None,
    ):
        """`rogue=(2,)` starts node 2 in the adversarial modes `rogue_modes` (by default it skips
        its own pre-flight); `rogue={2: "byzantine", 3: ("fork",)}` names each node's modes
        (node/net/rogue.py lists them; an unknown one is a ValueError). The adversary lives in
        sims/, imported only when asked for. `app`: what every node runs (None: the Rose Forest
        app, `node.apps`). `dna`: the rules of the new network node 0 makes, such as
        `{"membrane": "invite"}` (see `Dna.rules`); the other nodes join it."""
        network = MemoryNetwork() if transport == "memory" else None
        factory: TransportFactory = network.transport if network is not None else libp2p_factory()
        modes_of = _rogue_table(rogue, rogue_modes)
        with unwrap_single_errors():
            async with AsyncExitStack() as stack:
                nodes: list[NetNode] = []
                for i in range(n):
                    bootstrap = (
                        nodes[0].transport.listen_addrs()[:1]  # type: ignore[attr-defined]
                        if nodes
                        else ()
                    )
                    factory_i, adversary = adversarial.plug(
                        factory, modes_of.get(i, ()), f"byzantine:{i}"
                    )
                    node = await stack.enter_async_context(
                        NetNode.open(
                            factory_i,
                            path=paths[i] if paths else None,
                            clock=clock,
                            bootstrap=bootstrap,
                            r=r,
                            gossip_interval=gossip_interval,
                            publish_interval=publish_interval,
                            dna=nodes[0].dna if nodes else dna,
                            app=app,
                            **adversary,
                        )
                    )
                    nodes.append(node)
                cluster = cls(nodes, network)
                # a node that misbehaves on the wire owes nobody convergence
                cluster.accountable = [
                    node for i, node in enumerate(nodes) if "byzantine" not in modes_of.get(i, ())
                ]
                for node in nodes:
                    # NetNode.__init__ (node.py, unchecked until its split lands) types it as None
                    node.on_change = cluster._changed  # type: ignore[assignment]
                # Peers learnt after a node joined reach it by the next refresh; make it immediate.
                for node in nodes:
                    for other in nodes:
                        if other is not node and other.id not in node.peers:
                            await node.join(
                                other.transport.listen_addrs()[0]  # type: ignore[attr-defined]
                            )
                yield cluster

    def _changed(self) -> None:
        self._change.set()
        self._change = trio.Event()

    async def wait_changed(self) -> None:
        """Until any node stores, publishes or learns something."""
        await self._change.wait()

    def lagging(self) -> list[str]:
        """What keeps the cluster from being consistent; empty when it is."""
        return consistency_lag(self.nodes, accountable=self.accountable)

    async def await_consistency(self, timeout: float = 10.0) -> None:
        """Wait until every authority holds every honest head and every node every warrant."""
        with trio.move_on_after(timeout):
            while self.lagging():
                await self._change.wait()
            return
        raise ConsistencyTimeout(
            f"not consistent after {timeout} s: " + "; ".join(self.lagging()[:8])
        )

    def state_hashes(self) -> list[bytes]:
        return [n.state_hash() for n in self.nodes]


def _rogue_table(rogue, rogue_modes) -> dict[int, tuple]:
    """Node index -> its adversarial modes, from either form LocalCluster.open takes."""
    if isinstance(rogue, dict):
        return {i: adversarial.check(m) for i, m in rogue.items()}
    modes = adversarial.check(rogue_modes)
    return {i: modes for i in rogue}


def consistency_lag(nodes, labels=None, accountable=None) -> list[str]:
    """What keeps `nodes` from being consistent; empty when they are. For every agent hosted on an
    accountable node and not warranted, each of its authorities (the R nearest among nodes not
    warranted as peers) that does not hold its head; each accountable node with unpublished
    actions; each accountable node missing a warrant. `accountable` (default: all) lets the
    simulator leave rogue nodes out; `labels` names nodes in the messages (default: index)."""
    labels = list(range(len(nodes))) if labels is None else labels
    acc = {n.id for n in (nodes if accountable is None else accountable)}
    offenders = set().union(*(n.warranted for n in nodes if n.id in acc))
    members = {n.id: (label, n) for label, n in zip(labels, nodes) if n.id not in offenders}
    ids = list(members)
    problems = []
    for i, host in zip(labels, nodes):
        if host.id not in acc:
            continue
        for pub, cell in host.cells.items():
            if pub in offenders:
                continue
            want = (cell.state.seq, cell.state.hash)
            for nid in dht.nearest(pub, ids, host.r):
                j, node = members[nid]
                if nid in acc and node._head(pub) != want:
                    have = node._head(pub)
                    problems.append(
                        f"node {j} holds {to_text('agent', pub)[:12]}… at seq "
                        f"{None if have is None else have[0]}, node {i} is at {want[0]}"
                    )
        if host.dht.unpublished(1):
            problems.append(f"node {i} has actions not yet published")
    for j, node in zip(labels, nodes):
        missing = offenders - set(node.warranted) - {node.id}
        if node.id in acc and missing:
            problems.append(f"node {j} lacks warrants for {len(missing)} agent(s)")
    return problems
