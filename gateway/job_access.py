"""A customer reaches a job only through its id *and* its ownership: otherwise 404.

Another customer's job answers exactly like a job that does not exist (never 403), so
the API leaks no job ids across tenants (I6).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

from gateway.api_errors import ApiError
from sinks.db import Connection
from sinks.jobs import get_job
from vidinsight.errors import Reason

# The ``{job_id}`` path parameter of every job route.
JobId = Annotated[
    str, Path(min_length=1, max_length=100, pattern=r"^[!-~]+$", description="The job's id")
]


def owned_job(conn: Connection, job_id: str, customer_id: str) -> dict[str, Any]:
    """The caller's job; 404 for a missing job and for another customer's."""
    job = get_job(conn, job_id, customer_id)
    if job is None:
        raise ApiError(Reason.NOT_FOUND, f"no job {job_id}")
    return job
