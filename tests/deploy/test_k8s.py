"""The Kubernetes manifests of deploy/k8s, as kustomize builds them.

Each build (the base and the production overlay) must be valid against the Kubernetes
API schemas (kubernetes-validate, which ships them) and, for the custom resources of
KEDA, Strimzi and the Prometheus Operator, against the schemas in this folder; and it must
be wired to the code: every catalogue stage has its Deployment and a ScaledObject on its
consumer group and input topic, every catalogue topic its KafkaTopic, every VI_ variable
is a real setting. kustomize itself is built from a pinned version by
deploy/k8s/install-kustomize.sh (Go), once per state directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from streams.stages import stage_named
from topics.catalogue import STAGE_NAMES, STAGES, catalogue
from vidinsight.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
HERE = Path(__file__).resolve().parent
BUILDS = {"base": (K8S / "base",), "production": (K8S / "base", K8S / "overlays" / "production")}
# The oldest Kubernetes the manifests claim (preStop sleep is beta, on by default, from
# 1.30) and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.schema.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic.schema.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.schema.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.schema.json",
}
DASHBOARDS = ("pipeline-overview.json", "costs.json", "gateway.json")
# Environment variables the containers set that are not vidinsight settings, and why.
FOREIGN_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP",  # keeps litellm off the internet at import
    "HOME",  # a writable home on a read-only root filesystem
}
Manifest = dict[str, Any]


# -- building ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kustomize() -> Path:
    """The pinned kustomize binary; its installer fails loudly where Go is missing."""
    done = subprocess.run(
        ["bash", str(K8S / "install-kustomize.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"could not install kustomize:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=sorted(BUILDS))
def build(request: pytest.FixtureRequest, kustomize: Path) -> Iterator[tuple[str, list[Manifest]]]:
    """(name, manifests) of one kustomization, built as `kubectl apply -k` would."""
    name: str = request.param
    folder = BUILDS[name][-1]
    done = subprocess.run(
        [str(kustomize), "build", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kustomize build {folder.relative_to(REPO)}:\n{done.stderr}"
    yield name, [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def settings_data(manifests: list[Manifest]) -> dict[str, str]:
    """The data of the generated settings ConfigMap (its name carries a content hash)."""
    (config,) = [
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("vidinsight-settings-")
    ]
    data: dict[str, str] = config["data"]
    return data


class _ConfigMapSettings(Settings):
    """Settings from the given values and the defaults only: the test's own VI_ environment
    (the local stack's) must not leak into what the cluster would run with."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def cluster_settings(manifests: list[Manifest]) -> Settings:
    """The Settings a container of this build starts with (complex values are JSON in the
    environment, as pydantic-settings reads them there)."""
    data = settings_data(manifests)
    fields: dict[str, Any] = {
        k[3:].lower(): json.loads(v) if v.startswith(("{", "[")) else v
        for k, v in data.items()
        if k.startswith("VI_")
    }
    return _ConfigMapSettings(**fields)


def containers(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for name, deployment in of_kind(manifests, "Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield name, container


@cache
def consumer_group(stage: str) -> str:
    """The group the stage's worker really joins (imports the stage module once)."""
    return stage_named(stage).consumer_group


# -- rendered files ------------------------------------------------------------------


def test_rendered_files_match_their_sources() -> None:
    """Topics, the PrometheusRule and the dashboards in deploy/k8s are today's renders."""
    done = subprocess.run(
        [sys.executable, str(K8S / "render.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_committed_topics_equal_the_cli_render(name: str) -> None:
    """`vidinsight topics render --k8s`, run with the folder's topic settings, gives the file."""
    sizes: dict[str, str] = {}
    for folder in BUILDS[name]:
        env_file = yaml_env(folder / "settings.env")
        sizes.update({k: v for k, v in env_file.items() if k.startswith("VI_TOPIC_")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("VI_")} | sizes
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "topics", "render", "--k8s"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=REPO,
        env=env,
    )
    committed = (BUILDS[name][-1] / "topics.yaml").read_text()
    assert committed == done.stdout


def yaml_env(path: Path) -> dict[str, str]:
    """A kustomize env file: KEY=value lines, # comments."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    pairs = [line.partition("=") for line in lines if line and not line.startswith("#")]
    return {key: value for key, _, value in pairs}


# -- schemas -------------------------------------------------------------------------


@cache
def custom_validator(schema_file: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((HERE / schema_file).read_text())
    return jsonschema.Draft202012Validator(schema)


def test_every_manifest_validates_against_its_schema(build: tuple[str, list[Manifest]]) -> None:
    """Core kinds against the Kubernetes API schemas (strict: no unknown field), custom
    resources against ours; a kind with neither fails."""
    name, manifests = build
    errors = []
    for manifest in manifests:
        label = f"{name}: {manifest['kind']}/{manifest['metadata']['name']}"
        schema_file = CUSTOM_SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
        if schema_file is not None:
            problems = custom_validator(schema_file).iter_errors(manifest)
            errors += [f"{label}: {p.json_path}: {p.message}" for p in problems]
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{label} (Kubernetes {version}): {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{label}: no schema: {exc.message}")
    assert not errors, "\n".join(errors)


# -- wiring to the code --------------------------------------------------------------


def test_every_stage_has_its_deployment_and_scaled_object(
    build: tuple[str, list[Manifest]],
) -> None:
    """Each catalogue stage runs `vidinsight worker <stage>` and scales on the lag of the
    group its worker joins, on its input topic, at the Kafka the workers use, with no
    more replicas than that topic has partitions."""
    _, manifests = build
    deployments = of_kind(manifests, "Deployment")
    scaled = of_kind(manifests, "ScaledObject")
    topics = of_kind(manifests, "KafkaTopic")
    bootstrap = settings_data(manifests)["VI_KAFKA_BOOTSTRAP"]
    for stage in STAGE_NAMES:
        name = f"vidinsight-{stage}"
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["command"] + container["args"] == ["vidinsight", "worker", stage]
        spec = scaled[name]["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        topic = STAGES[stage].input_topic
        assert trigger["metadata"]["topic"] == topic
        assert trigger["metadata"]["consumerGroup"] == consumer_group(stage)
        assert trigger["metadata"]["bootstrapServers"] == bootstrap
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["maxReplicaCount"] <= topics[topic]["spec"]["partitions"], stage
    assert set(scaled) == {f"vidinsight-{stage}" for stage in STAGE_NAMES}


def test_every_catalogue_topic_is_a_kafka_topic_sized_by_the_settings(
    build: tuple[str, list[Manifest]],
) -> None:
    """The KafkaTopics are the catalogue as the pods' settings size it."""
    _, manifests = build
    settings = cluster_settings(manifests)
    topics = of_kind(manifests, "KafkaTopic")
    assert sorted(topics) == sorted(spec.name for spec in catalogue(settings))
    for spec in catalogue(settings):
        topic = topics[spec.name]["spec"]
        assert topic["topicName"] == spec.name
        assert (topic["partitions"], topic["replicas"]) == (
            spec.partitions,
            spec.replication_factor,
        )
        assert topic["config"] == spec.configs()


def test_every_vi_variable_is_a_setting(build: tuple[str, list[Manifest]]) -> None:
    """A misspelt VI_ name would be ignored silently (extra="ignore"); none may be."""
    _, manifests = build
    names = set(settings_data(manifests))
    for _, container in containers(manifests):
        names |= {variable["name"] for variable in container.get("env", [])}
    unknown = sorted(
        name
        for name in names - FOREIGN_ENV
        if not (name.startswith("VI_") and name[3:].lower() in Settings.model_fields)
    )
    assert not unknown, f"not fields of vidinsight/settings.py: {unknown}"


def test_worker_grace_period_outlasts_the_longest_unit_of_work(
    build: tuple[str, list[Manifest]],
) -> None:
    """SIGTERM lets a handler run finish (shutdown grace >= every stage's base deadline and
    >= one chunk), then the consumer closes and the producer flushes, all before SIGKILL."""
    _, manifests = build
    settings = cluster_settings(manifests)
    assert settings.shutdown_grace_seconds >= max(settings.stage_deadline_base_seconds.values())
    assert settings.shutdown_grace_seconds >= settings.chunk_seconds + settings.chunk_search_seconds
    # close (leave the group) and flush are each bounded by the consumer close timeout.
    needed = settings.shutdown_grace_seconds + 2 * settings.consumer_close_timeout_seconds
    for stage in STAGE_NAMES:
        pod = of_kind(manifests, "Deployment")[f"vidinsight-{stage}"]["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > needed, stage


def test_every_container_has_resources_and_probes_on_its_declared_ports(
    build: tuple[str, list[Manifest]],
) -> None:
    """Requests and limits for CPU and memory; both probes, on a port the container names."""
    _, manifests = build
    for deployment, container in containers(manifests):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[bound]), (deployment, bound)
        ports = {port["name"] for port in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (deployment, probe)


def test_pod_monitor_scrapes_every_pod_on_a_port_it_declares(
    build: tuple[str, list[Manifest]],
) -> None:
    """Every Deployment's pods match the PodMonitor and expose one of its endpoint ports."""
    _, manifests = build
    (monitor,) = of_kind(manifests, "PodMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoint_ports = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    for name, deployment in of_kind(manifests, "Deployment").items():
        template = deployment["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items(), name
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert ports & endpoint_ports, name


def test_dashboards_config_map_holds_every_grafana_dashboard(
    build: tuple[str, list[Manifest]],
) -> None:
    """One ConfigMap, labelled for Grafana's sidecar, with each dashboard as valid JSON,
    small enough for a ConfigMap (1 MiB)."""
    _, manifests = build
    config = of_kind(manifests, "ConfigMap")["vidinsight-grafana-dashboards"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert sorted(config["data"]) == sorted(DASHBOARDS)
    for name, text in config["data"].items():
        assert isinstance(json.loads(text), dict), name
    assert sum(len(text.encode()) for text in config["data"].values()) < 1024**2
