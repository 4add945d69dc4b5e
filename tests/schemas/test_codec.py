"""The codec against the real Kafka and registry: wire format, interoperability, failures."""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.codec import SCHEMA_NAMES, Codec
from tests.fixtures.kafka import ConsumeAll, Produce, TopicFactory, unique_topic
from tests.fixtures.network import TcpRelay
from tests.schemas.samples import SAMPLES
from vidinsight.errors import PermanentError, Reason, TransientError

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("schema_name", SCHEMA_NAMES)
def test_every_schema_round_trips_through_kafka_in_the_confluent_wire_format(
    schema_name: str,
    codec: Codec,
    registry_client: SchemaRegistryClient,
    topic_factory: TopicFactory,
    produce: Produce,
    consume_all: ConsumeAll,
) -> None:
    topic = topic_factory(schema_name, value_schema=schema_name)
    sample = SAMPLES[schema_name]

    data = codec.encode(topic, schema_name, sample)
    produce(topic, data, key=str(sample.get("job_id") or "none"))
    [message] = consume_all(topic, 1)
    value = message.value()
    assert value is not None

    magic, schema_id = struct.unpack(">bI", value[:5])
    assert magic == 0
    assert schema_id == registry_client.get_latest_version(f"{topic}-value").schema_id
    assert codec.decode(topic, value) == sample


@pytest.mark.parametrize("schema_name", SCHEMA_NAMES)
def test_a_consumer_knowing_nothing_of_the_project_decodes_what_the_platform_wrote(
    schema_name: str,
    codec: Codec,
    registry_url: str,
    topic_factory: TopicFactory,
    produce: Produce,
    consume_all: ConsumeAll,
) -> None:
    topic = topic_factory(schema_name, value_schema=schema_name)
    produce(topic, codec.encode(topic, schema_name, SAMPLES[schema_name]))
    [message] = consume_all(topic, 1)

    foreign = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    value = foreign(message.value(), SerializationContext(topic, MessageField.VALUE))

    assert value == SAMPLES[schema_name]


def test_omitted_fields_take_their_schema_defaults(codec: Codec) -> None:
    topic = unique_topic("defaults")
    required = {
        k: v
        for k, v in SAMPLES["CostEvent"].items()
        if k not in {"input_tokens", "cached_tokens", "output_tokens"}
    }

    decoded = codec.decode(topic, codec.encode(topic, "CostEvent", required))

    assert decoded == {**required, "input_tokens": 0, "cached_tokens": 0, "output_tokens": 0}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"amount_usd_micro": 5}, "misspelt field would silently write the default"),
        ({"amount_usd_micros": 4.5}, "float money would be truncated"),
        ({"quantity": "a lot"}, "string for a double"),
        ({"unit": "bananas"}, "symbol not in the enum"),
        ({"job_id": None}, "null for a required string"),
    ],
)
def test_a_value_that_does_not_fit_its_schema_is_refused_as_invalid_schema(
    codec: Codec, change: dict[str, Any], why: str
) -> None:
    value = {**SAMPLES["CostEvent"], **change}

    with pytest.raises(PermanentError) as caught:
        codec.encode(unique_topic("invalid"), "CostEvent", value)

    assert caught.value.reason is Reason.INVALID_SCHEMA, why


def test_a_missing_required_field_is_refused_as_invalid_schema(codec: Codec) -> None:
    value = {k: v for k, v in SAMPLES["CostEvent"].items() if k != "amount_usd_micros"}

    with pytest.raises(PermanentError) as caught:
        codec.encode(unique_topic("missing"), "CostEvent", value)

    assert caught.value.reason is Reason.INVALID_SCHEMA


def _valid_bytes(codec: Codec, topic: str) -> bytes:
    return codec.encode(topic, "CostEvent", SAMPLES["CostEvent"])


