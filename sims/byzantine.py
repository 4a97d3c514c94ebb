"""A Byzantine peer: a wrapper around any Transport that makes the honest node behind it misbehave
on the wire, driven by a seeded rng.

The node behind the wrapper runs honest node code (it stays in every peer table, so honest nodes
really talk to it); only what crosses the wire is corrupted. Replies to requests and the node's
own requests are, each with probability `rate`: given wrong types in a field (deep inside lists
too), truncated or oversized fields, dropped fields, another network's DNA hash, swapped for a
replay of an old message this node saw, for valid CBOR of the wrong shape or for garbage bytes,
cut short, answered late (slow) or never (the requester's timeout fires); and now and then a
request sets off a flood of garbage requests at the same peer. The garbage is built from the
protocol's real messages (REQUESTS and the fields each handler returns), so it reaches the code
behind the outer parser.

Everything is bounded: the replay buffer, the flood size and the floods in flight at once.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from node.core.encoding import MAX_ITEMS as DECODE_MAX_ITEMS, decode, encode_trusted
from node.net.protocol import MAX_OPS_PER_MESSAGE, MAX_SUMMARY_AUTHORS, REQUESTS
from node.net.transport import MAX_FRAME, Handler, Transport, TransportFactory

# The fields of each request and of its honest reply (node/net/node.py, gossip.py, warrants.py).
REQUEST_FIELDS = {
    "dna": (),
    "hello": ("info", "dropped"),
    "peers": ("info", "digest", "have", "push"),
    "publish": ("ops", "batch"),
    "chain": ("author", "from", "limit"),
    "record": ("hash",),
    "summary": ("heads", "warranted"),
    "warrants": ("warrants",),
    "grant": ("grant", "sig"),
    "witness": ("agent", "prev", "invite"),
    "offer": ("offer",),
}
REPLY_FIELDS = {
    "dna": ("dna",),
    "hello": ("info",),
    "peers": ("infos", "have", "ok"),
    "publish": ("results",),
    "chain": ("records",),
    "record": ("record",),
    "summary": ("heads", "warrants", "warranted"),
    "warrants": ("ok",),
    "grant": ("granted",),
    "witness": ("by", "at", "sig"),
    "offer": ("taken",),
}
assert set(REQUEST_FIELDS) == set(REQUESTS) == set(REPLY_FIELDS)

REPLAY_KEEP = 64  # messages remembered for replays
FLOOD_MAX = 32  # garbage requests in one flood
FLOODS_AT_ONCE = 4  # floods in flight; more are skipped
SLOW_S = (0.1, 2.0)  # a slow answer: within any sane request timeout
HANG_S = 60.0  # no answer: past every request timeout, but not forever
MAX_ITEMS = DECODE_MAX_ITEMS * 9 // 10  # an oversized field stays under the decoder's limit
MISBEHAVIOURS = (
    "wrong_type",
    "deep_wrong_type",
    "drop_field",
    "oversize",
    "truncate",
    "garbage",
    "wrong_shape",
    "replay",
    "other_dna",
    "slow",
    "hang",
)

# Values of the wrong type for any field: scalars, and the shapes real fields have (lists of
# lists, maps) with the wrong things inside. `[[b"x"]]` as publish results and 5 as summary
# heads are the two replies that once killed an honest node.
_ODD: tuple[object, ...] = (
    None,
    True,
    0,
    5,
    -1,
    1 << 70,
    -(1 << 70),
    "",
    "x" * 40,
    b"",
    b"x",
    b"\0" * 32,
    [],
    [5],
    [b"x"],
    [[b"x"]],
    [[5, 5, 5]],
    [[b"\0" * 32, "valid", 5]],
    [[b"\0" * 32, -1, b"\0" * 32]],
    [None],
    {},
    {"a": 1},
    {"body": 5, "sig": b"x"},
    [{"body": {}, "sig": b""}],
    [[b"x", b"y", b"z"]],
    [[[]]],
)


def _items(value) -> int:
    """CBOR items in `value`, about as the decoder counts them."""
    if isinstance(value, list):
        return 1 + sum(map(_items, value))
    if isinstance(value, dict):
        return 1 + sum(1 + _items(v) for v in value.values())
    return 1


def other_dna(rng: random.Random) -> bytes:
    """Another network's DNA hash (a random 32 bytes: no network here has it)."""
    return rng.randbytes(32)


