"""The Rose Forest application: integrity zomes (entry types, validation) and
coordinator zomes (the callable functions), as Holochain splits them."""
from node.core.app import App

from .budget import coordinator as _budget_c, integrity as _budget_i
from .hdk import collect
from .memory import coordinator as _memory_c, integrity as _memory_i
from .rose_forest import coordinator as _rf_c, integrity as _rf_i

APP = App(_rf_i.ENTRY_DEFS + _memory_i.ENTRY_DEFS + _budget_i.ENTRY_DEFS)
FUNCTIONS = collect(_rf_c, _memory_c, _budget_c)
