"""The store on disk: tampering is reported (naming the agent), never silently used; the
keystore is private and durable; two nodes on one directory never fork a chain; oversized
input writes nothing."""

from __future__ import annotations

import os
import random
import sqlite3
import stat

import pytest

from node.cell import Cell
from node.core.action import Signed
from node.core.crypto import SigningKey, from_text
from node.core.encoding import encode
from node.core.errors import HeadMoved
from node.core.validate import validate_chain
from node.keystore import FILE, HEADER, RECORD
from node.verifier import verify_path
from node.sdk import BudgetError, InsufficientRU, InvalidInput, LocalNode, StoreCorrupted, TooLarge
from zomes import APP

START = 1_730_678_400
DAY = 86_400


def opened(path, t=START):
    return LocalNode.open(path=str(path), clock=lambda: t)


async def populate(path, n=5):
    """A store with a steward and alice; alice has n understandings and one knowledge entry."""
    async with opened(path) as node:
        alice = await node.new_agent()
        hashes = [await alice.transmit_understanding(f"s{i}", "p", f"o{i}") for i in range(n)]
        hashes.append(await alice.add_knowledge("soil holds water", ["soil"]))
    return alice.agent_id, hashes


def raw(h: str) -> bytes:
    return from_text("action", h)


def sql(path, *statements):
    """Run statements on chain.db directly (the node is closed) and return the last's rows."""
    db = sqlite3.connect(os.path.join(path, "chain.db"))
    try:
        rows = None
        for q, *params in statements:
            rows = db.execute(q, *params).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


async def refused(path, agent_id, at_open: bool = False) -> StoreCorrupted:
    """The full verification (`budgetnode verify`, a network node's background pass) reports
    the damage, naming the agent; `at_open`: so does opening the store (what opening checks:
    each chain's checkpoint, head and tail; docs/ARCHITECTURE.md, "What is checked when")."""
    with pytest.raises(StoreCorrupted) as e:
        verify_path(str(path))
    assert e.value.code == "E_STORE_CORRUPTED"
    assert agent_id in str(e.value), str(e.value)
    if at_open:
        with pytest.raises(StoreCorrupted) as e:
            async with opened(path):
                pass
        assert agent_id in str(e.value), str(e.value)
    return e.value


def chain_len(node, agent_id) -> int:
    return len(node.store.chain(from_text("agent", agent_id)))


# -- tampering with chain.db


async def test_untampered_store_reopens(tmp_path):
    agent_id, hashes = await populate(tmp_path)
    async with opened(tmp_path) as node:
        assert [node.get_record(h)["seq"] for h in hashes] == list(range(1, len(hashes) + 1))
        assert node.get_record(hashes[-1])["content"] == {
            "content": "soil holds water",
            "tags": ["soil"],
        }


async def test_flipped_bytes_in_an_action_body_are_reported(tmp_path):
    agent_id, hashes = await populate(tmp_path)
    target = raw(hashes[2])
    [(body,)] = sql(tmp_path, ("SELECT body FROM actions WHERE hash=?", (target,)))
    rng = random.Random(3)
    positions = [0, 1, len(body) - 1] + rng.sample(range(2, len(body) - 1), 30)
    for i in positions:  # header bytes, the last byte, and a sample of the rest
        bad = bytearray(body)
        bad[i] ^= rng.choice([0x01, 0x80, 0xFF, rng.randrange(1, 256)])
        sql(tmp_path, ("UPDATE actions SET body=? WHERE hash=?", (bytes(bad), target)))
        await refused(tmp_path, agent_id)
        async with opened(tmp_path) as node:  # a checkpointed action, caught when read
            with pytest.raises(StoreCorrupted):
                node.get_record(hashes[2])
    sql(tmp_path, ("UPDATE actions SET body=? WHERE hash=?", (body, target)))
    async with opened(tmp_path) as node:  # restored: accepted again
        assert node.get_record(hashes[2])["seq"] == 3


