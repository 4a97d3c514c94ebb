"""An app's declaration: one definition per entry type, and content checked as a map."""

import pytest

from node.core.app import App, EntryDef, IntegrityZome, need_keys
from node.core.errors import InvalidInput


def zome(name, *defs, **costs):
    return IntegrityZome(name, 1, defs, costs)


def test_an_entry_type_is_declared_once():
    d = EntryDef("note", "add_knowledge", lambda content: None)
    app = App([zome("notes", d, add_knowledge=33_000)])
    assert app.entry_def("note") is d and app.entry_def("other") is None
    with pytest.raises(ValueError, match="duplicate entry type"):
        App(
            [
                zome("notes", d, add_knowledge=33_000),
                zome("more", EntryDef("note", "record", lambda content: None), record=1_000),
            ]
        )


def test_every_paying_op_has_a_cost_and_each_op_one_price():
    d = EntryDef("note", "add_knowledge", lambda content: None)
    with pytest.raises(ValueError, match="ops without a cost"):
        App([zome("notes", d)])
    with pytest.raises(ValueError, match="prices an op another zome prices"):
        App([zome("notes", d, add_knowledge=33_000), zome("more", add_knowledge=1)])


@pytest.mark.parametrize("content", [None, ["content"], "content"])
def test_entry_content_that_is_not_a_map_is_refused(content):
    with pytest.raises(InvalidInput, match="entry content must be a map"):
        need_keys(content, {"content"})
