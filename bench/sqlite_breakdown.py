"""Why is store.append dearer than the floor's single INSERT?  Builds the commit's SQLite
transaction up one statement at a time (no crypto, no Python node code) and reports
us per transaction and WAL frames (pages) written per transaction for each variant.

    python bench/sqlite_breakdown.py [--mode process] [--n 3000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile

from node.store import DURABILITY, SCHEMA

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_dir, emit, perf  # noqa: E402

FLOOR_SCHEMA = (
    "CREATE TABLE actions(id INTEGER PRIMARY KEY, hash BLOB UNIQUE NOT NULL, "
    "body BLOB NOT NULL, sig BLOB NOT NULL)"
)


def variant(name, mode, n, steps, schema=SCHEMA, pragmas=()):
    import sqlite3

    d = tempfile.mkdtemp(prefix="bench-sql-", dir=bench_dir())
    try:
        db = sqlite3.connect(os.path.join(d, "x.db"), isolation_level=None)
        for p in pragmas:
            if "page_size" in p:
                db.execute(p)  # only takes effect before the first table exists
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={DURABILITY[mode]}")
        for p in pragmas:
            db.execute(p)
        db.executescript(schema)
        author = os.urandom(32)
        if "heads" in schema:
            db.execute("INSERT INTO heads VALUES (?,?,?)", (author, 0, b"\0" * 32))
        body, sig, entry = os.urandom(237), os.urandom(64), os.urandom(120)
        ckpt = []

        def one(i):
            h = hashlib.blake2b(i.to_bytes(8, "big"), digest_size=32).digest()
            db.execute("BEGIN IMMEDIATE")
            if "cas" in steps:
                cur = db.execute(
                    "UPDATE heads SET seq=?, hash=? WHERE author=? AND seq=? AND hash=?",
                    (i + 1, h, author, i, prev[0]),
                )
                assert cur.rowcount == 1
                prev[0] = h
            if "floor_insert" in steps:
                db.execute("INSERT INTO actions(hash, body, sig) VALUES (?,?,?)", (h, body, sig))
            if "action" in steps:
                cur = db.execute(
                    "INSERT INTO actions(hash,author,seq,entry_type,entry,body,sig) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (h, author, i + 1, "understanding", h, body, sig),
                )
            if "entry" in steps:
                db.execute("INSERT OR IGNORE INTO entries VALUES (?,?)", (h, entry))
            if "idx" in steps:
                aid = cur.lastrowid
                db.executemany(
                    "INSERT INTO idx VALUES (?,?,?)",
                    [
                        ("subject", f"subject-{i % 100}", aid),
                        ("triple", f"subject-{i % 100}\x1frelates-to\x1fobject-{i}", aid),
                    ],
                )
            db.execute("COMMIT")

        prev = [b"\0" * 32]
        for i in range(100):
            one(i)
        w0 = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        t = perf()
        for i in range(100, 100 + n):
            one(i)
        us = (perf() - t) / n * 1e6
        # frames now in the WAL since the passive checkpoint reset it is only a lower bound
        # when autocheckpoint fired; count pages changed via the db's page count instead
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.close()
        ckpt.append(w0)
        return {"variant": name, "us_per_txn": round(us, 1), "db_pages_after": pages}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="process", choices=["process", "power"])
    p.add_argument("--n", type=int, default=3000)
    a = p.parse_args(argv)
    # The shipped schema already keeps entries and idx WITHOUT ROWID; `lean` also makes heads so.
    lean = SCHEMA.replace(
        "heads(author BLOB PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);",
        "heads(author BLOB PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL) WITHOUT ROWID;",
    )
    assert lean != SCHEMA, "the store's heads table changed; update this variant"
    rows = [
        variant("floor: 1 INSERT (hash UNIQUE)", a.mode, a.n, {"floor_insert"}, FLOOR_SCHEMA),
        variant("node schema: action INSERT only", a.mode, a.n, {"action"}),
        variant("+ head CAS UPDATE", a.mode, a.n, {"cas", "action"}),
        variant("+ entry INSERT", a.mode, a.n, {"cas", "action", "entry"}),
        variant("+ 2 idx rows (= store.append)", a.mode, a.n, {"cas", "action", "entry", "idx"}),
        variant(
            "= store.append, wal_autocheckpoint=10000",
            a.mode,
            a.n,
            {"cas", "action", "entry", "idx"},
            pragmas=("PRAGMA wal_autocheckpoint=10000",),
        ),
        variant(
            "= store.append, cache_size=-65536",
            a.mode,
            a.n,
            {"cas", "action", "entry", "idx"},
            pragmas=("PRAGMA cache_size=-65536",),
        ),
        variant(
            "= store.append, page_size=1024",
            a.mode,
            a.n,
            {"cas", "action", "entry", "idx"},
            pragmas=("PRAGMA page_size=1024",),
        ),
        variant(
            "= store.append, + heads WITHOUT ROWID",
            a.mode,
            a.n,
            {"cas", "action", "entry", "idx"},
            schema=lean,
        ),
        variant(
            "= lean schema + page_size=1024 + autockpt 10000",
            a.mode,
            a.n,
            {"cas", "action", "entry", "idx"},
            schema=lean,
            pragmas=("PRAGMA page_size=1024", "PRAGMA wal_autocheckpoint=10000"),
        ),
    ]
    print(f"\n## SQLite transaction breakdown, synchronous={DURABILITY[a.mode]}, {a.n} txns\n")
    for r in rows:
        print(f"{r['variant']:45s} {r['us_per_txn']:8.1f} us/txn   pages {r['db_pages_after']}")
    emit({"bench": "sqlite_breakdown", "mode": a.mode, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
