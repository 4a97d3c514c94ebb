"""The node's private keys: one CBOR file, mode 0600, replaced atomically on every change."""
from __future__ import annotations

import os
import stat

from .core.crypto import SigningKey
from .core.encoding import decode, encode
from .core.errors import BudgetError, StoreCorrupted


class KeystoreInsecure(BudgetError):
    code = "E_KEYSTORE_INSECURE"


class Keystore:
    def __init__(self, path: str):
        self.path = path
        self.keys: dict[bytes, SigningKey] = {}
        if os.path.exists(path):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                raise KeystoreInsecure(f"{path} has mode {mode:04o}; other users could read the "
                                       f"node's keys (chmod 600 {path})")
            with open(path, "rb") as f:
                try:
                    seeds = decode(f.read(), 64 << 20)
                    for seed in seeds:
                        k = SigningKey(seed)
                        self.keys[k.public] = k
                except BudgetError as e:
                    raise StoreCorrupted(f"keystore {path}: {e}") from None

    def add(self, key: SigningKey) -> None:
        self.keys[key.public] = key
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, encode([k.seed for k in self.keys.values()]))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def get(self, public: bytes) -> SigningKey | None:
        return self.keys.get(public)
