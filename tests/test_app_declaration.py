"""An app's declaration: one definition per entry type, and content checked as a map."""
import pytest

from node.core.app import App, EntryDef, need_keys
from node.core.errors import InvalidInput


def test_an_entry_type_is_declared_once():
    d = EntryDef("note", "add_knowledge", lambda content: None)
    assert App([d]).entry_def("note") is d and App([d]).entry_def("other") is None
    with pytest.raises(ValueError, match="duplicate entry type"):
        App([d, EntryDef("note", "record_understanding", lambda content: None)])


@pytest.mark.parametrize("content", [None, ["content"], "content"])
def test_entry_content_that_is_not_a_map_is_refused(content):
    with pytest.raises(InvalidInput, match="entry content must be a map"):
        need_keys(content, {"content"})