async def test_edited_and_rehashed_action_is_reported(tmp_path):
    """An edit that keeps the stored hash consistent still breaks the signature."""
    agent_id, hashes = await populate(tmp_path)
    [(body,)] = sql(tmp_path, ("SELECT body FROM actions WHERE hash=?", (raw(hashes[1]),)))
    forged = Signed.from_wire(body, b"")
    action = dict(forged.action, ts=forged.action["ts"] + 1)
    new = Signed.sign(action, SigningKey(b"\x07" * 32))  # not alice's key
    sql(
        tmp_path,
        ("UPDATE actions SET body=?, hash=? WHERE hash=?", (new.body, new.hash, raw(hashes[1]))),
    )
    err = await refused(tmp_path, agent_id)
    assert "bad_signature" in str(err)


async def test_genesis_tampering_is_reported(tmp_path):
    agent_id, _ = await populate(tmp_path)
    pub = from_text("agent", agent_id)
    sql(
        tmp_path,
        (
            "UPDATE actions SET body=substr(body, 1, length(body) - 1) WHERE author=? AND seq=0",
            (pub,),
        ),
    )
    await refused(tmp_path, agent_id)


@pytest.mark.parametrize("how", ["flip_byte", "other_valid_entry", "delete", "empty"])
async def test_changed_entry_bytes_are_reported(tmp_path, how):
    agent_id, hashes = await populate(tmp_path)
    [(eh, body)] = sql(
        tmp_path,
        (
            "SELECT e.hash, e.body FROM entries e JOIN actions a ON a.entry=e.hash WHERE a.hash=?",
            (raw(hashes[3]),),
        ),
    )
    if how == "flip_byte":
        bad = bytearray(body)
        bad[len(bad) // 2] ^= 0x20
        q = ("UPDATE entries SET body=? WHERE hash=?", (bytes(bad), eh))
    elif how == "other_valid_entry":
        other = encode(
            {
                "type": "understanding",
                "content": {"subject": "s3", "predicate": "p", "object": "FORGED", "context": None},
            }
        )
        q = ("UPDATE entries SET body=? WHERE hash=?", (other, eh))
    elif how == "delete":
        q = ("DELETE FROM entries WHERE hash=?", (eh,))
    else:
        q = ("UPDATE entries SET body=x'' WHERE hash=?", (eh,))
    sql(tmp_path, q)
    err = await refused(tmp_path, agent_id)
    assert "entry_hash_mismatch" in str(err) or "entry_missing" in str(err)


@pytest.mark.parametrize("which", ["middle", "first_after_genesis", "head", "genesis"])
async def test_deleted_action_is_reported(tmp_path, which):
    agent_id, hashes = await populate(tmp_path)
    pub = from_text("agent", agent_id)
    seq = {"middle": 3, "first_after_genesis": 1, "head": len(hashes), "genesis": 0}[which]
    sql(tmp_path, ("DELETE FROM actions WHERE author=? AND seq=?", (pub, seq)))
    await refused(tmp_path, agent_id, at_open=which == "head")


async def test_deleted_chain_head_row_is_reported(tmp_path):
    """Without its head row the chain must not silently drop out of the node."""
    agent_id, _ = await populate(tmp_path)
    sql(tmp_path, ("DELETE FROM heads WHERE author=?", (from_text("agent", agent_id),)))
    await refused(tmp_path, agent_id, at_open=True)


@pytest.mark.parametrize(
    "seq,which",
    [(None, 1), (2, 1), (9, None)],
    ids=["hash_of_an_older_action", "rewound_to_an_older_action", "ahead_of_the_chain"],
)
async def test_head_row_not_at_the_last_action_is_reported(tmp_path, seq, which):
    agent_id, hashes = await populate(tmp_path)
    pub = from_text("agent", agent_id)
    if seq is not None:
        sql(tmp_path, ("UPDATE heads SET seq=? WHERE author=?", (seq, pub)))
    if which is not None:
        sql(tmp_path, ("UPDATE heads SET hash=? WHERE author=?", (raw(hashes[which]), pub)))
    await refused(tmp_path, agent_id, at_open=True)


async def test_swapped_signatures_are_reported(tmp_path):
    agent_id, hashes = await populate(tmp_path)
    a, b = raw(hashes[1]), raw(hashes[2])
    [(sa,)] = sql(tmp_path, ("SELECT sig FROM actions WHERE hash=?", (a,)))
    [(sb,)] = sql(tmp_path, ("SELECT sig FROM actions WHERE hash=?", (b,)))
    sql(
        tmp_path,
        ("UPDATE actions SET sig=? WHERE hash=?", (sb, a)),
        ("UPDATE actions SET sig=? WHERE hash=?", (sa, b)),
    )
    err = await refused(tmp_path, agent_id)
    assert "bad_signature" in str(err)


@pytest.mark.parametrize("sig", [b"", b"\x00" * 64, "text, not bytes"])
async def test_replaced_signature_is_reported(tmp_path, sig):
    agent_id, hashes = await populate(tmp_path)
    sql(tmp_path, ("UPDATE actions SET sig=? WHERE hash=?", (sig, raw(hashes[4]))))
    await refused(tmp_path, agent_id)


async def test_steward_chain_tampering_names_the_steward(tmp_path):
    await populate(tmp_path)
    async with opened(tmp_path) as node:
        steward = node.steward.agent_id
    sql(
        tmp_path,
        (
            "UPDATE actions SET sig=zeroblob(64) WHERE author=? AND seq=0",
            (from_text("agent", steward),),
        ),
    )
    await refused(tmp_path, steward)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database, just some text\n" * 100,
        bytes(random.Random(1).randrange(256) for _ in range(8192)),
        b"SQLite format 3\x00" + b"\xff" * 4080,
    ],
)
async def test_garbage_chain_db_is_refused(tmp_path, content):
    (tmp_path / "chain.db").write_bytes(content)
    with pytest.raises(StoreCorrupted) as e:
        async with opened(tmp_path):
            pass
    assert e.value.code == "E_STORE_CORRUPTED" and "chain.db" in str(e.value)
    assert (tmp_path / "chain.db").read_bytes() == content  # refused, not "repaired" over


