"""The topic catalogue as Strimzi ``KafkaTopic`` resources, for Kubernetes.

On Kubernetes the Strimzi Topic Operator, not ``vidinsight topics apply``, makes the
cluster match the catalogue: it reconciles one ``KafkaTopic`` resource per topic. The
resources are rendered from the catalogue (never written by hand) so that a topic, its
partitions, replication and configs have one source of truth wherever they run.

The YAML is emitted by this module rather than by a YAML library: the resources are
small, fixed in shape (strings, integers, maps), and a hand-rolled emitter keeps the
output byte-stable across library versions, which the committed copy is tested against.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from topics.catalogue import TopicSpec

API_VERSION = "kafka.strimzi.io/v1beta2"
# The label by which the Topic Operator knows which Kafka cluster a topic belongs to.
CLUSTER_LABEL = "strimzi.io/cluster"
DEFAULT_CLUSTER = "vidinsight"
PART_OF_LABEL = "app.kubernetes.io/part-of"

# A Kubernetes object name (RFC 1123 subdomain); every catalogue topic name is one.
_RESOURCE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Keys and strings that read the same in YAML without quotes.
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")

Node = str | int | Mapping[str, "Node"]


def kafka_topic(spec: TopicSpec, cluster: str = DEFAULT_CLUSTER) -> dict[str, Node]:
    """One ``KafkaTopic`` resource for ``spec``, labelled for the Strimzi cluster ``cluster``.

    ``spec.topicName`` is set even though it equals ``metadata.name``: a kustomize
    ``namePrefix`` renames resources, and the Kafka topic must keep its catalogue name.
    """
    if not _RESOURCE_NAME.match(spec.name):
        raise ValueError(f"topic {spec.name!r} is not a valid Kubernetes resource name")
    return {
        "apiVersion": API_VERSION,
        "kind": "KafkaTopic",
        "metadata": {
            "name": spec.name,
            "labels": {CLUSTER_LABEL: cluster, PART_OF_LABEL: "vidinsight"},
        },
        "spec": {
            "topicName": spec.name,
            "partitions": spec.partitions,
            "replicas": spec.replication_factor,
            "config": dict(sorted(spec.configs().items())),
        },
    }


def render(specs: Iterable[TopicSpec], cluster: str = DEFAULT_CLUSTER) -> str:
    """A multi-document YAML stream of one ``KafkaTopic`` per spec, in catalogue order."""
    header = (
        "# Rendered by `vidinsight topics render --k8s` from topics/catalogue.py: do not edit.\n"
    )
    documents = ["---\n" + to_yaml(kafka_topic(spec, cluster)) for spec in specs]
    return header + "".join(documents)


def to_yaml(node: Mapping[str, Node], indent: int = 0) -> str:
    """Block-style YAML of a mapping whose leaves are strings and integers."""
    lines = []
    pad = " " * indent
    for key, value in node.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{_scalar(key)}:\n{to_yaml(value, indent + 2)}")
        else:
            lines.append(f"{pad}{_scalar(key)}: {_scalar(value)}\n")
    return "".join(lines)


def _scalar(value: str | int) -> str:
    """An integer as is; a string plain when YAML reads it back as that string, else quoted.

    Strings that YAML would read as another type (``"604800000"``, ``"true"``) are quoted,
    so Kafka config values stay strings.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"cannot render {value!r} as a YAML scalar")
    if isinstance(value, int):
        return str(value)
    if _PLAIN.match(value) and not _reads_as_other_type(value):
        return value
    return json.dumps(value)


def _reads_as_other_type(text: str) -> bool:
    """Whether a YAML 1.1 reader may take ``text`` for a number, a date, a boolean or null.

    Anything starting with a digit or a sign is quoted: cheaper to be safe than to
    mirror YAML's every numeric and timestamp form.
    """
    lowered = text.lower()
    return lowered in {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"} or (
        text[0].isdigit() or text[0] in "+-."
    )
