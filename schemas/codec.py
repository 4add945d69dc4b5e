"""Avro values in the Confluent wire format: magic byte 0, 4-byte schema id, Avro body.

Every producer and consumer of the platform goes through ``Codec`` so that upstream
systems and any off-the-shelf Confluent consumer read and write the same bytes. The
work is done by confluent-kafka's ``AvroSerializer`` / ``AvroDeserializer`` (fastavro
underneath); this module adds the three things the platform needs on top:

- one serializer per (topic, schema) and one deserializer per writer schema id, built
  once, so after warm-up no message costs a registry round trip;
- decoding into the reader's own version of a platform schema, so a consumer deployed
  with a newer ``.avsc`` sees defaults for fields old messages lack (BACKWARD);
- failures translated once into the error catalogue (undecodable, invalid schema,
  registry unavailable), which is what the stage runtime acts on.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema
from fastavro.validation import ValidationError, validate

from schemas.registry import registry_client, translate
from vidinsight.errors import PermanentError, Reason

NAMESPACE = "io.vidinsight"
SCHEMA_DIR = Path(__file__).resolve().parent

# Every message type of the platform, in pipeline order; each is schemas/<name>.avsc.
SCHEMA_NAMES: tuple[str, ...] = (
    "JobRequested",
    "MediaIngested",
    "AudioChunk",
    "TranscriptReady",
    "AnalysisDone",
    "JobCompleted",
    "CostEvent",
    "BudgetEvent",
    "DeadLetter",
)

_MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")

# Refuse extra fields (a misspelt field would otherwise vanish silently and its default,
# say amount_usd_micros, would be written instead) but let fields with defaults be omitted.
_SERIALIZER_CONF = {
    "auto.register.schemas": True,
    # Subject "<topic>-value", computed locally. The library's default strategy asks the
    # registry for topic associations first, an API Apicurio's ccompat does not serve.
    "subject.name.strategy.type": "TOPIC",
    "validate.strict": False,
    "validate.strict.allow.default": True,
}


@cache
def load_schema(schema_name: str) -> str:
    """The text of ``schemas/<schema_name>.avsc``; raises ValueError for an unknown name."""
    if schema_name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {schema_name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return (SCHEMA_DIR / f"{schema_name}.avsc").read_text(encoding="utf-8")


@cache
def _parsed_schema(schema_name: str) -> Any:
    """The fastavro form of a platform schema, for validating values before encoding."""
    return parse_schema(json.loads(load_schema(schema_name)))


def check_value(schema_name: str, value: Mapping[str, Any]) -> None:
    """PermanentError(invalid_schema) unless every field of ``value`` has its schema's type.

    The writer alone would coerce some mistakes silently (a float written to a long
    field is truncated), which for *_usd_micros means wrong money.
    """
    try:
        validate(value, _parsed_schema(schema_name), raise_errors=True)
    except ValidationError as exc:
        raise PermanentError(
            Reason.INVALID_SCHEMA, f"{schema_name}: {'; '.join(map(str, exc.errors))}"
        ) from exc


def subject_for(topic: str) -> str:
    """The registry subject of a topic's values (TopicNameStrategy)."""
    return f"{topic}-value"


