"""schemathesis against the running gateway's /openapi.json: no 5xx, responses as documented.

Bounded on purpose (a few examples per operation and mode) so it stays a quick CI check;
every request carries a real customer's API key, so the operations are exercised past
auth. Both of schemathesis' generation modes run: positive (requests the schema allows)
and negative (requests it forbids, which must be refused with a 4xx).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

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
    cases = 0
    for mode in GenerationMode:
        for operation in operations:
            if mode is GenerationMode.NEGATIVE and not has_inputs(operation):
                continue  # nothing to send wrong (/healthz): no negative case exists
            strategy = operation.as_strategy(mode)
            cases += exercise(strategy, gateway.url, conformance_customer.headers)
    print(f"schemathesis: {cases} cases over {len(operations)} operations, both modes")
    assert cases >= len(operations) * 5  # generation found cases for the operations


def has_inputs(operation: schemathesis.APIOperation) -> bool:
    parts = ("path_parameters", "query", "headers", "cookies", "body")
    return any(len(getattr(operation, part)) for part in parts)


def exercise(
    strategy: st.SearchStrategy[schemathesis.Case], url: str, headers: dict[str, str]
) -> int:
    """Run the generated cases of one operation with every check but the two acceptance
    ones; the number of cases run.

    Random job ids are 404 and random bodies may be refused: a valid-looking request
    need not succeed (positive acceptance). Unknown query parameters and headers are
    ignored, as HTTP allows, so a request whose only fault is one of them succeeds
    (negative rejection). Every answer must still be documented, in the one error
    shape, and none may be a 5xx.
    """
    ran = 0

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        nonlocal ran
        ran += 1
        case.call_and_validate(
            base_url=url,
            headers=headers,
            excluded_checks=[positive_data_acceptance, negative_data_rejection],
        )

    run()
    return ran
