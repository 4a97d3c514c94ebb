"""The keystore file: keys appended one record at a time survive reopening; two writers on one
file lose nothing; a torn last record (a crash mid-append) is dropped and cut off, a damaged
record before good ones is refused; an old-format keystore.cbor migrates once; the file is
private."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest

from node.core.crypto import SigningKey
from node.core.encoding import encode
from node.keystore import FILE, HEADER, LEGACY_FILE, RECORD, Keystore, KeystoreInsecure
from node.sdk import LocalNode, StoreCorrupted
from node.store import Store

START = 1_730_678_400


def key(name: str) -> SigningKey:
    return SigningKey(hashlib.blake2b(name.encode(), digest_size=32).digest())


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def filled(tmp_path, n=3) -> tuple[Keystore, list[SigningKey]]:
    ks = Keystore.open(str(tmp_path))
    keys = [key(f"k{i}") for i in range(n)]
    for k in keys:
        ks.add(k)
    return ks, keys


def held(tmp_path) -> set[bytes]:
    return set(Keystore.open(str(tmp_path)).keys)


def test_added_keys_are_appended_one_record_each_and_reopen(tmp_path):
    ks, keys = filled(tmp_path, 5)
    path = tmp_path / FILE
    assert os.path.getsize(path) == len(HEADER) + 5 * RECORD
    assert mode(path) == 0o600
    ks.add(keys[2])  # already held: nothing is appended
    assert os.path.getsize(path) == len(HEADER) + 5 * RECORD
    again = Keystore.open(str(tmp_path))
    assert len(again) == 5
    for k in keys:
        assert again.get(k.public).seed == k.seed
    assert again.get(key("never added").public) is None


def test_an_empty_directory_holds_no_keys_and_writes_nothing_until_a_key_is_added(tmp_path):
    ks = Keystore.open(str(tmp_path))
    assert len(ks) == 0 and ks.get(key("x").public) is None
    assert os.listdir(tmp_path) == []


def test_two_keystores_on_one_file_see_each_others_appends_and_lose_nothing(tmp_path):
    a, b = Keystore.open(str(tmp_path)), Keystore.open(str(tmp_path))
    ka = [key(f"a{i}") for i in range(20)]
    kb = [key(f"b{i}") for i in range(20)]
    for x, y in zip(ka, kb):
        a.add(x)
        b.add(y)
    assert a.get(kb[-1].public).seed == kb[-1].seed  # a reader picks up the other's tail
    assert b.get(ka[0].public).seed == ka[0].seed
    assert held(tmp_path) == {k.public for k in ka + kb}
    assert os.path.getsize(tmp_path / FILE) == len(HEADER) + 40 * RECORD


WRITER = """
import hashlib, sys
from node.core.crypto import SigningKey
from node.keystore import Keystore
ks = Keystore.open(sys.argv[1])
for i in range(int(sys.argv[3])):
    ks.add(SigningKey(hashlib.blake2b(f"{sys.argv[2]}{i}".encode(), digest_size=32).digest()))
