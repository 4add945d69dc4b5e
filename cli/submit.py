"""``vidinsight submit FILE_OR_URL [--wait] [--json]``: a video through the gateway, as a customer.

It uses nothing but the public REST API (``VI_GATEWAY_URL``, ``VI_API_KEY``), so what it
shows is what any customer gets. A local file is streamed from disk to ``POST
/v1/uploads`` and submitted by its upload id; a URL is submitted for the pipeline to
fetch. ``--wait`` follows the job's Server-Sent Events with a progress bar per stage,
then prints the insights, the cost by stage and where the full results are.

Retrying the same command does not submit twice: the Idempotency-Key is derived from
the file's SHA-256 (or the URL), and the upload id a file got is remembered in the
user's cache directory, so a retry after a lost answer sends the very same request and
the gateway answers it with the job it already accepted.

Exit codes: 0 completed (or accepted, without ``--wait``), 1 failed or cancelled (the
reason is printed), 2 a usage, authentication or connection error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from cli.costs import usd
from gateway.job_view import PROGRESS_STAGES
from sinks.blobs import file_sha256
from vidinsight.settings import get_settings

EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TERMINAL = ("completed", "failed", "cancelled")
CONNECT_TIMEOUT_SECONDS = 10.0
# Longest silence on a request or an event stream (the gateway sends a keep-alive every 10 s).
READ_TIMEOUT_SECONDS = 60.0
# Reconnections of a broken event stream before giving up, and the longest pause between.
STREAM_RECONNECTS = 8
RECONNECT_BACKOFF_MAX_SECONDS = 10.0
# The cost aggregator records a job's last costs shortly after it completes: wait this long.
COSTS_SETTLE_SECONDS = 15.0
UPLOAD_BLOCK_BYTES = 1 << 20
BAR_WIDTH = 20
TEXT_WIDTH = 88
STAGE_WORDS = {"succeeded": "done", "running": "running", "failed": "FAILED"}


class SubmitError(Exception):
    """A request the command could not make or the gateway refused; exits with 2."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


def register(subparsers: Any) -> None:
    """Add ``submit``."""
    parser = subparsers.add_parser(
        "submit", help="submit a video file or URL through the gateway, as a customer does"
    )
    parser.add_argument(
        "source", metavar="FILE_OR_URL", help="a local video file or an http(s) URL"
    )
    parser.add_argument("--wait", action="store_true", help="follow the job and print its results")
    parser.add_argument(
        "--json", action="store_true", help="print the job (and with --wait its results) as JSON"
    )
    parser.add_argument(
        "--idempotency-key", help="use this key instead of one derived from the file or URL"
    )
    parser.add_argument(
        "--output-dir", type=Path, help="with --wait: also save insights, captions and keyframes"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Submit, optionally follow, and report; the exit code says how the job ended."""
    settings = get_settings()
    api_key = settings.api_key.get_secret_value()
    if not api_key:
        return _refuse("no API key: set VI_API_KEY (vidinsight customers create NAME prints one)")
    try:
        with Gateway(settings.gateway_url, api_key) as gateway:
            job_id = submit(gateway, args.source, args.idempotency_key)
            view = follow(gateway, job_id, ProgressLine(sys.stderr)) if args.wait else None
            return report(gateway, view or gateway.job(job_id), args)
    except SubmitError as exc:
        return _refuse(str(exc))
    except KeyboardInterrupt:
        print("\nvidinsight submit: stopped following; the job goes on", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        return _refuse(f"{exc.strerror or exc}: {exc.filename or args.source}")


def _refuse(message: str) -> int:
    print(f"vidinsight submit: {message}", file=sys.stderr)
    return EXIT_USAGE


# -- the gateway's REST API --------------------------------------------------------------


class Gateway:
    """The few calls of the REST API this command makes; failures become ``SubmitError``."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key_digest = hashlib.sha256(api_key.encode()).hexdigest()
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
        )

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Make the request; SubmitError for an unreachable gateway or a non-2xx answer."""
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SubmitError(f"cannot reach the gateway at {self.base_url}: {exc}") from exc
        if response.is_error:
            raise refused(response)
        return response

    def upload(self, path: Path) -> str:
        """Stream the file from disk as the body of ``POST /v1/uploads``; its upload id.

        Sent in fixed-size blocks with its length declared, so a file over the gateway's
        cap is refused before a byte is sent and a large one is never held in memory.
        """
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Content-Type": media_type, "Content-Length": str(path.stat().st_size)}
        with path.open("rb") as body:
            blocks = iter(lambda: body.read(UPLOAD_BLOCK_BYTES), b"")
            response = self.request("POST", "/v1/uploads", content=blocks, headers=headers)
        return str(response.json()["upload_id"])

    def create_job(self, body: dict[str, str], idempotency_key: str) -> tuple[str, bool]:
        """``POST /v1/jobs``; the job id and whether the gateway had accepted it before."""
        response = self.request(
            "POST", "/v1/jobs", json=body, headers={"Idempotency-Key": idempotency_key}
        )
        return str(response.json()["job_id"]), response.headers.get("Idempotent-Replayed") == "true"

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/jobs/{job_id}").json())

    def insights(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/jobs/{job_id}/insights").json())

    def costs(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/jobs/{job_id}/costs").json())

    def download(self, path: str, target: Path) -> None:
        target.write_bytes(self.request("GET", path).content)

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job views of ``GET /v1/jobs/{id}/events`` (Server-Sent Events) as they come."""
        try:
            with self._client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                if response.is_error:
                    response.read()
                    raise refused(response)
                yield from sse_data(response.iter_lines(), event="job")
        except httpx.HTTPError as exc:
            raise StreamBroken(str(exc)) from exc


