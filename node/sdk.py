"""The agent SDK: what agent code imports."""

from .core.budget import BudgetStatus, InsufficientRU
from .core.errors import (
    BudgetError,
    BudgetExceeded,
    DeferQueueFull,
    GrantAlreadyClaimed,
    HeadMoved,
    InvalidInput,
    InviteUsed,
    MalformedInput,
    NoWitness,
    NotAuthorized,
    NotFound,
    StoreCorrupted,
    TooLarge,
    UnknownAgent,
    UnknownFunction,
)
from .agent_api import Admission, AllocationResult, Deferred
from .local_node import AgentClient, LocalNode

__all__ = [
    "LocalNode",
    "AgentClient",
    "AllocationResult",
    "BudgetStatus",
    "BudgetError",
    "InsufficientRU",
    "BudgetExceeded",
    "DeferQueueFull",
    "Admission",
    "Deferred",
    "NotAuthorized",
    "InviteUsed",
    "NoWitness",
    "InvalidInput",
    "MalformedInput",
    "TooLarge",
    "UnknownFunction",
    "UnknownAgent",
    "NotFound",
    "HeadMoved",
    "GrantAlreadyClaimed",
    "StoreCorrupted",
]
from .core.warrant import Warranted  # noqa: E402
from .net.cluster import ConsistencyTimeout, LocalCluster  # noqa: E402
from .net.node import NetNode  # noqa: E402

__all__ += ["LocalCluster", "NetNode", "ConsistencyTimeout", "Warranted"]
from .app.client import NodeClient, NodeUnreachable  # noqa: E402
from .core.errors import ConnectionLost  # noqa: E402

__all__ += ["NodeClient", "NodeUnreachable", "ConnectionLost"]
