"""Fixtures of the cost aggregator tests: a harness with private topics and group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.codec import Codec
from sinks.db import Pool
from tests.fixtures.kafka import TopicFactory
from tests.streams.costs.harness import CostsHarness
from vidinsight.settings import Settings


@pytest.fixture
def costs(
    settings: Settings, codec: Codec, db_pool: Pool, topic_factory: TopicFactory, tmp_path: Path
) -> Iterator[CostsHarness]:
    """Fresh cost (2 partitions) and budget topics; aggregators killed at teardown."""
    harness = CostsHarness(
        settings=settings,
        codec=codec,
        pool=db_pool,
        log_dir=tmp_path,
        costs_topic=topic_factory("costs", partitions=2, value_schema="CostEvent"),
        budgets_topic=topic_factory("budgets", partitions=1, value_schema="BudgetEvent"),
    )
    yield harness
    harness.stop_all()
