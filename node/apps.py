"""Which application a node runs when whoever opens it names none.

The node is given its app (`LocalNode.open(..., app=...)`, and so `NetNode.open`,
`LocalCluster.open`); `app=None` is resolved here, once, at open: the Rose Forest app that
ships in `zomes/`, imported only then. Nothing else in `node/` imports an application, and
`node/core` never does.
"""

from __future__ import annotations

from .core.app import App


def resolve(app: App | None) -> App:
    if app is not None:
        return app
    from zomes import ROSE_FOREST

    return ROSE_FOREST
