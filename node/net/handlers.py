"""The requests a network node serves: one dispatch (`handle`, which the transport calls) that
turns away warranted and backed-off senders, parses every request once into its typed message
(protocol.py), greets a sender it does not know, and charges a sender for its garbage; and the
handlers of the requests that are the node's own (the peer table, the warrant book and the
gossiper serve theirs: `hello`/`peers` here use the table, `warrants` and `summary` are theirs).

A component of NetNode (node.py wires it): `table` is the request type -> handler map (tests
swap entries in it); `accept` is the node's one way in for other authors' actions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..core import dht, warrant
from ..core.action import Signed, grant_hash
from ..core.crypto import SigningKey, verify
from ..core.dna import Dna
from ..core.errors import (
    BudgetError,
    GrantAlreadyClaimed,
    InternalError,
    MalformedInput,
    TooLarge,
    UnknownAgent,
)
from ..core.warrant import Warranted
from . import protocol as P
from .dht_store import DhtStore
from .gossip import Gossiper
from .peer_table import PeerTable
from .publishing import Publisher
from .warrants import WarrantBook

MAX_GREETING = 64  # unknown requesters greeted at once

Handler = Callable[[bytes, Any], Awaitable[Any]]


class RequestHandlers:
    def __init__(
        self,
        *,
        node_key: SigningKey,
        dna: Dna,
        dht_store: DhtStore,
        agents: Mapping[bytes, Any],
        metrics: Counter,
        spawn: Callable[..., None],
        peer_table: PeerTable,
        warrant_book: WarrantBook,
        publisher: Publisher,
        gossiper: Gossiper,
        accept: Callable[..., Awaitable[str]],
        record: Callable[[bytes], tuple[Signed, bytes | None] | None],
        chain_of: Callable[[bytes], list[Signed]],
        witness_service: Any = None,
        take_offer: Callable[[Any, Signed], Awaitable[bool]] | None = None,
    ) -> None:
        """`agents`: this node's cells (grants are claimed by them); `record(hash)`: an action
        held here, in a chain or alone; `chain_of(agent)`: an own agent's chain;
        `witness_service`: the steward's WitnessService (node/witness.py) if a steward's key is
        on this node, else None (it witnesses nothing)."""
        self.node_key = node_key  # signs receipts
        self.id = node_key.public
        self.dna = dna
        self.dht = dht_store
        self.cells = agents
        self.metrics = metrics
        self.spawn = spawn
        self.peer_table = peer_table
        self.warrant_book = warrant_book
        self.warranted = warrant_book.warranted
        self.publisher = publisher
        self.accept = accept
        self.record = record
        self.chain_of = chain_of
        self.witness_service = witness_service
        self.take_offer = take_offer  # node/budgets.py Budgets.take_offer
        self.last_handler_error = ""
        # request type -> its handler, which gets the typed request protocol.py parsed
        self.table: dict[str, Handler] = {
            "dna": self._on_dna,
            "hello": self._on_hello,
            "peers": self._on_peers,
            "publish": self._on_publish,
            "chain": self._on_chain,
            "record": self._on_record,
            "summary": gossiper.on_summary,
            "warrants": warrant_book.on_warrants,
            "grant": self._on_grant,
            "witness": self._on_witness,
            "offer": self._on_offer,
        }
        assert self.table.keys() == P.REQUESTS.keys()

    async def handle(self, peer: bytes, raw: bytes) -> bytes:
        self.metrics["messages_received"] += 1
        try:
            if peer in self.warranted:
                raise Warranted("this node's operator is warranted; requests are refused")
            if self.peer_table.backed_off(peer):
                self.metrics["requests_backed_off"] += 1
                raise P.ProtocolError("too many malformed messages: backed off")
            if peer in self.peer_table.dropped:  # it reached us, so it is back: greet it in return
                self.spawn(self.peer_table.probe_dropped, peer)
            t, msg = P.parse_request(raw, self.dna.hash)
            if (
                peer not in self.peer_table.peers
                and t not in ("hello", "peers", "dna")
                and peer not in self.peer_table.greeting
                and peer not in self.peer_table.dropped
                and len(self.peer_table.greeting) < MAX_GREETING
            ):
                # It knows us and we do not know it (we restarted, or lost our peers): learn its
                # info, so the link works both ways. (hello and peers bring the info along.)
                self.peer_table.greeting.add(peer)
                self.spawn(self.peer_table.hello_quietly, peer)
            return await self.table[t](peer, msg)
        except (MalformedInput, TooLarge) as e:  # the sender's garbage costs the sender
            self.metrics["messages_refused"] += 1
            self.metrics["malformed_requests"] += 1
            self.peer_table.strike(peer)
            return P.error_reply(e)
        except BudgetError as e:
            self.metrics["messages_refused"] += 1
            return P.error_reply(e)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            self.metrics["messages_refused"] += 1
            return P.error_reply(MalformedInput(f"malformed request ({type(e).__name__})"))
        except Exception as e:  # a bug in one handler must not take the node down
            self.metrics["handler_errors"] += 1
            self.last_handler_error = repr(e)
            return P.error_reply(InternalError(type(e).__name__))

    async def _on_dna(self, peer: bytes, msg: Any) -> Any:
        return P.reply(dna=self.dna.encoded())

    async def _on_hello(self, peer: bytes, msg: P.HelloRequest) -> Any:
        info = msg.info
        if info.peer != peer or dht.check_peer_info(info.to_wire(), self.dna.hash) is None:
            raise MalformedInput("peer info is not signed by the sending peer")
        if msg.dropped:
            # It had dropped this node (a cut), and so may every node beyond it: a fresh info
            # lets them all take this node back (rate-limited, so a liar gains nothing).
            self.peer_table.back()
        self.peer_table.add(info)
        return P.reply(info=self.peer_table.my_info())

    async def _on_peers(self, peer: bytes, msg: P.PeersRequest) -> Any:
        if msg.info is not None:
            if msg.info.peer != peer or msg.info.dna != self.dna.hash:
                raise MalformedInput("peer info is not the sending peer's")
            self.peer_table.add(msg.info)
        if msg.push is not None:  # the second leg: infos we lacked, by the asker's reckoning
            for i in msg.push:
                self.peer_table.add(i)
            return P.reply(ok=True)
        digest, mine = self.peer_table.digest()
        if msg.digest == digest:
            return P.reply(
                infos=[self.peer_table.my_info()]
            )  # same table, same versions: nothing to swap
        return P.reply(
            infos=[self.peer_table.my_info(), *self.peer_table.lacking(msg.have, peer)], have=mine
        )

    async def _on_publish(self, peer: bytes, msg: P.PublishRequest) -> Any:
        if msg.batch.to != self.id:
            raise MalformedInput("publish batch is not for this node or does not match its ops")
        batch = msg.batch.to_wire()  # evidence in a peer warrant, if it carries a forgery
        signed = [op.action for op in msg.ops]
        # The batch signature is evidence against the sender, needed only if an action it
        # carries is forged (the peer warrant quotes it); the transport already says who sent
        # it. So it is checked then, before anything is stored, and a valid publish costs one
        # verify less (a third of a publish's crypto).
        if not all(
            isinstance(s.action.get("author"), bytes) and verify(s.action["author"], s.sig, s.body)
            for s in signed
        ) and not warrant.batch_ok(batch, peer):
            raise MalformedInput("publish batch is not signed by the sending peer")
        results = []
        for op in msg.ops:
            s, entry, told = op.action, op.entry, op.told
            self.metrics["ops_received"] += 1
            # Sent here as an author-key authority: if this node knows authorities the sender
            # did not name (its view of the ring lags), pass the action on, whether or not this
            # node itself turns out to be one.
            fresh = told is not None and self.id in told and not self.dht.has_action(s.hash)
            status = await self.accept(s, entry, peer, prev=op.prev, op=True, vouch=op.vouch)
            if fresh and told is not None and status == "valid":
                self.publisher.forward(s, entry, peer, told)
            if status == "forged":  # the sender signed the batch that carried it: its doing
                await self.warrant_book.issue("peer", peer, "bad_signature", -1, [s], batch=batch)
                status = "invalid"
            # a receipt vouches for the op to the other authorities only if an author-key
            # authority signed it, so only one the publisher counts as such signs one
            receipt = (
                dht.sign_receipt(s.hash, self.node_key)
                if status == "valid" and told is not None and self.id in told
                else None
            )
            results.append([s.hash, status, receipt])
        return P.reply(results=results)

    async def _on_chain(self, peer: bytes, msg: P.ChainRequest) -> Any:
        return P.reply(records=self.dht.records(msg.author, msg.start, msg.limit))

    async def _on_record(self, peer: bytes, msg: P.RecordRequest) -> Any:
        found = self.record(msg.hash)
        if found is None:
            return P.reply(record=None)
        s, entry = found
        return P.reply(record=[s.body, s.sig, entry])

    async def _on_grant(self, peer: bytes, msg: P.GrantRequest) -> Any:
        grant, sig = msg.grant.to_wire(), msg.sig
        cell = self.cells.get(msg.grant.grantee)
        if cell is None:
            raise UnknownAgent("the grantee is not an agent of this node")
        try:
            return P.reply(granted=await cell.claim(grant, sig))
        except GrantAlreadyClaimed:  # the published record got here first and was claimed
            return P.reply(granted=self._claimed_amount(cell, grant_hash(grant)))

    def _claimed_amount(self, cell: Any, gh: bytes) -> int | None:
        for s in reversed(self.chain_of(cell.key.public)):
            if s.action.get("type") == "claim" and grant_hash(s.action["grant"]) == gh:
                return s.action["budget"]["granted"]
        return None

    async def _on_offer(self, peer: bytes, msg: P.OfferRequest) -> Any:
        """An offer to an agent of this node, accepted by its chain (the ledger checks the
        offer's signature and rules; its refusals go back with their codes)."""
        v = msg.offer.action.get("ledger")
        to = v.get("to") if isinstance(v, dict) else None
        cell = self.cells.get(to) if isinstance(to, bytes) else None
        if cell is None or self.take_offer is None:
            raise UnknownAgent("the offer names no agent of this node")
        return P.reply(taken=await self.take_offer(cell, msg.offer))

    async def _on_witness(self, peer: bytes, msg: P.WitnessRequest) -> Any:
        """The steward's signed clock. Its refusals (an invite used already, E_INVITE_USED, or
        not this steward's, E_NOT_AUTHORIZED) go back with their codes."""
        ws = self.witness_service
        if ws is None:
            # not E_NOT_AUTHORIZED: the asker's routing was stale, its invite may be fine
            raise UnknownAgent("no steward of this network is on this node: it witnesses nothing")
        invite = None if msg.invite is None else msg.invite.to_wire()
        w = await ws.witness(msg.agent, msg.prev, invite)
        return P.reply(by=w["by"], at=w["at"], sig=w["sig"])