@pytest.mark.parametrize(
    ("name", "corrupt"),
    [
        ("plain text", lambda valid: b"this is not avro at all"),
        ("json", lambda valid: b'{"job_id": "job-0001"}'),
        ("empty", lambda valid: b""),
        ("header only", lambda valid: valid[:5]),
        ("unknown schema id", lambda valid: b"\x00" + struct.pack(">I", 2**31 - 7) + valid[5:]),
        ("truncated body", lambda valid: valid[:-4]),
        ("body of 0xff", lambda valid: valid[:5] + b"\xff" * 12),
    ],
)
def test_garbage_bytes_decode_to_a_permanent_undecodable_message(
    codec: Codec, name: str, corrupt: Any
) -> None:
    topic = unique_topic("garbage")
    data = corrupt(_valid_bytes(codec, topic))

    with pytest.raises(PermanentError) as caught:
        codec.decode(topic, data)

    assert caught.value.reason is Reason.UNDECODABLE_MESSAGE, name


def test_a_message_without_value_is_undecodable(codec: Codec) -> None:
    with pytest.raises(PermanentError) as caught:
        codec.decode(unique_topic("tombstone"), None)

    assert caught.value.reason is Reason.UNDECODABLE_MESSAGE


def test_an_unreachable_registry_is_transient_on_encode_and_decode(codec: Codec) -> None:
    topic = unique_topic("down")
    valid = _valid_bytes(codec, topic)
    cut_off = Codec("http://127.0.0.1:1/apis/ccompat/v7")  # nothing listens on port 1

    with pytest.raises(TransientError) as on_encode:
        cut_off.encode(topic, "CostEvent", SAMPLES["CostEvent"])
    with pytest.raises(TransientError) as on_decode:
        cut_off.decode(topic, valid)

    assert on_encode.value.reason is Reason.REGISTRY_UNAVAILABLE
    assert on_decode.value.reason is Reason.REGISTRY_UNAVAILABLE


def test_after_warm_up_no_message_needs_the_registry(
    registry_relay: tuple[str, TcpRelay],
) -> None:
    url, relay = registry_relay
    codec = Codec(url)
    topic = unique_topic("warm")
    sample = SAMPLES["AudioChunk"]
    warm = codec.encode(topic, "AudioChunk", sample)
    assert codec.decode(topic, warm) == sample

    relay.cut()  # the registry is now unreachable for this codec

    started = time.perf_counter()
    for index in range(5_000):
        value = {**sample, "chunk_index": index}
        assert codec.decode(topic, codec.encode(topic, "AudioChunk", value)) == value
    elapsed = time.perf_counter() - started
    # Thousands per second on this 2-core machine; a registry round trip each would be ~1 ms.
    assert elapsed < 5.0, f"5000 encode+decode took {elapsed:.2f} s"
    with pytest.raises(TransientError):  # and the registry really is gone
        codec.encode(unique_topic("cold"), "AudioChunk", sample)


def test_concurrent_first_use_from_many_threads_agrees_on_one_schema_id(
    registry_url: str,
) -> None:
    codec = Codec(registry_url)
    topic = unique_topic("threads")
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                results.append(codec.encode(topic, "JobRequested", SAMPLES["JobRequested"]))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert len(results) == 400
    assert len({data[:5] for data in results}) == 1
    assert all(codec.decode(topic, data) == SAMPLES["JobRequested"] for data in results)


def test_decode_reads_old_messages_with_the_current_schema_defaults(
    codec: Codec, registry_url: str
) -> None:
    """A consumer built with today's .avsc reads a message written with an older version."""
    topic = unique_topic("evolution")
    older = SchemaRegistryClient({"url": registry_url})
    old_schema = """{"type": "record", "name": "AudioChunk", "namespace": "io.vidinsight",
      "fields": [
        {"name": "job_id", "type": "string"}, {"name": "customer_id", "type": "string"},
        {"name": "chunk_index", "type": "int"}, {"name": "chunk_count", "type": "int"},
        {"name": "audio_uri", "type": "string"}, {"name": "start_seconds", "type": "double"},
        {"name": "end_seconds", "type": "double"}, {"name": "duration_seconds", "type": "double"}
      ]}"""
    writer = AvroSerializer(older, old_schema, conf={"subject.name.strategy.type": "TOPIC"})
    old_value = {
        k: v for k, v in SAMPLES["AudioChunk"].items() if k not in ("language", "segment_index")
    }
    data = writer(old_value, SerializationContext(topic, MessageField.VALUE))
    assert data is not None

    assert codec.decode(topic, data) == {**old_value, "language": None, "segment_index": 0}