class StreamBroken(SubmitError):
    """The event stream broke off; the job goes on, so it is worth reconnecting."""


def refused(response: httpx.Response) -> SubmitError:
    """The gateway's error (``{"error": {"reason", "message"}}``) as one readable line."""
    reason = None
    try:
        error = response.json()["error"]
        reason = str(error["reason"])
        detail = f"{reason}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        detail = response.text[:200] or response.reason_phrase
    hint = ""
    if response.status_code == 401:
        hint = " (check VI_API_KEY)"
    elif "retry-after" in response.headers:
        hint = f" (retry after {response.headers['retry-after']} s)"
    request = response.request
    return SubmitError(
        f"{request.method} {request.url.path} refused with {response.status_code} {detail}{hint}",
        status=response.status_code,
        reason=reason,
    )


def sse_data(lines: Iterator[str], event: str) -> Iterator[dict[str, Any]]:
    """The JSON data of each Server-Sent Event named ``event`` (comments and others skipped)."""
    name, data = "message", list[str]()
    for line in lines:
        if not line:
            if data and name == event:
                yield dict(json.loads("\n".join(data)))
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


# -- submitting --------------------------------------------------------------------------


def submit(gateway: Gateway, source: str, idempotency_key: str | None) -> str:
    """Submit a URL or a local file; the job id (the same one when the command is retried)."""
    if source.startswith(("http://", "https://")):
        key = idempotency_key or f"submit-url-{_sha256_text(source)}"
        job_id, replayed = gateway.create_job({"source_url": source}, key)
    else:
        job_id, replayed = _submit_file(gateway, Path(source), idempotency_key)
    note = " (submitted before: the same job)" if replayed else ""
    print(f"job {job_id} accepted{note}", file=sys.stderr)
    return job_id


def _submit_file(gateway: Gateway, path: Path, idempotency_key: str | None) -> tuple[str, bool]:
    """Upload once, then submit the upload; a retry reuses the remembered upload id."""
    if not path.is_file():
        raise SubmitError(f"{path}: no such file (give a local video file or an http(s) URL)")
    digest = file_sha256(path)
    key = idempotency_key or f"submit-file-{digest}"
    record = UploadRecord(gateway, key, digest)
    upload_id = record.load()
    if upload_id is not None:
        try:
            return gateway.create_job({"upload_id": upload_id}, key)
        except SubmitError as exc:
            if exc.status != 404:  # the remembered upload is gone: upload again
                raise
    print(f"uploading {path} ({path.stat().st_size} bytes)", file=sys.stderr)
    upload_id = gateway.upload(path)
    record.save(upload_id)
    try:
        return gateway.create_job({"upload_id": upload_id}, key)
    except SubmitError as exc:
        if exc.reason == "idempotency_key_reused":
            raise SubmitError(
                f"this file was submitted before with the key {key!r} from elsewhere; pass"
                " --idempotency-key with a new key to process it again"
            ) from exc
        raise