async def test_truncated_chain_db_is_refused(tmp_path):
    now = [float(START)]
    async with LocalNode.open(path=str(tmp_path), clock=lambda: now[0]) as node:
        alice = await node.new_agent()
        for i in range(30):  # enough rows to span many pages
            now[0] += DAY
            await alice.add_knowledge(f"{i} " + "x" * 2000)
    db = tmp_path / "chain.db"
    data = db.read_bytes()
    assert len(data) > 16 * 4096
    db.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreCorrupted):
        async with opened(tmp_path):
            pass


# -- the keystore


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_keystore_is_private_and_reopening_restores_agents_chains_and_budgets(tmp_path):
    async with opened(tmp_path) as node:
        alice, bob = await node.new_agent(), await node.new_agent()
        for i in range(4):
            await alice.transmit_understanding(f"s{i}", "p", "o")
        await bob.add_knowledge("k")
        agents = node.agents()
        chains = {a: [s.hash for s in node.store.chain(from_text("agent", a))] for a in agents}
        budgets = {a: (await (await node.agent(a)).budget_status()).to_dict() for a in agents}
    ks = tmp_path / FILE
    assert mode(ks) == 0o600

    async with opened(tmp_path) as node:
        assert node.agents() == agents
        assert {
            a: [s.hash for s in node.store.chain(from_text("agent", a))] for a in agents
        } == chains
        assert {
            a: (await (await node.agent(a)).budget_status()).to_dict() for a in agents
        } == budgets
        assert budgets[alice.agent_id]["remaining_mru"] == 100_000 - 4 * 3_000
        assert budgets[bob.agent_id]["remaining_mru"] == 100_000 - 33_000
        # the re-attached agents write on where they left off, with the keys they had
        a = await node.agent(alice.agent_id)
        h = await a.transmit_understanding("again", "p", "o")
        assert node.get_record(h)["seq"] == 5
        assert (await a.budget_status()).remaining_mru == 100_000 - 5 * 3_000
    assert mode(ks) == 0o600


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660, 0o666])
async def test_readable_keystore_is_refused(tmp_path, bad_mode):
    agent_id, hashes = await populate(tmp_path, n=1)
    ks = tmp_path / FILE
    before = ks.read_bytes(), (tmp_path / "chain.db").read_bytes()
    os.chmod(ks, bad_mode)
    with pytest.raises(BudgetError) as e:
        async with opened(tmp_path):
            pass
    assert e.value.code == "E_KEYSTORE_INSECURE"
    assert "chmod 600" in str(e.value)
    assert (ks.read_bytes(), (tmp_path / "chain.db").read_bytes()) == before  # nothing touched
    os.chmod(ks, 0o600)
    async with opened(tmp_path) as node:
        assert agent_id in node.agents()


