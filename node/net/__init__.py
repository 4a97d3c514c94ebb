"""The network runtime: transports, and the node logic that runs the DHT over them."""
