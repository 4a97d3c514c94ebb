"""The app socket: agents and operators talk to a running node over a websocket (canonical
CBOR messages) and scrape its metrics over HTTP.

- `wire.py`    message shapes, value and error encoding (shared by server and client)
- `events.py`  subscriptions: budget changes and warrants, bounded drop-oldest queues
- `metrics.py` the Prometheus text exposition of a node
- `server.py`  the ASGI app and `AppServer` (hypercorn on trio)
- `client.py`  `connect()` (what `AgentClient.connect` returns) and `NodeClient`
"""
