"""The API suites of tests/unit/marketplace, run again on PostgreSQL.

Importing the test functions here makes pytest collect them under this folder, where
``database_url`` is a real PostgreSQL database (see conftest.py).
"""

from tests.unit.marketplace.test_access import *  # noqa: F403
from tests.unit.marketplace.test_audit import *  # noqa: F403
from tests.unit.marketplace.test_catalog import *  # noqa: F403
from tests.unit.marketplace.test_cross_tenant import *  # noqa: F403
from tests.unit.marketplace.test_errors import *  # noqa: F403
from tests.unit.marketplace.test_keys import *  # noqa: F403
from tests.unit.marketplace.test_search import *  # noqa: F403
from tests.unit.marketplace.test_seed_and_cli import *  # noqa: F403
from tests.unit.marketplace.test_usage_api import *  # noqa: F403
from tests.unit.marketplace.test_visibility import *  # noqa: F403
