"""The Rose Forest application: integrity zomes (entry types, costs, validation) and
coordinator zomes (the callable functions), as Holochain splits them. The node imports none of
this: a composition root (the CLI, the SDK's default) hands `ROSE_FOREST` to the node."""

from node.core.app import App

from .budget import coordinator as _budget_c, integrity as _budget_i
from .governance import coordinator as _gov_c
from .hdk import collect
from .memory import coordinator as _memory_c, integrity as _memory_i
from .rose_forest import coordinator as _rf_c, integrity as _rf_i

ROSE_FOREST = App(
    [_rf_i.ZOME, _memory_i.ZOME, _budget_i.ZOME], collect(_rf_c, _memory_c, _budget_c, _gov_c)
)
APP = ROSE_FOREST  # the names tests and tools already use
FUNCTIONS = ROSE_FOREST.functions
