"""The dashboards and alerts over real Prometheus, scraping the running platform during a job.

Debian's ``prometheus`` runs the committed scrape configuration with its targets moved to
the ``platform`` fixture's processes (and a 1 s interval) and the committed rule file.
While it scrapes, a meeting video and a file that is no video travel the pipeline, so
jobs complete, fail and dead-letter. Then every Grafana panel query and every alert
expression is evaluated through Prometheus's HTTP API: all must evaluate, and every
query of the pipeline overview must return series.

Meanwhile an echo stage worker (tests/streams/runtime/echo_stage.py) with a deadline of
two seconds, scraped too, gets a message that would take ten minutes and then one whose
handler never returns, so the timeout and hung-handler alerts must fire: the counters
have to reach Prometheus and the rules have to match them, which evaluating alone
would not show.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.fixtures.meeting import Meeting
from tests.fixtures.network import free_port
from tests.fixtures.platform import Platform
from tests.fixtures.workers import EchoPipeline, new_job_ids
from topics.catalogue import STAGE_NAMES
from vidinsight.settings import REPO_ROOT

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = REPO_ROOT / "deploy" / "grafana"
OVERVIEW = "pipeline-overview.json"
START_TIMEOUT_SECONDS = 60.0
# The longest wait for a condition Prometheus reports (a scrape, a rule evaluation), or for
# the echo worker to exit, on a loaded machine.
CONDITION_TIMEOUT_SECONDS = 60.0

# The echo worker's deadline is short, so its timeout comes within the test; the grace
# leaves a loaded machine time to let the waiting handler give up (else it counts as
# hung). One try per message: the message that times out is dead-lettered at once, and
# the one that hangs is parked by the worker that hung on it, so its restarted copy does
# not hang again.
ECHO_DEADLINES = {
    "VI_STAGE_DEADLINE_BASE_SECONDS": json.dumps({"default": 300, "echo": 2}),
    "VI_STAGE_DEADLINE_GRACE_SECONDS": "3",
    "VI_UNKNOWN_ERROR_MAX_ATTEMPTS": "1",
}
ECHO_TIMEOUTS = 'vidinsight_stage_timeouts_total{stage="echo"}'
# The restart half of VidinsightHandlerHung, for the echo stage: the half that holds even
# when the worker exits before a scrape reads its hung-handler count.
ECHO_RESTARTS = """sum by (stage) (
  changes(process_start_time_seconds[15m])
  * on (instance) group_left (stage)
  group by (instance, stage) (vidinsight_stage_in_flight_messages{stage="echo"})
)"""
# What the assertions on the platform's jobs need Prometheus to have scraped.
JOB_ENDS_SCRAPED = (
    'sum(vidinsight_jobs_ended_total{status="completed"}) >= 1'
    ' and sum(vidinsight_jobs_ended_total{status="failed"}) >= 1'
    " and sum(vidinsight_stage_dead_letters_total) >= 1"
)

# Where `make up` puts each process (deploy/local/services.d/platform.sh and gateway.sh).
MAKE_UP_PORTS = {
    **{9101 + index: f"worker-{stage}" for index, stage in enumerate(STAGE_NAMES)},
    9101 + len(STAGE_NAMES): "costs",
    9101 + len(STAGE_NAMES) + 1: "gateway",  # its metrics listener, not the API port
}

# Grafana fills these in; any value it could choose must evaluate. The rate window spans
# the whole test, so the job's counters have moved inside it.
GRAFANA_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "15s",
    "__range": "1h",
    "customer": ".*",
}

pytestmark = pytest.mark.skipif(
    not PROMETHEUS.exists() or not PROMTOOL.exists(),
    reason="Debian's prometheus package is not installed (deploy/local/stack.sh with installs it)",
)


def test_committed_configuration_and_rules_pass_promtool() -> None:
    for command in (["check", "config", str(CONFIG)], ["check", "rules", str(ALERTS)]):
        checked = subprocess.run([str(PROMTOOL), *command], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_has_a_summary_description_and_runbook_section() -> None:
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    anchors = {_anchor(line) for line in operations.splitlines() if line.startswith("#")}
    for rule in _alert_rules():
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        runbook = annotations.get("runbook", "")
        assert runbook.startswith("docs/operations.md#"), rule["alert"]
        assert runbook.split("#", 1)[1] in anchors, f"{rule['alert']}: no section {runbook}"


def test_the_restart_half_of_the_hung_handler_alert_is_the_rules() -> None:
    """The test asks Prometheus for the rule's restart half; it must be the rule's own."""
    (rule,) = [rule for rule in _alert_rules() if rule["alert"] == "VidinsightHandlerHung"]
    half = ECHO_RESTARTS.replace('{stage="echo"}', "")
    assert " ".join(half.split()) in " ".join(str(rule["expr"]).split())


def test_dashboards_and_alerts_evaluate_against_the_running_platform(
    platform: Platform, meeting: Meeting, echo_pipeline: EchoPipeline, tmp_path: Path
) -> None:
    echo_env = {**ECHO_DEADLINES, "VI_METRICS_PORT": str(free_port())}
    echo_pipeline.start_worker("echo", **echo_env)
    echo_target = f"127.0.0.1:{echo_env['VI_METRICS_PORT']}"
    with RunningPrometheus(platform, tmp_path, {"vidinsight-echo": echo_target}) as api:
        _wait_for_targets_up(api, expected=len(platform.processes) + 1)
        # increase() sees a counter move only from a sample Prometheus already holds.
        _wait_for(api, f"{ECHO_TIMEOUTS} == 0", "the echo worker's timeouts at zero")
        slow, hung = new_job_ids(2)
        echo_pipeline.submit(slow, wait_seconds="600")
        _run_jobs_while_scraped(platform, meeting, tmp_path)

        _wait_for(api, f"{ECHO_TIMEOUTS} >= 1", "the echo worker's timeout")
        _wait_for_alert(api, "VidinsightStageTimeouts", stage="echo")
        assert echo_pipeline.wait_finished([slow]) == {slow: "dead_lettered"}
        assert echo_pipeline.runs([slow])[slow]["reason"] == "stage_timeout"
        _hang_a_handler_and_restart(echo_pipeline, hung, echo_env)
        _wait_for_alert(api, "VidinsightHandlerHung", stage="echo")
        _wait_for(api, f"{ECHO_RESTARTS} >= 1", "the echo worker's restart")
        _wait_for(api, JOB_ENDS_SCRAPED, "the platform's ended jobs and dead letters")

        failures = {expr: error for expr in _all_exprs() if (error := _query(api, expr)[1])}
        assert not failures, json.dumps(failures, indent=2)
        empty = [expr for expr in _panel_exprs(OVERVIEW) if not _query(api, expr)[0]]
        assert not empty, "overview queries without data:\n" + "\n".join(empty)
        assert _value(api, 'sum(vidinsight_jobs_ended_total{status="completed"})') >= 1
        assert _value(api, 'sum(vidinsight_jobs_ended_total{status="failed"})') >= 1
        assert _value(api, "sum(vidinsight_stage_dead_letters_total)") >= 1
        _assert_rules_healthy(api)


# -- Prometheus ---------------------------------------------------------------------------


def _prometheus_config(platform: Platform, extra_targets: dict[str, str]) -> dict[str, Any]:
    """The committed configuration, scraping the fixture's processes every second, and
    ``extra_targets`` (job name: address) as jobs of their own."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    covered = []
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            names = [MAKE_UP_PORTS[int(target.rsplit(":", 1)[1])] for target in group["targets"]]
            group["targets"] = [urlsplit(platform.processes[n].metrics_url).netloc for n in names]
            covered += names
    assert sorted(covered) == sorted(platform.processes), "make up's scrape targets vs processes"
    for job_name, address in extra_targets.items():
        config["scrape_configs"].append(
            {"job_name": job_name, "static_configs": [{"targets": [address]}]}
        )
    return config