class Garbage:
    """Malformed versions of real messages; pure functions of the rng and what they are given."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def odd(self):
        return self.rng.choice(_ODD)

    def _deep(self, value, depth: int = 0):
        """`value` with one thing somewhere inside it replaced by a value of the wrong type, or
        a list inside cut short."""
        rng = self.rng
        if isinstance(value, list) and value and depth < 4:
            i = rng.randrange(len(value))
            out = list(value)
            if rng.random() < 0.25:
                return out[:i]
            out[i] = self._deep(out[i], depth + 1)
            return out
        if isinstance(value, dict) and value and depth < 4:
            k = rng.choice(sorted(value, key=repr))
            return {**value, k: self._deep(value[k], depth + 1)}
        return self.odd()

    def _oversize(self, value):
        """Past a protocol bound (ops, heads, bytes), yet under the decoder's item limit, so it
        reaches the handler and not just the outer parser."""
        rng = self.rng
        if isinstance(value, list) and value:
            n = rng.choice((MAX_OPS_PER_MESSAGE + 1, MAX_SUMMARY_AUTHORS + 1))
            n = min(n, MAX_ITEMS // max(1, _items(value[0])))
            return [value[i % len(value)] for i in range(n)]
        if isinstance(value, bytes):
            return value * max(
                1, min(rng.randrange(1 << 10, 1 << 18), MAX_FRAME // 4) // max(1, len(value))
            )
        return [self.odd()] * rng.choice((MAX_OPS_PER_MESSAGE + 1, MAX_SUMMARY_AUTHORS + 1))

    def mutate(self, msg: dict, fields: tuple, kind: str, keep=("t",)) -> bytes:
        """One malformed version of the map `msg` (a request or a reply whose fields are
        `fields`), as bytes."""
        rng = self.rng
        out = dict(msg)
        names = [f for f in fields if f not in keep] or [f for f in out if f not in keep]
        name = rng.choice(names) if names else None
        if kind == "wrong_type" and name:
            out[name] = self.odd()
        elif kind == "deep_wrong_type" and name:
            out[name] = self._deep(out.get(name, self.odd()))
        elif kind == "drop_field" and name:
            out.pop(name, None)
        elif kind == "oversize" and name:
            out[name] = self._oversize(out.get(name, self.odd()))
        elif kind == "other_dna":
            if "dna" in out and isinstance(out["dna"], bytes):
                out["dna"] = other_dna(rng)
            else:
                out = {"err": "E_PROTOCOL", "msg": "this node is on another network"}
        raw = encode_trusted(out)
        return raw[:MAX_FRAME]

    def raw(self, kind: str, honest: bytes) -> bytes:
        rng = self.rng
        if kind == "truncate":
            return honest[: rng.randrange(len(honest))] if honest else b"\xa1"
        if kind == "wrong_shape":
            return encode_trusted(
                rng.choice(
                    ([1, 2, 3], 5, "results", b"x", None, {"results": {"x": 1}}, [{"t": "publish"}])
                )
            )
        return rng.randbytes(rng.choice((0, 1, 7, 64, 4096)))  # garbage


def _parse(raw: bytes):
    try:
        msg = decode(raw, MAX_FRAME, canonical=False)
    except Exception:  # noqa: BLE001 - garbage in, None out
        return None
    return msg if isinstance(msg, dict) else None


class Byzantine:
    """The misbehaviour of one node: its handler's replies and its transport's requests."""

    def __init__(self, rng: random.Random, rate: float = 0.3, flood: float = 0.02):
        self.rng = rng
        self.rate = rate
        self.flood = flood
        self.garbage = Garbage(rng)
        self.seen: deque[bytes] = deque(maxlen=REPLAY_KEEP)  # raw requests and replies that went by
        self.counts: dict[str, int] = {}
        self._floods = 0
        self.nursery: trio.Nursery | None = None
        self.inner: Transport  # set by byzantine_factory before the node runs

    def _pick(self) -> str | None:
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(MISBEHAVIOURS)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return kind

    def _corrupt(self, kind: str, raw: bytes, fields: tuple, keep) -> bytes:
        if kind == "replay" and self.seen:
            return self.rng.choice(self.seen)
        msg = _parse(raw)
        if kind in ("truncate", "garbage", "wrong_shape") or msg is None:
            return self.garbage.raw(kind, raw)
        return self.garbage.mutate(msg, fields, kind, keep)

    # -- the serving side: replies to other nodes' requests
    def wrap_handler(self, handler):
        async def handle(peer: bytes, raw: bytes) -> bytes:
            self.seen.append(raw)
            reply = await handler(peer, raw)
            kind = self._pick()
            if kind is None:
                return reply
            self.seen.append(reply)
            if kind in ("slow", "hang"):
                await trio.sleep(self.rng.uniform(*SLOW_S) if kind == "slow" else HANG_S)
                return reply
            msg = _parse(raw)
            t = msg.get("t") if msg is not None else None
            return self._corrupt(
                kind, reply, REPLY_FIELDS.get(t, ()) if isinstance(t, str) else (), ()
            )

        return handle

    # -- the requesting side: this node's own requests
    async def request(self, peer: bytes, payload: bytes, timeout: float = 5.0) -> bytes:
        if self.rng.random() < self.flood and self._floods < FLOODS_AT_ONCE and self.nursery:
            self._floods += 1
            self.nursery.start_soon(self._flood, peer, payload, timeout)
        kind = self._pick()
        if kind is not None and kind not in ("slow", "hang"):
            msg = _parse(payload)
            t = msg.get("t") if msg is not None else None
            payload = self._corrupt(
                kind, payload, REQUEST_FIELDS.get(t, ()) if isinstance(t, str) else (), ("t",)
            )
        elif kind == "slow":
            await trio.sleep(self.rng.uniform(*SLOW_S))
        reply = await self.inner.request(peer, payload, timeout)
        self.seen.append(reply)
        return reply

    async def _flood(self, peer: bytes, payload: bytes, timeout: float) -> None:
        """Garbage requests of every type at one peer, at once; answers and failures ignored."""
        try:
            msg = _parse(payload) or {}
            async with trio.open_nursery() as n:
                for _ in range(self.rng.randint(4, FLOOD_MAX)):
                    t = self.rng.choice(sorted(REQUESTS))
                    base = {**msg, "t": t}
                    kind = self.rng.choice(
                        (
                            "wrong_type",
                            "deep_wrong_type",
                            "drop_field",
                            "oversize",
                            "other_dna",
                            "garbage",
                            "replay",
                        )
                    )
                    n.start_soon(
                        self._one,
                        peer,
                        self._corrupt(kind, encode_trusted(base), REQUEST_FIELDS[t], ("t",)),
                        timeout,
                    )
        finally:
            self._floods -= 1

    async def _one(self, peer: bytes, raw: bytes, timeout: float) -> None:
        try:
            await self.inner.request(peer, raw, timeout)
        except Exception:  # noqa: BLE001 - a flood does not care what comes back
            pass


class ByzantineTransport:
    """The transport the node sees: requests go through the Byzantine's corruption; everything
    else (addresses, dialing, the peer set) is the wrapped transport's."""

    def __init__(self, inner, byz: Byzantine):
        self._inner = inner
        self.byzantine = byz

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def request(self, peer: bytes, payload: bytes, timeout: float = 5.0) -> bytes:
        return await self.byzantine.request(peer, payload, timeout)


def byzantine_factory(
    inner_factory: TransportFactory, rng: random.Random, rate: float = 0.3, flood: float = 0.02
) -> TransportFactory:
    """A transport factory (what NetNode.open takes) whose node misbehaves on the wire."""

    @asynccontextmanager
    async def factory(seed: bytes, handler: Handler) -> AsyncIterator[ByzantineTransport]:
        byz = Byzantine(rng, rate, flood)
        async with trio.open_nursery() as n:
            byz.nursery = n
            async with inner_factory(seed, byz.wrap_handler(handler)) as t:
                byz.inner = t
                try:
                    yield ByzantineTransport(t, byz)
                finally:
                    n.cancel_scope.cancel()

    return factory