class UploadRecord:
    """The upload id a file got, kept under the user's cache directory.

    Named by a digest of the gateway, the API key's hash, the idempotency key and the
    file's hash, so it never holds a secret and never hands one customer's upload to another.
    """

    def __init__(self, gateway: Gateway, key: str, file_digest: str) -> None:
        name = _sha256_text("\n".join([gateway.base_url, gateway.api_key_digest, key, file_digest]))
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        self.path = cache / "vidinsight" / "uploads" / f"{name}.json"

    def load(self) -> str | None:
        try:
            return str(json.loads(self.path.read_text())["upload_id"])
        except (OSError, ValueError, KeyError):
            return None

    def save(self, upload_id: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"upload_id": upload_id}))
        except OSError:
            pass  # only a retry's convenience is lost


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- following ---------------------------------------------------------------------------


def follow(
    gateway: Gateway, job_id: str, on_view: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Watch the job's events until it ends; its final view.

    The gateway ends a stream after a bounded time and a network may break one, so the
    stream is reopened (with backoff after a break) until the job has ended.
    """
    breaks = 0
    while True:
        try:
            for view in gateway.events(job_id):
                on_view(view)
                breaks = 0
                if view["status"] in TERMINAL:
                    return view
        except StreamBroken as exc:
            breaks += 1
            if breaks > STREAM_RECONNECTS:
                raise SubmitError(f"lost the job's event stream: {exc}") from exc
            time.sleep(min(RECONNECT_BACKOFF_MAX_SECONDS, 0.5 * 2**breaks))


class ProgressLine:
    """A progress bar with each stage's state; redrawn in place on a terminal.

    Elsewhere (a pipe, a log file, a test) each change is a line of its own.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = ""

    def __call__(self, view: dict[str, Any]) -> None:
        line = progress_text(view)
        if line == self.last:
            return
        self.last = line
        if self.tty:
            self.out.write(f"\r\x1b[2K{line}")
            if view["status"] in TERMINAL:
                self.out.write("\n")
        else:
            self.out.write(f"{line}\n")
        self.out.flush()


def progress_text(view: dict[str, Any]) -> str:
    """``[#####...] 40% running  ingest done | preprocess running (attempt 2) | ...``"""
    filled = round(BAR_WIDTH * float(view["progress"]))
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    stages = view.get("stages", {})
    states = [f"{stage} {_stage_word(stages.get(stage))}" for stage in PROGRESS_STAGES]
    return f"[{bar}] {round(100 * float(view['progress'])):3d}%  {view['status']:<9}  " + (
        " | ".join(states)
    )


def _stage_word(stage: dict[str, Any] | None) -> str:
    if stage is None:
        return "waiting"
    word = STAGE_WORDS.get(stage["status"], stage["status"])
    attempts = int(stage.get("attempts") or 1)
    return f"{word} (attempt {attempts})" if attempts > 1 and word != "done" else word


# -- reporting ---------------------------------------------------------------------------


def report(gateway: Gateway, view: dict[str, Any], args: argparse.Namespace) -> int:
    """Print the outcome (text or JSON); the exit code for how the job stands."""
    job_id = view["job_id"]
    completed = args.wait and view["status"] == "completed"
    insights = gateway.insights(job_id) if completed else None
    costs = settled_costs(gateway, view) if args.wait else None
    if completed and args.output_dir is not None:
        saved = save_results(gateway, job_id, insights or {}, args.output_dir)
    else:
        saved = []
    if args.json:
        print(json.dumps({"job": view, "insights": insights, "costs": costs}, indent=2))
    elif not args.wait:
        print(job_id)
    elif insights is not None and costs is not None:
        print_results(gateway.base_url, view, insights, costs, saved)
    if view["status"] in ("failed", "cancelled"):
        print(failure_text(view), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_COMPLETED


def settled_costs(gateway: Gateway, view: dict[str, Any]) -> dict[str, Any]:
    """The job's costs once every stage that succeeded has its cost recorded (or after a bound)."""
    ran = {
        name
        for name, stage in view.get("stages", {}).items()
        if name in PROGRESS_STAGES and stage["status"] == "succeeded"
    }
    deadline = time.monotonic() + COSTS_SETTLE_SECONDS
    while True:
        costs = gateway.costs(view["job_id"])
        if ran <= set(costs["by_stage"]) or time.monotonic() > deadline:
            return costs
        time.sleep(0.5)


def failure_text(view: dict[str, Any]) -> str:
    error = view.get("error") or {}
    where = f" at stage {error['stage']}" if error.get("stage") else ""
    reason = error.get("reason") or "no reason recorded"
    text = str(error.get("message") or "").removeprefix(f"{reason}: ")
    message = f": {text}" if text else ""
    return f"job {view['job_id']} {view['status']}{where}: {reason}{message}"


def print_results(
    base_url: str,
    view: dict[str, Any],
    insights: dict[str, Any],
    costs: dict[str, Any],
    saved: list[Path],
) -> None:
    """The human summary: what the video says, what it cost, where the rest is."""
    job_id = view["job_id"]
    took = _seconds_between(view["created_at"], view["updated_at"])
    print(f"\nJob {job_id} completed in {took:.1f} s\n")
    summary = textwrap.wrap(insights.get("summary") or "(none)", width=TEXT_WIDTH)
    print("Summary\n  " + "\n  ".join(summary))
    print("\nChapters")
    for chapter in insights.get("chapters", []):
        span = f"{clock(chapter['start_seconds'])}-{clock(chapter['end_seconds'])}"
        print(f"  {span:>13}  {chapter.get('title', '')}")
    print("\nAction items")
    for item in insights.get("action_items", []) or [{"owner": "", "task": "(none)"}]:
        due = f" (due {item['due']})" if item.get("due") else ""
        owner = f"{item['owner']}: " if item.get("owner") else ""
        print(f"  - {owner}{item.get('task', '')}{due}")
    if insights.get("keywords"):
        print("\nKeywords\n  " + ", ".join(insights["keywords"]))
    print("\nCost by stage (USD)")
    for stage, micros in stage_micros(costs).items():
        print(f"  {stage:<12} {usd(micros):>12}")
    print(f"  {'total':<12} {usd(int(costs['total_usd_micros'])):>12}")
    print("\nResults (GET with the header 'Authorization: Bearer <API key>')")
    url = f"{base_url}/v1/jobs/{job_id}"
    print(f"  full JSON  {url}/insights")
    print(f"  captions   {url}/captions.vtt  {url}/captions.srt")
    frames = [s["keyframe_url"] for s in insights.get("scenes", []) if s.get("keyframe_url")]
    if frames:
        print(f"  keyframes  {base_url}{frames[0]} ... ({len(frames)} scenes)")
    if saved:
        print(f"  saved in   {saved[0].parent}: " + ", ".join(p.name for p in saved))
    print(f"  in a browser (asks for the API key once): {base_url}/jobs/{job_id}")


def stage_micros(costs: dict[str, Any]) -> dict[str, int]:
    """Exact micro-dollars per stage from the ledger events, in pipeline order."""
    totals: dict[str, int] = {}
    for event in costs.get("events", []):
        totals[event["stage"]] = totals.get(event["stage"], 0) + int(event["amount_usd_micros"])
    order = {stage: i for i, stage in enumerate(PROGRESS_STAGES)}
    return dict(sorted(totals.items(), key=lambda item: order.get(item[0], len(order))))


def save_results(
    gateway: Gateway, job_id: str, insights: dict[str, Any], folder: Path
) -> list[Path]:
    """Insights, captions and keyframes as files under ``folder``; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    document = folder / "insights.json"
    document.write_text(json.dumps(insights, indent=2))
    saved = [document]
    for name in ("captions.vtt", "captions.srt"):
        gateway.download(f"/v1/jobs/{job_id}/{name}", folder / name)
        saved.append(folder / name)
    for scene in insights.get("scenes", []):
        if scene.get("keyframe_url"):
            target = folder / f"keyframe-{scene['index']}.jpg"
            gateway.download(scene["keyframe_url"], target)
            saved.append(target)
    return saved


def clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour on."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
