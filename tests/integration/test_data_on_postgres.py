"""The data-product API suites of tests/unit/data, run again on PostgreSQL.

Importing the test functions (and the fixtures they use) here makes pytest collect them under
this folder, where ``database_url`` is a real PostgreSQL database (see conftest.py): the
migration's columns and row-level policy, search's ``min_quality`` statement, grants and
metering on PostgreSQL.
"""

from tests.unit.data.conftest import blobs, datasets, engine  # noqa: F401
from tests.unit.data.test_downloads import *  # noqa: F403
from tests.unit.data.test_metering import *  # noqa: F403
from tests.unit.data.test_quality import *  # noqa: F403
from tests.unit.data.test_query_api import *  # noqa: F403
from tests.unit.data.test_sql import *  # noqa: F403
from tests.unit.data.test_upload import *  # noqa: F403
