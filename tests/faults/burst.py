"""A burst of job submissions at the gateway, and the tally of how it answered.

``total`` requests are started at an even pace across the window (request i at
i x window / total seconds), from several customers in turn, each with an
Idempotency-Key of its own (the gateway answers a repeated key with the first job, so
unique keys make every request a new job). Answers may be slow under load, so each
request waits up to a generous timeout; the burst is over when every request has been
answered or has failed. ``send_seconds`` tells whether the pace held: past the window,
the concurrency bound (or the client) could not keep up.

The client is aiohttp, not httpx: with a thousand requests queued for its pool, httpx
spends over a minute of CPU on 2,000 requests where aiohttp spends well under a second
(measured against a trivial server on this machine), and a sender starved of CPU sends
late. Its idle keep-alive is shorter than uvicorn's (5 s), so a connection is never
reused just as the gateway closes it.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp

JOBS_PATH = "/v1/jobs"
# Answers that tell the client to come back later; they must say when.
RETRY_STATUSES = frozenset({429, 503})
PERCENTILES = (50, 90, 99, 100)
# Time for the processes of a split burst to start before their common window opens.
SPAWN_SECONDS = 5.0
# Seconds an idle connection stays open for reuse: under uvicorn's 5 s keep-alive.
KEEPALIVE_SECONDS = 2.0
# (customer_id, api_key, request body): what one customer submits, cycled through.
Template = tuple[str, str, dict[str, Any]]


@dataclass
class BurstTally:
    """How the gateway answered a burst."""

    sent: int
    window_seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after_present: int = 0  # 429/503 carrying Retry-After
    retry_after_missing: int = 0  # 429/503 without it
    other_5xx: int = 0  # 5xx other than 503
    dropped: Counter[str] = field(default_factory=Counter)  # no answer, by exception class
    accepted: list[tuple[str, str]] = field(default_factory=list)  # (customer_id, job_id)
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests only
    send_seconds: float = 0.0  # from the first request's start to the last one's
    total_seconds: float = 0.0  # from the first start to the last answer or failure

    def record(
        self, customer_id: str, status: int, retry_after: bool, job_id: str | None, seconds: float
    ) -> None:
        """Count one answer: its status, whether it said when to retry, the job it made."""
        self.statuses[status] += 1
        self.latencies.append(seconds)
        if status in RETRY_STATUSES:
            if retry_after:
                self.retry_after_present += 1
            else:
                self.retry_after_missing += 1
        elif status >= 500:
            self.other_5xx += 1
        elif job_id is not None:
            self.accepted.append((customer_id, job_id))

    def percentiles(self) -> dict[str, float]:
        """Latency by nearest rank: p50, p90, p99 and p100 (the slowest), in seconds."""
        ordered = sorted(self.latencies)
        if not ordered:
            return {}
        return {
            f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in PERCENTILES
        }

    def problems(self) -> list[str]:
        """What a gateway under a burst must not do (and a burst that was not one)."""
        found = []
        if self.retry_after_missing:
            found.append(f"{self.retry_after_missing} 429/503 answers without Retry-After")
        if self.other_5xx:
            found.append(f"{self.other_5xx} 5xx answers other than 503")
        if self.dropped:
            lost = sum(self.dropped.values())
            found.append(f"{lost} requests without an answer: {dict(self.dropped)}")
        # The last request is due at (sent - 1) / sent x window; a second more is slack.
        if self.send_seconds > self.window_seconds + 1:
            found.append(
                f"sending took {self.send_seconds:.1f} s, not within the "
                f"{self.window_seconds:.0f} s window"
            )
        return found

    def report(self) -> dict[str, Any]:
        """The tally as a JSON-ready dict (the accepted jobs as a count per customer)."""
        return {
            "sent": self.sent,
            "window_seconds": self.window_seconds,
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "retry_after_present": self.retry_after_present,
            "retry_after_missing": self.retry_after_missing,
            "other_5xx": self.other_5xx,
            "dropped": dict(self.dropped),
            "accepted_by_customer": dict(Counter(customer for customer, _ in self.accepted)),
            "latency_seconds": {k: round(v, 3) for k, v in self.percentiles().items()},
            "send_seconds": round(self.send_seconds, 3),
            "total_seconds": round(self.total_seconds, 3),
        }


def fire_burst(
    gateway_url: str,
    templates: list[Template],
    total: int,
    window_seconds: float,
    max_concurrency: int = 1000,
    timeout_seconds: float = 120.0,
    processes: int = 1,
) -> BurstTally:
    """Send ``total`` submissions (cycling through ``templates``) within the window and
    wait for every answer; runs an event loop of its own (call it from a plain thread).

    ``processes`` > 1 splits the burst over that many processes that start the window
    together: on a machine whose CPUs the platform keeps busy, one Python event loop
    cannot start 2,000 requests in 10 s, and a burst sent late is no burst.
    """
    if not templates:
        raise ValueError("a burst needs at least one template to cycle through")
    if processes == 1:
        return asyncio.run(
            _fire(gateway_url, templates, total, window_seconds, max_concurrency,
                  timeout_seconds, time.time())
        )  # fmt: skip
    start_at = time.time() + SPAWN_SECONDS
    shares = [total // processes + (index < total % processes) for index in range(processes)]
    spawn = multiprocessing.get_context("spawn")  # never fork a process with Kafka threads
    with ProcessPoolExecutor(processes, mp_context=spawn) as pool:
        parts = pool.map(
            _fire_part,
            [(gateway_url, templates[i:] + templates[:i], share, window_seconds,
              max(1, max_concurrency // processes), timeout_seconds, start_at)
             for i, share in enumerate(shares)],
        )  # fmt: skip
        return _merged(total, window_seconds, list(parts))


def _fire_part(args: tuple[Any, ...]) -> BurstTally:
    return asyncio.run(_fire(*args))


def _merged(total: int, window_seconds: float, parts: list[BurstTally]) -> BurstTally:
    """One tally of the parts sent by several processes over the same window."""
    tally = BurstTally(sent=total, window_seconds=window_seconds)
    for part in parts:
        tally.statuses.update(part.statuses)
        tally.dropped.update(part.dropped)
        tally.retry_after_present += part.retry_after_present
        tally.retry_after_missing += part.retry_after_missing
        tally.other_5xx += part.other_5xx
        tally.accepted += part.accepted
        tally.latencies += part.latencies
        tally.send_seconds = max(tally.send_seconds, part.send_seconds)
        tally.total_seconds = max(tally.total_seconds, part.total_seconds)
    return tally


async def _fire(
    gateway_url: str,
    templates: list[Template],
    total: int,
    window_seconds: float,
    max_concurrency: int,
    timeout_seconds: float,
    start_at: float,
) -> BurstTally:
    tally = BurstTally(sent=total, window_seconds=window_seconds)
    slots = asyncio.Semaphore(max_concurrency)
    connector = aiohttp.TCPConnector(limit=max_concurrency, keepalive_timeout=KEEPALIVE_SECONDS)
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    async with aiohttp.ClientSession(gateway_url, connector=connector, timeout=timeout) as client:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.monotonic()
        tasks = []
        for index in range(total):
            due = started + index * window_seconds / total
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await slots.acquire()
            tally.send_seconds = time.monotonic() - started
            template = templates[index % len(templates)]
            tasks.append(asyncio.create_task(_submit(client, template, tally, slots)))
        await asyncio.gather(*tasks)
        tally.total_seconds = time.monotonic() - started
    return tally


async def _submit(
    client: aiohttp.ClientSession, template: Template, tally: BurstTally, slot: asyncio.Semaphore
) -> None:
    """One request, counted in ``tally``; releases its concurrency slot when it is over."""
    customer_id, api_key, body = template
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Idempotency-Key": f"burst-{uuid.uuid4().hex}",
    }
    started = time.monotonic()
    try:
        async with client.post(JOBS_PATH, json=body, headers=headers) as response:
            accepted = response.status == 202
            job_id = (await response.json(content_type=None))["job_id"] if accepted else None
            retry_after = "Retry-After" in response.headers
            seconds = time.monotonic() - started
            tally.record(customer_id, response.status, retry_after, job_id, seconds)
    except (aiohttp.ClientError, TimeoutError) as exc:  # refused, reset, timed out: lost
        tally.dropped[type(exc).__name__] += 1
    finally:
        slot.release()
