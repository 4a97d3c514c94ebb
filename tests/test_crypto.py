"""Signature checks, including the cache of ones already found good."""

from node.core import crypto
from node.core.crypto import SigningKey, verify


def test_a_good_signature_is_remembered_and_a_forgery_never_is():
    key = SigningKey(b"\x01" * 32)
    data = b"an action body"
    sig = key.sign(data)
    forged = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify(key.public, forged, data)
    assert verify(key.public, sig, data)
    assert verify(key.public, sig, data)  # a cache hit
    assert not verify(key.public, forged, data)  # still refused after the good one
    assert not verify(key.public, sig, data + b"!")  # the signature covers these bytes only
    assert not verify(SigningKey(b"\x02" * 32).public, sig, data)
    assert not verify(key.public, sig[:63], data)


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(crypto, "MAX_VERIFIED", 8)
    key = SigningKey(b"\x03" * 32)
    for i in range(20):
        data = i.to_bytes(4, "big")
        assert verify(key.public, key.sign(data), data)
    assert len(crypto._verified) <= crypto.MAX_VERIFIED
