"""memory integrity: understandings (triples with context), composed memories, triple
validations."""

from node.core.app import EntryDef, IntegrityZome, need_hash, need_keys, need_text, readable_ids
from node.core.errors import InvalidInput

MAX_REFS = 100


def _triple(c, extra=()):
    need_keys(c, {"subject", "predicate", "object", *extra})
    for k in ("subject", "predicate", "object"):
        need_text(c, k, 1024)


def validate_understanding(c):
    _triple(c, ("context",))
    need_text(c, "context", 4096, optional=True)


def validate_composed(c):
    need_keys(c, {"agent", "refs"})
    need_hash(c, "agent")
    refs = c.get("refs")
    if (
        not isinstance(refs, list)
        or len(refs) > MAX_REFS
        or not all(isinstance(r, bytes) and len(r) == 32 for r in refs)
    ):
        raise InvalidInput(f"refs must be a list of at most {MAX_REFS} hashes")


def validate_triple_check(c):
    _triple(c, ("known",))
    if not isinstance(c.get("known"), int) or isinstance(c.get("known"), bool) or c["known"] < 0:
        raise InvalidInput("known must be a count")


def _key(c) -> str:
    return "\x1f".join((c["subject"], c["predicate"], c["object"]))


ZOME = IntegrityZome(
    "memory",
    rules_version=1,
    entry_defs=(
        EntryDef(
            "understanding",
            "transmit_understanding",
            validate_understanding,
            lambda c: [("subject", c["subject"]), ("triple", _key(c))],
            keys=("subject", "triple"),
        ),
        EntryDef(
            "composed_memory",
            "compose_memories",
            validate_composed,
            present=readable_ids(agent="agent", refs="action"),
        ),
        EntryDef("triple_validation", "validate_triple", validate_triple_check),
    ),
    costs={
        "transmit_understanding": 3_000,  # 1 transmit + 2 validate
        "recall_understandings": 100,  # per result returned
        "compose_memories": 5_000,
        "validate_triple": 2_000,
    },
    per_result=("recall_understandings",),
)
