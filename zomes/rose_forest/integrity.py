"""rose_forest integrity: knowledge, edges between entries, thought credentials."""

from node.core.app import EntryDef, IntegrityZome, need_hash, need_keys, need_text, readable_ids
from node.core.errors import InvalidInput

MAX_TEXT = 16 * 1024
MAX_TAGS = 32


def validate_knowledge(c):
    need_keys(c, {"content", "tags"})
    need_text(c, "content", MAX_TEXT)
    tags = c.get("tags")
    if (
        not isinstance(tags, list)
        or len(tags) > MAX_TAGS
        or not all(isinstance(t, str) and 0 < len(t.encode()) <= 64 for t in tags)
    ):
        raise InvalidInput(f"tags must be a list of at most {MAX_TAGS} strings of 1-64 bytes")


def validate_edge(c):
    need_keys(c, {"from", "to", "relation"})
    need_hash(c, "from")
    need_hash(c, "to")
    need_text(c, "relation", 64)


def validate_credential(c):
    need_keys(c, {"title", "body"})
    need_text(c, "title", 256)
    need_text(c, "body", MAX_TEXT)


ZOME = IntegrityZome(
    "rose_forest",
    rules_version=1,
    entry_defs=(
        EntryDef(
            "knowledge",
            "add_knowledge",
            validate_knowledge,
            lambda c: [("tag", t) for t in c["tags"]],
            keys=("tag",),
        ),
        EntryDef(
            "edge",
            "link_edge",
            validate_edge,
            lambda c: [("edge_from", c["from"].hex())],
            keys=("edge_from",),
            present=readable_ids(**{"from": "action", "to": "action"}),
        ),
        EntryDef("thought_credential", "create_thought_credential", validate_credential),
    ),
    costs={"add_knowledge": 33_000, "link_edge": 3_000, "create_thought_credential": 10_000},
)
