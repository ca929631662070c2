"""Model serving: the Open Inference Protocol (v2) gateway and the model store's service side.

``pipeline`` is the request path (authenticate → resolve → policy → quota → runtime → meter),
``resolve`` turns a handle into a servable version (with a small, write-invalidated cache),
``artifacts`` stores uploaded model versions, ``metrics`` exports Prometheus metrics.
Nothing here imports a web framework; ``marketplace.api.routes.v2`` adapts it to HTTP.
"""
