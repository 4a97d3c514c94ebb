"""The node's private keys: an append-only file of fixed-size records, mode 0600.

Adding a key appends one record and fsyncs it: constant time, whatever the number of keys (the
old format, a CBOR list rewritten whole on every change, cost O(n) per key and could not hold
10,000). A record is seed | public key | BLAKE2b-128 of both, so a torn or damaged record is
never read as a key. Each record is its own write and fsync under an exclusive lock, and a key
is used only after its fsync, so a crash can tear only the last record, and only one no chain
names: a bad or short last record is dropped (and cut off by the next writer); a bad record
before a good one is corruption, refused. Readers take a shared lock, so they never see a
write in progress.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager

from .core.crypto import KEY_LEN, SigningKey
from .core.encoding import decode
from .core.errors import BudgetError, KeystoreInsecure, MalformedInput, StoreCorrupted

FILE = "keystore.keys"
LEGACY_FILE = "keystore.cbor"  # the old format, migrated on open
HEADER = b"budgetnode-keys1"  # 16 bytes: format and version
_CHECK_LEN = 16
RECORD = 2 * KEY_LEN + _CHECK_LEN
_CHUNK = RECORD * 8192  # how much of the file one read takes


def _check(seed_and_public: bytes) -> bytes:
    return hashlib.blake2b(seed_and_public, digest_size=_CHECK_LEN).digest()


def _record(key: SigningKey) -> bytes:
    body = key.seed + key.public
    return body + _check(body)


def _refuse_if_readable(path: str) -> None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeystoreInsecure(
            f"{path} has mode {mode:04o}; other users could read the node's keys (chmod 600 {path})"
        )


def _fsync_dir(path: str) -> None:
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Keystore:
    """`add(key)` makes a key durable; `get(public)` finds one, including keys another process
    sharing the directory appended since; `keys` is a view of the public keys held."""

    def __init__(self, path: str, legacy: str | None = None):
        self.path = path
        self._seeds: dict[bytes, bytes] = {}  # public key -> seed
        self._end = 0  # file offset up to which records are read
        for p in (path, legacy):
            if p is not None and os.path.exists(p):
                _refuse_if_readable(p)
        if legacy is not None and os.path.exists(legacy):
            self._migrate(legacy)
        self.refresh()

    @classmethod
    def open(cls, directory: str) -> Keystore:
        return cls(os.path.join(directory, FILE), os.path.join(directory, LEGACY_FILE))

    @property
    def keys(self):
        return self._seeds.keys()

    def __len__(self) -> int:
        return len(self._seeds)

    # -- reading
    def refresh(self) -> None:
        """Read the records appended since the last read (by this process or another)."""
        try:
            with self._locked(fcntl.LOCK_SH) as fd:
                self._catch_up(fd)
        except FileNotFoundError:
            pass  # no key was ever added

    def get(self, public: bytes) -> SigningKey | None:
        seed = self._seeds.get(public)
        if seed is None:
            self.refresh()  # another process may have added it
            seed = self._seeds.get(public)
            if seed is None:
                return None
        key = SigningKey(seed)
        if key.public != public:
            raise StoreCorrupted(f"keystore {self.path}: a record's seed does not give its key")
        return key

    def _catch_up(self, fd: int, repair: bool = False) -> None:
        """Read the records past self._end (the caller holds the lock). A torn last record is
        dropped, and with `repair` (an exclusive lock held) cut off so the next append follows
        the last good record."""
        size = os.fstat(fd).st_size
        if self._end == 0:
            if os.pread(fd, len(HEADER), 0) != HEADER:
                raise StoreCorrupted(f"keystore {self.path}: not a keystore file (bad header)")
            self._end = len(HEADER)
        while self._end + RECORD <= size and self._read_chunk(fd, size):
            pass
        if self._end < size and repair:
            os.ftruncate(fd, self._end)

    def _read_chunk(self, fd: int, size: int) -> bool:
        """Read up to _CHUNK of whole records at self._end; False at a bad last record."""
        n = min(_CHUNK, (size - self._end) // RECORD * RECORD)
        data = os.pread(fd, n, self._end)
        if len(data) != n:
            raise StoreCorrupted(f"keystore {self.path}: shrank while locked")
        for off in range(0, n, RECORD):
            rec = data[off : off + RECORD]
            if _check(rec[: 2 * KEY_LEN]) != rec[2 * KEY_LEN :]:
                if self._end + RECORD < size:
                    raise StoreCorrupted(
                        f"keystore {self.path}: the record at byte {self._end} is damaged"
                    )
                return False
            self._seeds[rec[KEY_LEN : 2 * KEY_LEN]] = rec[:KEY_LEN]
            self._end += RECORD
        return True

    @contextmanager
    def _locked(self, how: int):
        flags = os.O_RDONLY if how == fcntl.LOCK_SH else os.O_RDWR | os.O_APPEND
        fd = os.open(self.path, flags)
        try:
            fcntl.flock(fd, how)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    # -- writing
    def add(self, key: SigningKey) -> None:
        """Append `key` and fsync it; when this returns, the key survives a crash. One record
        per write and fsync, so a crash can tear only the last record."""
        if not os.path.exists(self.path):
            self._create()
        with self._locked(fcntl.LOCK_EX) as fd:
            self._catch_up(fd, repair=True)
            if key.public in self._seeds:
                return
            rec = _record(key)
            if os.write(fd, rec) != RECORD:
                raise OSError(f"short write to {self.path}")  # the next writer cuts it off
            os.fsync(fd)
            self._seeds[key.public] = key.seed
            self._end += RECORD

    def _create(self, keys: Sequence[SigningKey] = ()) -> None:
        """Make the file appear whole (header and `keys` written and fsynced) or not at all; if
        another process made it first, theirs stands."""
        directory = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".keystore-", suffix=".tmp")  # 0600
        try:
            try:
                data = HEADER + b"".join(_record(k) for k in keys)
                if os.write(fd, data) != len(data):
                    raise OSError(f"short write to {tmp}")
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return
        finally:
            os.unlink(tmp)
        _fsync_dir(self.path)

    def _migrate(self, legacy: str) -> None:
        """Copy every key of an old-format keystore into this one, then remove the old file.
        The new file appears with all of them at once; if it already existed (a crash before
        the old file was removed, or an old backup put back), the missing keys are added one
        by one. The old file goes only once its keys are safe."""
        try:
            with open(legacy, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return  # another process migrated it just now
        try:
            seeds = decode(data, 64 << 20)
            if not isinstance(seeds, list) or not all(isinstance(s, bytes) for s in seeds):
                raise MalformedInput("expected a list of key seeds")
            keys = list({k.public: k for k in map(SigningKey, seeds)}.values())
        except BudgetError as e:
            raise StoreCorrupted(f"keystore {legacy}: {e}") from None
        if not os.path.exists(self.path):
            self._create(keys)
        self.refresh()
        for k in keys:
            if k.public not in self._seeds:
                self.add(k)
        for leftover in (legacy, legacy + ".lock", legacy + ".tmp"):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass
        _fsync_dir(legacy)
