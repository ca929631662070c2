"""The OpenAPI contract's API tests (tests/unit/marketplace/test_contract.py) again on
PostgreSQL, where timestamps come back with an offset rather than naive (see conftest.py)."""

from tests.unit.marketplace.test_contract import (  # noqa: F401
    test_405_names_every_method_of_the_path,
    test_parameters_have_their_real_format,
    test_timestamps_are_rfc3339_with_z,
)
