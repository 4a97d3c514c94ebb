"""The courier that hands ledger offers (and votes, and endorsements) to their recipients' nodes:
what waits for an unreachable recipient is kept in the store, so a restart resumes it."""

from __future__ import annotations

from collections import Counter

import trio
import trio.testing

from node.core.errors import PeerUnreachable
from node.local_node import LocalNode
from node.net.offers import OfferCourier

T0 = 1_730_678_400.0


async def test_an_offer_waiting_for_its_recipient_survives_a_restart_and_is_delivered_once(
    tmp_path, autojump_clock
):
    path = str(tmp_path / "n")
    async with LocalNode.open(path, clock=lambda: T0) as node:
        alice = await node.new_agent()
        root = await node.steward.mint_budget({"ru": 10}, holder=alice.agent_id)
        offer = node.store.record(bytes.fromhex(_hex(root)))[0]
        far = bytes(range(32))  # an agent of another node, unreachable for now
        sent: list = []
        up = [False]
        delivered = trio.Event()

        async def request(host, t, **fields):
            if not up[0]:
                raise PeerUnreachable("no route")
            sent.append((host, t, fields["offer"]))
            delivered.set()

        def courier():
            return OfferCourier(
                host_of=lambda to: b"host" if to == far else None,
                request=request,
                metrics=Counter(),
                interval=1.0,
                store=node.store,
            )

        first = courier()
        assert await first.send(far, offer) is False
        assert await first.send(far, offer) is False  # kept once
        assert node.store.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1
        # the node stops here; the next courier on the same store finds the offer waiting
        second = courier()
        assert second.restore() == 1 and list(second.waiting) == [offer.hash]
        up[0] = True
        async with trio.open_nursery() as n:
            n.start_soon(second.run)
            with trio.fail_after(10):  # virtual time: the courier's first retry, a second on
                await delivered.wait()
            await trio.testing.wait_all_tasks_blocked()  # it forgets the offer, then sleeps
            n.cancel_scope.cancel()
        assert not second.waiting
        assert sent == [(b"host", "offer", [offer.body, offer.sig])]
        assert second.metrics["offers_delivered"] == 1
        assert node.store.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
        assert courier().restore() == 0


def _hex(budget_id: str) -> str:
    from node.core.crypto import from_text

    return from_text("budget", budget_id).hex()