async def test_keystore_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        agent_id, _ = await populate(tmp_path, n=1)
        async with opened(tmp_path) as node:
            await node.new_agent()
    finally:
        os.umask(old)
    assert mode(tmp_path / FILE) == 0o600
    async with opened(tmp_path) as node:
        assert len(node.agents()) == 3 and agent_id in node.agents()


@pytest.mark.parametrize(
    "content", [b"", b"\xff\xff", encode([b"x" * 32]), HEADER[:-1], HEADER + b"\x00" * RECORD * 2]
)
async def test_damaged_keystore_is_refused(tmp_path, content):
    await populate(tmp_path, n=1)
    (tmp_path / FILE).write_bytes(content)
    with pytest.raises(StoreCorrupted) as e:
        async with opened(tmp_path):
            pass
    assert "keystore" in str(e.value)


async def test_missing_keystore_is_refused_naming_the_agent(tmp_path):
    agent_id, _ = await populate(tmp_path, n=1)
    os.remove(tmp_path / FILE)
    with pytest.raises(StoreCorrupted) as e:
        async with opened(tmp_path):
            pass
    assert "no key in the keystore" in str(e.value)


async def test_two_nodes_adding_agents_keep_each_others_keys(tmp_path):
    async with opened(tmp_path) as n1:
        async with opened(tmp_path) as n2:
            a = await n1.new_agent()
            b = await n2.new_agent()
            c = await n1.new_agent()
    assert mode(tmp_path / FILE) == 0o600
    async with opened(tmp_path) as node:  # every chain has its key: the store opens
        assert {a.agent_id, b.agent_id, c.agent_id} <= set(node.agents())
        for x in (a, b, c):
            await (await node.agent(x.agent_id)).transmit_understanding("s", "p", "o")


# -- compare-and-swap: two nodes, one directory, one agent