class _Api:
    """Prometheus's HTTP API at one base URL."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=30)

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.client.get(path, params=params)


class RunningPrometheus:
    """Runs /usr/bin/prometheus on a free port with its data in ``tmp_path``; stops it by pid."""

    def __init__(self, platform: Platform, tmp_path: Path, extra_targets: dict[str, str]) -> None:
        self.config_path = tmp_path / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(_prometheus_config(platform, extra_targets)))
        self.port = free_port()
        self.log_path = tmp_path / "prometheus.log"
        self.data = tmp_path / "prometheus-data"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Api:
        self.process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "GOMAXPROCS": "1"},
        )
        api = _Api(f"http://127.0.0.1:{self.port}")
        self._wait_ready(api)
        return api

    def _wait_ready(self, api: _Api) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            assert self.process is not None and self.process.poll() is None, self._log_tail()
            try:
                if api.get("/-/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready:\n" + self._log_tail()
            time.sleep(0.3)

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.data, ignore_errors=True)


def _wait_for_targets_up(api: _Api, expected: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        targets = api.get("/api/v1/targets", state="active").json()["data"]["activeTargets"]
        down = {t["scrapeUrl"]: t["lastError"] for t in targets if t["health"] != "up"}
        if len(targets) == expected and not down:
            return
        assert time.monotonic() < deadline, f"targets not up: {down or targets}"
        time.sleep(0.5)


def _query(api: _Api, expr: str) -> tuple[list[Any], str]:
    """The result of an instant query and its error ('' when it evaluated)."""
    answer = api.get("/api/v1/query", query=expr).json()
    if answer["status"] != "success":
        return [], f"{answer.get('errorType')}: {answer.get('error')}"
    return list(answer["data"]["result"]), ""


def _value(api: _Api, expr: str) -> float:
    result, error = _query(api, expr)
    assert not error and result, f"{expr}: {error or 'no data'}"
    return float(result[0]["value"][1])


def _wait_for(api: _Api, expr: str, what: str) -> None:
    """Until the instant query ``expr`` (a condition) returns a series, with a bound."""
    deadline = time.monotonic() + CONDITION_TIMEOUT_SECONDS
    while True:
        result, error = _query(api, expr)
        assert not error, f"{expr}: {error}"
        if result:
            return
        assert time.monotonic() < deadline, f"no {what} in Prometheus: {expr}"
        time.sleep(0.5)


def _wait_for_alert(api: _Api, name: str, stage: str) -> None:
    """Until Prometheus reports alert ``name`` firing for ``stage``, with a bound."""
    deadline = time.monotonic() + CONDITION_TIMEOUT_SECONDS
    while True:
        alerts = api.get("/api/v1/alerts").json()["data"]["alerts"]
        states = [
            alert["state"]
            for alert in alerts
            if alert["labels"].get("alertname") == name and alert["labels"].get("stage") == stage
        ]
        if "firing" in states:
            return
        assert time.monotonic() < deadline, f"{name} not firing for {stage}: {states or 'absent'}"
        time.sleep(0.5)


def _assert_rules_healthy(api: _Api) -> None:
    """Prometheus evaluated every alert rule, and none of them failed."""
    groups = api.get("/api/v1/rules", type="alert").json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in _alert_rules()}
    unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not unhealthy, unhealthy


# -- the platform under load --------------------------------------------------------------


def _run_jobs_while_scraped(platform: Platform, meeting: Meeting, tmp_path: Path) -> None:
    """One job that completes and one that dead-letters (its file is not a video)."""
    not_a_video = tmp_path / "not-a-video.mp4"
    not_a_video.write_bytes(b"this is not a video file\n" * 400)
    completed = platform.submit(meeting.video)
    failed = platform.submit(not_a_video)
    assert platform.wait(completed)["status"] == "completed"
    assert platform.wait(failed)["status"] == "failed"


def _hang_a_handler_and_restart(echo: EchoPipeline, job_id: str, env: dict[str, str]) -> None:
    """A handler that never returns: its worker exits 70, and is started again on the same
    metrics port as its supervisor would (same port, same Prometheus target)."""
    (worker,) = echo.workers
    echo.submit(job_id, hang="forever")
    assert worker.process.wait(CONDITION_TIMEOUT_SECONDS) == 70, worker.log_path.read_text()
    echo.start_worker("echo", **env)


# -- what the dashboards and rules ask ----------------------------------------------------


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def _panel_exprs(dashboard: str) -> list[str]:
    """Every target expression of a dashboard's panels, Grafana's variables filled in."""
    board = json.loads((DASHBOARDS / dashboard).read_text())
    panels = [p for top in board["panels"] for p in [top, *top.get("panels", [])]]
    return [
        _fill_variables(target["expr"])
        for panel in panels
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def _all_exprs() -> list[str]:
    dashboards = sorted(path.name for path in DASHBOARDS.glob("*.json"))
    assert dashboards == ["costs.json", "gateway.json", OVERVIEW]
    exprs = [expr for name in dashboards for expr in _panel_exprs(name)]
    return exprs + [str(rule["expr"]) for rule in _alert_rules()]


def _fill_variables(expr: str) -> str:
    """Replace $name and ${name} as Grafana would; an unknown variable fails the test."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
