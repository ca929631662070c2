"""Data products: dataset versions that hold data, and the reads that serve it.

Read top to bottom:

* ``schema`` — the columns (type, semantic, sensitivity) and quality rules an owner declares;
* ``upload`` → ``ingest`` → ``quality`` — a file becomes an immutable, content-addressed
  Parquet snapshot in the blob store, typed and checked, with its quality report;
* ``service`` — who may read which version (tiers, grants), and the caller's masked view;
* ``plan`` → ``masking`` → ``compile`` — a query plan over the masked view, as one sqlglot
  expression tree with bound parameters, for any engine's dialect;
* ``engine`` (``duckdb_engine``) — runs it within time, memory and row limits;
* ``pipeline`` — the request path: open, quota, compile, run, meter (``usage``);
* ``formats`` — JSON, CSV, Arrow and Parquet answers, streamed downloads;
* ``demo`` (``demo_tables``) — the demo city's datasets, generated deterministically.
"""
