"""Shared test configuration: fixtures live in tests/fixtures/, one module per concern.

The integration tests use the one local stack (Kafka, registry, PostgreSQL) that
``make test`` starts before pytest and stops after it.
"""

pytest_plugins = [
    "tests.fixtures.settings",
    "tests.fixtures.postgres",
    "tests.fixtures.kafka",
    "tests.fixtures.registry",
    "tests.fixtures.workers",
    "tests.fixtures.openai_server",
    "tests.fixtures.media",
    "tests.fixtures.meeting",
    "tests.fixtures.platform",
    "tests.fixtures.costs",
    "tests.fixtures.s3",
]