def schema_id_of(data: bytes) -> int:
    """The schema id in a wire-format value; PermanentError if the framing is not there."""
    if len(data) <= _HEADER.size:
        raise PermanentError(
            Reason.UNDECODABLE_MESSAGE,
            f"{len(data)} bytes is too short for the Confluent wire format (5-byte header)",
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != _MAGIC_BYTE:
        raise PermanentError(
            Reason.UNDECODABLE_MESSAGE, f"first byte is {magic}, not the wire format's magic byte 0"
        )
    return int(schema_id)


def _platform_name(writer_schema_text: str) -> str | None:
    """The local schema name matching a writer schema's full name, if it is one of ours."""
    try:
        parsed = json.loads(writer_schema_text)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    name = str(parsed.get("name", ""))
    namespace = str(parsed.get("namespace", ""))
    full_name = name if "." in name else f"{namespace}.{name}"
    short_name = full_name.removeprefix(f"{NAMESPACE}.")
    if full_name.startswith(f"{NAMESPACE}.") and short_name in SCHEMA_NAMES:
        return short_name
    return None


class Codec:
    """Encode and decode message values; safe to share between threads."""

    def __init__(self, registry_url: str) -> None:
        self._registry = registry_client(registry_url)
        self._lock = threading.Lock()
        self._serializers: dict[tuple[str, str], AvroSerializer] = {}
        self._deserializers: dict[int, AvroDeserializer] = {}

    @property
    def registry(self) -> SchemaRegistryClient:
        """The registry client underneath, for admin work that needs the same registry."""
        return self._registry

    def encode(self, topic: str, schema_name: str, value: Mapping[str, Any]) -> bytes:
        """``value`` as wire-format bytes under subject ``<topic>-value``.

        The first call per (topic, schema) registers the schema if the subject lacks it.
        Raises PermanentError(invalid_schema) when the value does not fit the schema or
        the registry refuses the schema, TransientError(registry_unavailable) when the
        registry cannot be reached.
        """
        check_value(schema_name, value)
        serializer = self._serializer(topic, schema_name)
        context = SerializationContext(topic, MessageField.VALUE)
        try:
            data = serializer(dict(value), context)
        except Exception as exc:
            raise translate(
                exc, f"encode {schema_name} for {topic}", Reason.INVALID_SCHEMA
            ) from exc
        if data is None:  # only for a None value, which dict() above rules out
            raise PermanentError(Reason.INVALID_SCHEMA, f"encode {schema_name}: no bytes produced")
        return data

    def decode(self, topic: str, data: bytes | None) -> dict[str, Any]:
        """The record in ``data``, read with the local version of its platform schema.

        Raises PermanentError(undecodable_message) for a missing value, bytes without the
        wire format, an id the registry does not know, or a body that does not parse;
        TransientError(registry_unavailable) when the registry cannot be reached.
        """
        if data is None:
            raise PermanentError(Reason.UNDECODABLE_MESSAGE, f"{topic}: message has no value")
        deserializer = self._deserializer(schema_id_of(data), topic)
        try:
            record = deserializer(data, None)
        except Exception as exc:
            raise translate(exc, f"decode from {topic}", Reason.UNDECODABLE_MESSAGE) from exc
        if not isinstance(record, dict):
            raise PermanentError(
                Reason.UNDECODABLE_MESSAGE,
                f"{topic}: value is {type(record).__name__}, not a record",
            )
        return record

    def _serializer(self, topic: str, schema_name: str) -> AvroSerializer:
        """The cached serializer for (topic, schema); built on first use."""
        key = (topic, schema_name)
        serializer = self._serializers.get(key)
        if serializer is not None:
            return serializer
        schema_text = load_schema(schema_name)
        with self._lock:
            serializer = self._serializers.get(key)
            if serializer is None:
                serializer = AvroSerializer(self._registry, schema_text, conf=_SERIALIZER_CONF)
                self._serializers[key] = serializer
        return serializer

    def _deserializer(self, schema_id: int, topic: str) -> AvroDeserializer:
        """The cached deserializer for a writer schema id; the registry is asked once per id.

        Platform schemas are read with the local ``.avsc`` as reader schema (Avro schema
        resolution fills defaults); anything else is read with its writer schema.
        """
        deserializer = self._deserializers.get(schema_id)
        if deserializer is not None:
            return deserializer
        try:
            writer = self._registry.get_schema(schema_id)
        except Exception as exc:
            raise translate(
                exc, f"decode from {topic}: schema id {schema_id}", Reason.UNDECODABLE_MESSAGE
            ) from exc
        local_name = _platform_name(writer.schema_str or "")
        reader_text = load_schema(local_name) if local_name else None
        with self._lock:
            deserializer = self._deserializers.get(schema_id)
            if deserializer is None:
                deserializer = AvroDeserializer(self._registry, reader_text)
                self._deserializers[schema_id] = deserializer
        return deserializer
