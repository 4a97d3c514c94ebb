"""The node's private keys: one CBOR file, mode 0600, replaced atomically on every change."""
from __future__ import annotations

import fcntl
import os
import stat

from .core.crypto import SigningKey
from .core.encoding import decode, encode
from .core.errors import BudgetError, KeystoreInsecure, MalformedInput, StoreCorrupted


class Keystore:
    def __init__(self, path: str):
        self.path = path
        self.keys: dict[bytes, SigningKey] = {}
        if os.path.exists(path):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                raise KeystoreInsecure(f"{path} has mode {mode:04o}; other users could read the "
                                       f"node's keys (chmod 600 {path})")
            self.keys = self._read()

    def _read(self) -> dict[bytes, SigningKey]:
        with open(self.path, "rb") as f:
            data = f.read()
        keys = {}
        try:
            seeds = decode(data, 64 << 20)
            if not isinstance(seeds, list) or not all(isinstance(s, bytes) for s in seeds):
                raise MalformedInput("expected a list of key seeds")
            for seed in seeds:
                k = SigningKey(seed)
                keys[k.public] = k
        except BudgetError as e:
            raise StoreCorrupted(f"keystore {self.path}: {e}") from None
        return keys

    def add(self, key: SigningKey) -> None:
        # Another node open on the same directory may have added keys since we read the file:
        # merge them under a lock, or rewriting the file would lose them (and their chains).
        lfd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lfd, fcntl.LOCK_EX)
            if os.path.exists(self.path):
                self.keys = {**self._read(), **self.keys}
            self.keys[key.public] = key
            tmp = self.path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # a leftover tmp file keeps its old mode through O_CREAT
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
        finally:
            os.close(lfd)  # releases the lock

    def get(self, public: bytes) -> SigningKey | None:
        key = self.keys.get(public)
        if key is None and os.path.exists(self.path):
            self.keys = {**self._read(), **self.keys}  # another process may have added it
            key = self.keys.get(public)
        return key
