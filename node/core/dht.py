"""DHT routing, validation receipts, peer info: pure functions over bytes and keys."""

from __future__ import annotations

import bisect
import functools
import heapq
from collections.abc import Iterable

from .action import Signed
from .crypto import SigningKey, blake2b_256, verify
from .encoding import Plain, PlainMap, encode, encode_trusted
from .errors import MalformedInput

DEFAULT_R = 3


@functools.lru_cache(maxsize=1 << 16)
def location(key: bytes) -> int:
    """Peers and bases live on one ring: the BLAKE2b of their bytes, so keys spread evenly.
    Remembered (bounded): nearest() asks it for every peer on every lookup."""
    return int.from_bytes(blake2b_256(key), "big")


def nearest(basis: bytes, peers: Iterable[bytes], r: int) -> list[bytes]:
    # distinct peers have distinct locations (else BLAKE2b collides), so distances never tie
    # distances computed in C (map over the cached locations), then the r smallest indices:
    # this runs for every basis on every peer-set change, over every peer
    ps = peers if type(peers) is list else list(peers)
    d = list(map(location(basis).__xor__, map(location, ps)))
    return [ps[i] for i in heapq.nsmallest(r, range(len(d)), key=d.__getitem__)]


class Ring:
    """A member set sorted by ring location, for many `nearest` lookups between changes. The R
    nearest a basis by XOR all share with it the longest bit prefix that at least R members
    share (any member sharing more bits is nearer than any sharing fewer), and each prefix is
    one contiguous run of the sorted locations: a binary search over prefix lengths finds it,
    and only that run (about 2R members) is compared, instead of every member."""

    def __init__(self, members: Iterable[bytes]):
        pairs = sorted(zip(map(location, members), members))
        self.locs = [loc for loc, _ in pairs]
        self.members = [m for _, m in pairs]

    def __len__(self) -> int:
        return len(self.locs)

    def nearest(self, basis: bytes, r: int) -> list[bytes]:
        """What `nearest(basis, members, r)` answers, nearest first."""
        locs, t = self.locs, location(basis)
        i, j = 0, len(locs)
        # shared prefix bits: lo always holds >= r members. Any run holding >= r members holds
        # the answer, so the search may stop short of 256 bits: n members share about log2(n)
        # with a basis, and past 2 log2(n) + 8 the run is a handful (or the answer is exact)
        lo, hi = 0, min(256, 2 * len(locs).bit_length() + 8)
        while lo < hi:
            k = (lo + hi + 1) >> 1
            shift = 256 - k
            base = (t >> shift) << shift
            a = bisect.bisect_left(locs, base, i, j)
            b = bisect.bisect_left(locs, base + (1 << shift), a, j)
            if b - a >= r:
                lo, i, j = k, a, b
            else:
                hi = k - 1
        return [m for _, m in heapq.nsmallest(r, zip(map(t.__xor__, locs[i:j]), self.members[i:j]))]


def bases(s: Signed) -> list[bytes]:
    """Each action is held by the authorities of its hash, its entry and its author."""
    out = [s.hash, s.author]
    entry = s.action.get("entry")
    if isinstance(entry, bytes):
        out.append(entry)
    return out


def authorities(s: Signed, peers: Iterable[bytes], r: int) -> set[bytes]:
    out: set[bytes] = set()
    for b in bases(s):
        out.update(nearest(b, peers, r))
    return out


def receipt_body(action_hash: bytes, validator: bytes) -> bytes:
    # two byte strings and a constant: checked here, so the plain-data walk is not needed
    if type(action_hash) is not bytes or type(validator) is not bytes:
        raise MalformedInput("a receipt names an action hash and a validator, as bytes")
    return encode_trusted({"receipt": action_hash, "validator": validator, "valid": True})


def sign_receipt(action_hash: bytes, key: SigningKey) -> bytes:
    return key.sign(receipt_body(action_hash, key.public))


def check_receipt(action_hash: bytes, validator: bytes, sig: bytes) -> bool:
    if type(action_hash) is not bytes or type(validator) is not bytes:
        return False
    return verify(validator, sig, receipt_body(action_hash, validator))


def peer_info(
    key: SigningKey, dna_hash: bytes, addrs: list[str], agents: list[bytes], ts_us: int
) -> PlainMap:
    body = {
        "peer": key.public,
        "dna": dna_hash,
        "addrs": list(addrs)[:16],
        "agents": list(agents)[:1024],
        "ts": ts_us,
    }
    return {"body": body, "sig": key.sign(encode(body))}


def check_peer_info(info: Plain, dna_hash: bytes) -> PlainMap | None:
    """The body of a signed peer info for this network, or None."""
    body = peer_info_body(info, dna_hash)
    # a body off the wire went through the strict decode's walk, so it is plain data already
    if body is None or not verify(body["peer"], info["sig"], encode_trusted(body)):
        return None
    return body


def peer_info_body(info: Plain, dna_hash: bytes) -> PlainMap | None:
    """The body of a well-formed peer info for this network, its signature NOT yet checked (so a
    node can skip verifying infos no newer than one it holds), or None."""
    if not isinstance(info, dict) or not isinstance(info.get("body"), dict):
        return None
    body: PlainMap = info["body"]
    sig = info.get("sig")
    peer = body.get("peer")
    if not isinstance(peer, bytes) or not isinstance(sig, bytes) or body.get("dna") != dna_hash:
        return None
    if not isinstance(body.get("addrs"), list) or not isinstance(body.get("agents"), list):
        return None
    if not isinstance(body.get("ts"), int):
        return None
    return body
