"""The gateway's Prometheus metrics (module-level: one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Histogram(
    "vi_gateway_request_seconds",
    "Gateway request latency by route template, method and status",
    ["route", "method", "status"],
)
JOBS_SUBMITTED = Counter("vi_gateway_jobs_submitted_total", "Jobs accepted by the gateway")
SHED = Counter("vi_gateway_shed_total", "Submissions refused at the door, by cause", ["cause"])
UPLOADED_BYTES = Counter("vi_gateway_uploaded_bytes_total", "Bytes of media uploaded")
