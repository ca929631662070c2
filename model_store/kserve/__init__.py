"""KServe support: manifests, the Kubernetes client, model exports and the predictor.

* :mod:`model_store.kserve.render` renders the ``InferenceService`` of a model version;
* :mod:`model_store.kserve.client` applies, reads and deletes them through the Kubernetes API;
* :mod:`model_store.kserve.storage` writes a version to its ``storageUri`` and reads it back;
* :mod:`model_store.kserve.predictor` is the platform's predictor, the process an
  InferenceService runs (``python -m model_store.kserve.predictor``); the only module that
  imports ``kserve``.

:class:`~model_store.runtimes.kserve.KServeRuntime` puts the first three behind the runtime
interface. This package imports nothing at its top, so that loading one part never loads
another (above all, never ``kserve`` into the platform's process).
"""
