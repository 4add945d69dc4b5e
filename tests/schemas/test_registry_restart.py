"""Schemas live in PostgreSQL, not in the registry process: a restart loses nothing.

Restarts the shared registry, so it is marked to be run alone:
``.venv/bin/pytest -m registry_restart`` (or deselected with ``-m "not registry_restart"``).
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from schemas.codec import Codec, load_schema
from tests.fixtures.kafka import unique_topic
from tests.schemas.samples import SAMPLES
from vidinsight.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.registry_restart]


def _wait_until_serving(registry_url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            SchemaRegistryClient({"url": registry_url, "max.retries": 0}).get_subjects()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def test_schemas_and_their_ids_survive_a_registry_restart(registry_url: str) -> None:
    subject = f"restart-check.{uuid.uuid4().hex}-value"
    schema_text = load_schema("CostEvent")
    schema_id = SchemaRegistryClient({"url": registry_url}).register_schema(
        subject, Schema(schema_text, "AVRO")
    )
    topic = unique_topic("restart")
    written = Codec(registry_url).encode(topic, "CostEvent", SAMPLES["CostEvent"])

    subprocess.run(
        [str(REPO_ROOT / "deploy/local/stack.sh"), "restart", "registry"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    _wait_until_serving(registry_url)

    fresh = SchemaRegistryClient({"url": registry_url})  # nothing cached
    assert fresh.get_schema(schema_id).schema_str is not None
    assert fresh.lookup_schema(subject, Schema(schema_text, "AVRO")).schema_id == schema_id
    assert Codec(registry_url).decode(topic, written) == SAMPLES["CostEvent"]
