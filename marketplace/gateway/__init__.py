"""Model serving: the Open Inference Protocol (v2) gateway and the model store's service side.

``pipeline`` is the request path (authenticate → resolve → policy → quota → runtime → meter),
its steps in their own modules: authentication in ``marketplace.auth.authenticate``,
``resolve`` (a handle to a servable version, with a small write-invalidated cache), ``policy``
(the tier rule), ``quota``, ``serving`` (what is registered on the runtimes, and the run),
``metering`` and ``idempotency`` (one usage event per call, a retry billed once).
``artifacts`` stores uploaded model versions and serves downloads under ``downloads``' rule;
``metrics`` exports Prometheus metrics. Nothing here imports a web framework:
``marketplace.api.fastpath`` and ``marketplace.api.routes`` adapt it to HTTP.
"""
