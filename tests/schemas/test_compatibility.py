"""Every .avsc stays BACKWARD compatible with its previous committed version.

Consumers deployed with a new schema must read every message still in the topics.
The real registry judges compatibility: the previous version goes into a scratch
subject set to BACKWARD and the registry is asked whether the current file could
follow it. The check is also run on a deliberately breaking variant, so this test is
proven able to fail even for a schema with no history yet.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from schemas.codec import SCHEMA_NAMES, load_schema
from vidinsight.settings import REPO_ROOT

pytestmark = pytest.mark.integration


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, check=True, capture_output=True, text=True
    ).stdout


def previous_version(schema_name: str) -> str | None:
    """The last committed text of the schema that differs from the file as it is now."""
    path = f"schemas/{schema_name}.avsc"
    current = json.loads(load_schema(schema_name))
    for commit in _git("log", "--format=%H", "--", path).split():
        try:
            text = _git("show", f"{commit}:{path}")
        except subprocess.CalledProcessError:
            continue  # the commit deleted or renamed the file
        if json.loads(text) != current:
            return text
    return None


def backward_compatible(client: SchemaRegistryClient, old: str, new: str) -> bool:
    """Whether the registry, at BACKWARD, accepts ``new`` as the next version after ``old``."""
    subject = f"compat-check.{uuid.uuid4().hex}"
    client.register_schema(subject, Schema(old, "AVRO"))
    client.set_compatibility(subject, "BACKWARD")
    return bool(client.test_compatibility(subject, Schema(new, "AVRO")))


def breaking_variant(schema_text: str) -> str:
    """The schema with a new required field (no default): old messages cannot be read."""
    schema = json.loads(schema_text)
    schema["fields"].append({"name": "added_without_default", "type": "string", "doc": "breaks"})
    return json.dumps(schema)


@pytest.mark.parametrize("schema_name", SCHEMA_NAMES)
def test_schema_is_backward_compatible_with_its_previous_committed_version(
    schema_name: str, registry_client: SchemaRegistryClient
) -> None:
    current = load_schema(schema_name)
    previous = previous_version(schema_name)
    if previous is not None:
        assert backward_compatible(registry_client, previous, current), (
            f"schemas/{schema_name}.avsc breaks BACKWARD compatibility with its last commit"
        )
    # The check must be able to fail: it rejects a change that breaks old messages...
    assert not backward_compatible(registry_client, current, breaking_variant(current))
    # ...and accepts the same change made the compatible way (with a default).
    compatible = json.loads(breaking_variant(current))
    compatible["fields"][-1]["default"] = ""
    assert backward_compatible(registry_client, current, json.dumps(compatible))
