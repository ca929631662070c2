"""The portal's page tests of tests/unit/portal, run again on PostgreSQL, where row-level
security binds every page's queries to the visitor's tenant as it binds the API's.

Importing the test functions (and their ``web`` fixture) here makes pytest collect them under
this folder, where ``database_url`` is a real PostgreSQL database (see conftest.py).
"""

from tests.unit.portal.test_pages import *  # noqa: F403
