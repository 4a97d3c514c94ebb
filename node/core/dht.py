"""DHT routing, validation receipts, peer info: pure functions over bytes and keys."""
from __future__ import annotations

import functools
import heapq

from .action import Signed
from .crypto import SigningKey, blake2b_256, verify
from .encoding import encode

DEFAULT_R = 3


@functools.lru_cache(maxsize=1 << 16)
def location(key: bytes) -> int:
    """Peers and bases live on one ring: the BLAKE2b of their bytes, so keys spread evenly.
    Remembered (bounded): nearest() asks it for every peer on every lookup."""
    return int.from_bytes(blake2b_256(key), "big")


def nearest(basis: bytes, peers, r: int) -> list[bytes]:
    # distinct peers have distinct locations (else BLAKE2b collides), so distances never tie
    # distances computed in C (map over the cached locations), then the r smallest indices:
    # this runs for every basis on every peer-set change, over every peer
    peers = peers if type(peers) is list else list(peers)
    d = list(map(location(basis).__xor__, map(location, peers)))
    return [peers[i] for i in heapq.nsmallest(r, range(len(d)), key=d.__getitem__)]


def bases(s: Signed) -> list[bytes]:
    """Each action is held by the authorities of its hash, its entry and its author."""
    out = [s.hash, s.author]
    entry = s.action.get("entry")
    if isinstance(entry, bytes):
        out.append(entry)
    return out


def authorities(s: Signed, peers, r: int) -> set[bytes]:
    out: set[bytes] = set()
    for b in bases(s):
        out.update(nearest(b, peers, r))
    return out


def receipt_body(action_hash: bytes, validator: bytes) -> bytes:
    return encode({"receipt": action_hash, "validator": validator, "valid": True})


def sign_receipt(action_hash: bytes, key: SigningKey) -> bytes:
    return key.sign(receipt_body(action_hash, key.public))


def check_receipt(action_hash: bytes, validator: bytes, sig: bytes) -> bool:
    return verify(validator, sig, receipt_body(action_hash, validator))


def peer_info(key: SigningKey, dna_hash: bytes, addrs: list[str], agents: list[bytes],
              ts_us: int) -> dict:
    body = {"peer": key.public, "dna": dna_hash, "addrs": list(addrs)[:16],
            "agents": list(agents)[:1024], "ts": ts_us}
    return {"body": body, "sig": key.sign(encode(body))}


def check_peer_info(info, dna_hash: bytes) -> dict | None:
    """The body of a signed peer info for this network, or None."""
    body = peer_info_body(info, dna_hash)
    if body is None or not verify(body["peer"], info["sig"], encode(body)):
        return None
    return body


def peer_info_body(info, dna_hash: bytes) -> dict | None:
    """The body of a well-formed peer info for this network, its signature NOT yet checked (so a
    node can skip verifying infos no newer than one it holds), or None."""
    if not isinstance(info, dict) or not isinstance(info.get("body"), dict):
        return None
    body, sig = info["body"], info.get("sig")
    peer = body.get("peer")
    if not isinstance(peer, bytes) or not isinstance(sig, bytes) or body.get("dna") != dna_hash:
        return None
    if not isinstance(body.get("addrs"), list) or not isinstance(body.get("agents"), list):
        return None
    if not isinstance(body.get("ts"), int):
        return None
    return body