"""


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    n = 300
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), who, str(n)])
        for who in ("p", "q")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert held(tmp_path) == {key(f"{who}{i}").public for who in "pq" for i in range(n)}
    assert os.path.getsize(tmp_path / FILE) == len(HEADER) + 2 * n * RECORD


@pytest.mark.parametrize(
    "tail",
    [b"\x00", lambda r: r[: RECORD - 1], lambda r: r[:-1] + b"\x00", lambda r: b"\x00" * RECORD],
)
def test_a_torn_last_record_is_dropped_and_cut_off_by_the_next_append(tmp_path, tail):
    ks, keys = filled(tmp_path)
    path = tmp_path / FILE
    torn_key = key("torn")
    good = path.read_bytes()
    rec = torn_key.seed + torn_key.public + b"?" * (RECORD - 64)
    path.write_bytes(good + (tail if isinstance(tail, bytes) else tail(rec)))
    reopened = Keystore.open(str(tmp_path))
    assert set(reopened.keys) == {k.public for k in keys}  # never misread as a key
    assert reopened.get(torn_key.public) is None
    late = key("late")
    reopened.add(late)
    assert path.read_bytes()[: len(good)] == good
    assert os.path.getsize(path) == len(good) + RECORD
    assert held(tmp_path) == {k.public for k in keys + [late]}


@pytest.mark.parametrize("where", [0, 10, 40, RECORD - 1])
def test_a_damaged_record_before_good_ones_is_refused(tmp_path, where):
    filled(tmp_path)
    path = tmp_path / FILE
    data = bytearray(path.read_bytes())
    data[len(HEADER) + RECORD + where] ^= 0x01  # the second of three records
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupted) as e:
        Keystore.open(str(tmp_path))
    assert f"record at byte {len(HEADER) + RECORD} is damaged" in str(e.value)


@pytest.mark.parametrize(
    "content", [b"", b"budgetnode-keys", b"budgetnode-keys2" + b"\x00" * RECORD]
)
def test_a_file_that_is_not_a_keystore_is_refused(tmp_path, content):
    (tmp_path / FILE).write_bytes(content)
    os.chmod(tmp_path / FILE, 0o600)
    with pytest.raises(StoreCorrupted) as e:
        Keystore.open(str(tmp_path))
    assert "bad header" in str(e.value)


def test_a_record_whose_seed_does_not_give_its_public_key_is_refused(tmp_path):
    k, other = key("k"), key("other")
    body = k.seed + other.public  # a checksum-valid record that pairs the wrong keys
    path = tmp_path / FILE
    path.write_bytes(HEADER + body + hashlib.blake2b(body, digest_size=RECORD - 64).digest())
    os.chmod(path, 0o600)
    with pytest.raises(StoreCorrupted):
        Keystore.open(str(tmp_path)).get(other.public)


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604])
@pytest.mark.parametrize("name", [FILE, LEGACY_FILE])
def test_a_keystore_readable_by_others_is_refused_untouched(tmp_path, bad_mode, name):
    path = tmp_path / name
    path.write_bytes(encode([key("k").seed]) if name == LEGACY_FILE else HEADER)
    os.chmod(path, bad_mode)
    with pytest.raises(KeystoreInsecure) as e:
        Keystore.open(str(tmp_path))
    assert "chmod 600" in str(e.value)
    assert os.listdir(tmp_path) == [name] and mode(path) == bad_mode


def legacy(tmp_path, keys) -> None:
    path = tmp_path / LEGACY_FILE
    path.write_bytes(encode([k.seed for k in keys]))
    os.chmod(path, 0o600)


def test_an_old_keystore_migrates_once_into_the_new_file(tmp_path):
    keys = [key(f"old{i}") for i in range(50)]
    legacy(tmp_path, keys)
    (tmp_path / (LEGACY_FILE + ".lock")).write_bytes(b"")
    ks = Keystore.open(str(tmp_path))
    assert set(ks.keys) == {k.public for k in keys}
    assert os.listdir(tmp_path) == [FILE]  # the old file and its lock are gone
    assert mode(tmp_path / FILE) == 0o600
    assert os.path.getsize(tmp_path / FILE) == len(HEADER) + 50 * RECORD
    assert held(tmp_path) == {k.public for k in keys}
    assert os.path.getsize(tmp_path / FILE) == len(HEADER) + 50 * RECORD  # once


def test_a_crash_before_the_old_keystore_is_removed_loses_and_repeats_nothing(
    tmp_path, monkeypatch
):
    keys = [key(f"old{i}") for i in range(20)]
    legacy(tmp_path, keys)
    real_unlink = os.unlink

    def crash(path, *a, **kw):
        if str(path).endswith(LEGACY_FILE):
            raise KeyboardInterrupt("simulated crash before the old file is removed")
        return real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        Keystore.open(str(tmp_path))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == sorted([FILE, LEGACY_FILE])
    assert os.path.getsize(tmp_path / FILE) == len(HEADER) + 20 * RECORD  # whole at once
    assert held(tmp_path) == {k.public for k in keys}
    assert os.listdir(tmp_path) == [FILE]
    assert os.path.getsize(tmp_path / FILE) == len(HEADER) + 20 * RECORD


def test_an_old_keystore_left_beside_the_new_one_adds_only_what_is_missing(tmp_path):
    """A crash after the new file was written but before the old one was removed, or an old
    backup restored beside the new file: its keys are merged, none twice."""
    _, keys = filled(tmp_path, 3)
    legacy(tmp_path, keys[1:] + [key("restored")])
    assert held(tmp_path) == {k.public for k in keys + [key("restored")]}
    assert os.path.getsize(tmp_path / FILE) == len(HEADER) + 4 * RECORD
    assert os.listdir(tmp_path) == [FILE]


@pytest.mark.parametrize(
    "content", [b"", b"\xff\xff", encode([1, 2]), encode({"a": b"x"}), encode([b"short"])]
)
def test_a_damaged_old_keystore_is_refused_and_kept(tmp_path, content):
    (tmp_path / LEGACY_FILE).write_bytes(content)
    os.chmod(tmp_path / LEGACY_FILE, 0o600)
    with pytest.raises(StoreCorrupted) as e:
        Keystore.open(str(tmp_path))
    assert LEGACY_FILE in str(e.value)
    assert os.listdir(tmp_path) == [LEGACY_FILE]


async def test_a_node_whose_keys_are_in_the_old_format_opens_with_every_agent(tmp_path):
    clock = lambda: START  # noqa: E731
    async with LocalNode.open(path=str(tmp_path), clock=clock) as node:
        alice = await node.new_agent()
        await alice.transmit_understanding("s", "p", "o")
        agents = node.agents()
        keys = [node.keystore.get(node.cells[pub].key.public) for pub in node.cells]
    os.remove(tmp_path / FILE)
    legacy(tmp_path, keys)  # as the previous release left the directory
    async with LocalNode.open(path=str(tmp_path), clock=clock) as node:
        assert node.agents() == agents
        await (await node.agent(alice.agent_id)).transmit_understanding("s2", "p", "o")
    assert not (tmp_path / LEGACY_FILE).exists()


async def test_a_new_agents_key_is_on_disk_before_its_genesis_is_written(tmp_path, monkeypatch):
    seen = []
    real_append = Store.append

    def append(self, s, prev_seq, *a, **kw):
        if prev_seq is None:  # a genesis: its author's key must already be in the file
            seen.append(Keystore.open(str(tmp_path)).get(s.action["author"]) is not None)
        return real_append(self, s, prev_seq, *a, **kw)

    monkeypatch.setattr(Store, "append", append)
    async with LocalNode.open(path=str(tmp_path), clock=lambda: START) as node:
        for _ in range(3):
            await node.new_agent()
    assert seen == [True] * 4  # the steward and three agents
