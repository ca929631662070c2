"""KServe support: InferenceService manifests and the Kubernetes client that applies them.

* :mod:`model_store.kserve.render` renders the ``InferenceService`` of a model version;
* :mod:`model_store.kserve.client` applies, reads and deletes them through the Kubernetes API.

:class:`~model_store.runtimes.kserve.KServeRuntime` puts both behind the runtime interface.
This package imports nothing at its top, so that loading one part never loads another.
"""
