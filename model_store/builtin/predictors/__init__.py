"""Predictor modules of the built-in ``python``-format models.

Each module here is copied verbatim into its model's artifact zip (as ``<package>/predictor.py``)
by the builder in :mod:`model_store.builtin`; it is also importable from the repository so that it
is type-checked and linted with the rest of ``model_store``. A predictor imports only numpy,
third-party runtime packages and (optionally) :mod:`model_store.errors` — never the builders —
because inside an artifact it is loaded under a private module name.
"""
