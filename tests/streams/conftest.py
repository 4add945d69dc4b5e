"""Fixtures shared by the stage tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.codec import Codec
from sinks.db import Pool
from tests.fixtures.kafka import TopicFactory
from tests.streams.test_analyse import AnalysisPipeline, new_analysis_pipeline
from vidinsight.settings import Settings


@pytest.fixture
def analysis_pipeline(
    settings: Settings, codec: Codec, db_pool: Pool, topic_factory: TopicFactory, tmp_path: Path
) -> Iterator[AnalysisPipeline]:
    """analyse and synthesise on private topics; their workers are killed at teardown."""
    pipeline = new_analysis_pipeline(settings, codec, db_pool, topic_factory, tmp_path)
    yield pipeline
    for worker in pipeline.workers:
        worker.kill()
