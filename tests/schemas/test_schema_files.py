"""The .avsc files themselves: complete, documented, and following the platform's conventions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastavro import parse_schema

from schemas.codec import NAMESPACE, SCHEMA_DIR, SCHEMA_NAMES, load_schema


def _fields(record: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field of a record and of the records nested in it, as (record name, field)."""
    for field in record["fields"]:
        yield record["name"], field
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for branch in branches:
            if isinstance(branch, dict) and branch.get("type") == "record":
                yield from _fields(branch)


def test_schema_names_list_exactly_the_avsc_files() -> None:
    assert set(SCHEMA_NAMES) == {path.stem for path in SCHEMA_DIR.glob("*.avsc")}


@pytest.mark.parametrize("schema_name", SCHEMA_NAMES)
def test_schema_parses_and_is_named_after_its_file_in_the_platform_namespace(
    schema_name: str,
) -> None:
    schema = json.loads(load_schema(schema_name))
    parse_schema(schema)  # raises on an invalid schema
    assert (schema["namespace"], schema["name"]) == (NAMESPACE, schema_name)
    assert schema.get("doc")


@pytest.mark.parametrize("schema_name", SCHEMA_NAMES)
def test_every_field_is_documented(schema_name: str) -> None:
    undocumented = [
        f"{record}.{field['name']}"
        for record, field in _fields(json.loads(load_schema(schema_name)))
        if not field.get("doc")
    ]
    assert undocumented == []


@pytest.mark.parametrize("schema_name", SCHEMA_NAMES)
def test_money_and_timestamps_follow_the_conventions(schema_name: str) -> None:
    for record, field in _fields(json.loads(load_schema(schema_name))):
        name = field["name"]
        if name.endswith(("_usd_micros", "_at_ms", "_timestamp_ms")):
            assert field["type"] == "long", f"{record}.{name} must be a long"
        assert "usd" not in name or name.endswith("_usd_micros"), f"{record}.{name}"


@pytest.mark.parametrize("schema_name", SCHEMA_NAMES)
def test_nullable_fields_default_to_null(schema_name: str) -> None:
    for record, field in _fields(json.loads(load_schema(schema_name))):
        if isinstance(field["type"], list) and "null" in field["type"]:
            assert field["type"][0] == "null", f"{record}.{field['name']}: null first"
            assert "default" in field and field["default"] is None, f"{record}.{field['name']}"


def test_unknown_schema_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown schema"):
        load_schema("Nope")
