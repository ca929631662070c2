"""Chinese and bilingual search on PostgreSQL (tsvector, the per-term tables of migration
0009): the SQLite suite run again with ``database_url`` a PostgreSQL database."""

from tests.unit.marketplace.test_search_zh import *  # noqa: F403
