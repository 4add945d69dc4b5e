"""schemathesis against the running gateway's /openapi.json: no 5xx, responses as documented.

Bounded on purpose (a few examples per operation) so it stays a quick CI check; every
request carries a real customer's API key, so the operations are exercised past auth.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from sinks.db import Pool
from tests.gateway.conftest import Customer, RunningGateway, new_customer

MAX_EXAMPLES_PER_OPERATION = 20


@pytest.fixture(scope="module")
def conformance_customer(db_pool: Pool) -> Customer:
    return new_customer(db_pool, "schemathesis")


def test_every_operation_answers_as_documented(
    gateway: RunningGateway, conformance_customer: Customer
) -> None:
    """Each operation of the live schema, a few generated requests each.

    The operations are driven through ``as_strategy`` rather than
    ``schemathesis.pytest.from_fixture``, which breaks on pytest 9 (it rewrites a node
    attribute pytest no longer has).
    """
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"invalid operation in /openapi.json: {result.err()}"
        operations.append(result.ok())
    assert len(operations) >= 12  # every route of the contract is in the document
    for operation in operations:
        exercise(operation.as_strategy(), gateway.url, conformance_customer.headers)


def exercise(
    strategy: st.SearchStrategy[schemathesis.Case], url: str, headers: dict[str, str]
) -> None:
    """Run the generated cases of one operation with every check but positive acceptance.

    Random job ids are 404 and random bodies may be refused: a valid-looking request
    need not succeed, but every answer must be documented and none may be a 5xx.
    """

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=url, headers=headers, excluded_checks=[positive_data_acceptance]
        )

    run()
