"""Render the files of deploy/k8s that are copies of another source of truth.

kustomize loads no file from outside a kustomization's folder (unless every user passes
``--load-restrictor LoadRestrictionsNone``), so the pieces that other parts of the
project own are rendered into the base and the production overlay, and committed:

- ``base/topics.yaml`` and ``overlays/production/topics.yaml``: ``vidinsight topics
  render --k8s`` with the topic sizes of that folder's ``settings.env``, so the KafkaTopic
  resources and the settings the workers read can never disagree;
- ``base/monitoring/prometheusrule.yaml``: ``deploy/prometheus/alerts.yml`` (a Prometheus
  rule file) wrapped in a Prometheus Operator ``PrometheusRule``; the same groups, so
  the alerts the Prometheus test evaluates are the alerts Kubernetes gets;
- ``base/dashboards/*.json``: byte copies of ``deploy/grafana/*.json``.

Run ``python deploy/k8s/render.py`` after changing any source; ``--check`` only reports
stale files (tests/deploy/test_k8s.py runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from topics.catalogue import catalogue
from topics.strimzi import render as render_topics
from vidinsight.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
PRODUCTION = K8S / "overlays" / "production"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = ("pipeline-overview.json", "costs.json", "gateway.json")
RULE_NAME = "vidinsight-alerts"


class MissingSource(Exception):
    """A source of a rendered file does not exist (yet)."""


def settings_env(folder: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of ``folder/settings.env`` (kustomize's env-file syntax)."""
    values = {}
    for line in (folder / "settings.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def topic_sizes(folders: tuple[Path, ...]) -> tuple[int, int]:
    """Partitions and replication factor the merged ``settings.env`` of ``folders`` give.

    Later folders win, as an overlay's ``configMapGenerator`` with ``behavior: merge`` does.
    """
    merged: dict[str, str] = {}
    for folder in folders:
        merged.update(settings_env(folder))
    return int(merged["VI_TOPIC_PARTITIONS"]), int(merged["VI_TOPIC_REPLICATION_FACTOR"])


def topics_yaml(partitions: int, replication_factor: int) -> str:
    """The KafkaTopic stream ``vidinsight topics render --k8s`` prints for these sizes."""
    sized = Settings(topic_partitions=partitions, topic_replication_factor=replication_factor)
    return render_topics(catalogue(sized))


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as a person writes them."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockStrings.add_representer(str, _represent_str)


def prometheus_rule(alerts: str) -> str:
    """A ``PrometheusRule`` whose groups are the rule file's groups, unchanged."""
    rule_file: dict[str, Any] = yaml.safe_load(alerts) or {}
    if not isinstance(rule_file.get("groups"), list):
        raise ValueError(f"{ALERTS.relative_to(REPO)} has no list of groups")
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": RULE_NAME, "labels": {"app.kubernetes.io/name": "vidinsight"}},
        "spec": {"groups": rule_file["groups"]},
    }
    header = "# Rendered by deploy/k8s/render.py from deploy/prometheus/alerts.yml: do not edit.\n"
    body = yaml.dump(resource, Dumper=_BlockStrings, sort_keys=False, width=100)
    return header + body


def _read(source: Path) -> str:
    if not source.exists():
        raise MissingSource(f"{source.relative_to(REPO)} does not exist")
    return source.read_text()


def rendered() -> dict[Path, str]:
    """Every rendered file and the text its source gives today; MissingSource if one lacks."""
    files = {
        BASE / "topics.yaml": topics_yaml(*topic_sizes((BASE,))),
        PRODUCTION / "topics.yaml": topics_yaml(*topic_sizes((BASE, PRODUCTION))),
        BASE / "monitoring" / "prometheusrule.yaml": prometheus_rule(_read(ALERTS)),
    }
    for name in DASHBOARDS:
        files[BASE / "dashboards" / name] = _read(GRAFANA / name)
    return files


def stale(files: dict[Path, str]) -> list[Path]:
    """The rendered files whose committed text differs from their source's."""
    return [path for path, text in files.items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files, write none")
    args = parser.parse_args(argv)
    try:
        files = rendered()
    except MissingSource as exc:
        print(f"render: error: {exc}; it is a source of deploy/k8s", file=sys.stderr)
        return 1
    outdated = stale(files)
    if args.check:
        for path in outdated:
            print(f"render: stale: {path.relative_to(REPO)} (run python deploy/k8s/render.py)")
        return 1 if outdated else 0
    for path in outdated:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"render: wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