async def test_two_writers_on_one_chain_never_fork_and_share_one_budget(tmp_path, monkeypatch):
    reloads = []
    real_reload = Cell.reload

    def counting_reload(self):
        reloads.append(self.agent_id)
        return real_reload(self)

    monkeypatch.setattr(Cell, "reload", counting_reload)
    now = [float(START)]
    clock = lambda: now[0]  # noqa: E731
    async with LocalNode.open(path=str(tmp_path), clock=clock) as n1:
        a1 = await n1.new_agent()
        pub = from_text("agent", a1.agent_id)
        async with LocalNode.open(path=str(tmp_path), clock=clock) as n2:
            a2 = await n2.agent(a1.agent_id)
            rng = random.Random(5)
            order = [rng.choice([1, 2]) for _ in range(33)]
            assert order.count(1) and order.count(2)
            written = []
            for i, which in enumerate(order):
                now[0] += 1
                who = a1 if which == 1 else a2
                written.append(await who.transmit_understanding(f"s{i}", "p", "o"))
                # the writer caught up first, so its budget counts both nodes' writes
                assert (await who.budget_status()).remaining_mru == 100_000 - 3_000 * (i + 1)
            switches = sum(x != y for x, y in zip(order, order[1:]))
            assert len(reloads) >= switches > 0

            # 33 writes spent the one shared window: both nodes now refuse, writing nothing
            for who in (a1, a2, a1):
                with pytest.raises(InsufficientRU):
                    await who.transmit_understanding("over", "p", "o")

            for node in (n1, n2):
                chain = node.store.chain(pub)
                state = validate_chain(chain, node.dna, APP, node.store.entries_of(pub))
                assert state.seq == 33 and state.budget.remaining_mru == 1_000
                assert [s.hash for s in chain[1:]] == [raw(h) for h in written]
                assert (
                    sql(tmp_path, ("SELECT count(*) FROM actions WHERE author=?", (pub,)))[0][0]
                    == 34
                )

            # a new window: each node writes once more, still on one chain
            now[0] += DAY
            h1 = await a1.transmit_understanding("next", "p", "o")
            h2 = await a2.transmit_understanding("next", "p", "o")
            assert n1.get_record(h1)["seq"] == 34 and n2.get_record(h2)["seq"] == 35
            assert (await a2.budget_status()).remaining_mru == 94_000

            # the store itself refuses an append from a stale head, writing nothing
            stale = n1.cells[pub].state  # n1 has not seen h2
            assert stale.seq == 34
            key = n1.keystore.get(pub)
            fork = Signed.sign(
                {
                    "type": "charge",
                    "author": pub,
                    "seq": 35,
                    "prev": stale.hash,
                    "ts": stale.ts,
                    "count": 1,
                    "budget": {},
                },
                key,
            )
            with pytest.raises(HeadMoved):
                await n1.store.append(fork, stale.seq, stale.hash)
            with pytest.raises(HeadMoved):  # and a second genesis for the same agent
                await n1.store.append(fork, None, None)
            assert n1.store.head(pub) == (35, raw(h2))

    async with LocalNode.open(path=str(tmp_path), clock=clock) as node:
        a = await node.agent(a1.agent_id)
        assert (await a.budget_status()).remaining_mru == 94_000
        assert chain_len(node, a.agent_id) == 36


# -- oversized and invalid input through the SDK writes nothing


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.add_knowledge("x" * 100_000),
        lambda a: a.add_knowledge("ok", ["t" * 100_000]),
        lambda a: a.add_knowledge("ok", ["t"] * 10_000),
        lambda a: a.transmit_understanding("s" * 100_000, "p", "o"),
        lambda a: a.transmit_understanding("s", "p", "o", context="c" * 100_000),
        lambda a: a.create_thought_credential("t", "b" * 100_000),
        lambda a: a.call("rose_forest", "add_knowledge", {"content": "x" * (1 << 20)}),
        lambda a: a.add_knowledge(b"bytes, not text"),
        lambda a: a.add_knowledge(""),
    ],
    ids=[
        "knowledge_100KB",
        "tag_100KB",
        "10k_tags",
        "subject_100KB",
        "context_100KB",
        "credential_body_100KB",
        "call_1MB",
        "bytes_content",
        "empty_content",
    ],
)
async def test_oversized_or_invalid_input_writes_nothing(tmp_path, call):
    async with opened(tmp_path) as node:
        alice = await node.new_agent()
        await alice.transmit_understanding("s", "p", "o")
        n = chain_len(node, alice.agent_id)
        budget = (await alice.budget_status()).to_dict()
        with pytest.raises(InvalidInput) as e:  # TooLarge is an InvalidInput
            await call(alice)
        assert e.value.code in ("E_INVALID_INPUT", "E_TOO_LARGE", "E_MALFORMED")
        assert chain_len(node, alice.agent_id) == n
        assert (await alice.budget_status()).to_dict() == budget
        # the agent is unharmed: the next write lands right after
        h = await alice.transmit_understanding("s", "p", "o2")
        assert node.get_record(h)["seq"] == n
    async with opened(tmp_path) as node:
        assert chain_len(node, alice.agent_id) == n + 1


def test_too_large_is_an_invalid_input():
    assert issubclass(TooLarge, InvalidInput)
