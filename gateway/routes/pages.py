"""The results page of a job, ``/jobs/{job_id}`` in a browser: a static shell and its assets.

A browser navigation cannot send ``Authorization: Bearer``, so the page needs no
credential and holds no data: the same bytes are served for every job id (nothing of
the request is echoed into them), and its script reads the job through the ``/v1`` API
with the key the person types once. The job id is checked with the API's own rule
(``gateway.job_access.JobId``) so that nonsense is a 404 in the API's error shape rather
than a page that can only fail. None of these routes is part of the API contract,
hence ``include_in_schema=False``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Response
from pydantic import TypeAdapter, ValidationError

from gateway.api_errors import ApiError
from gateway.job_access import JobId
from vidinsight.errors import Reason

router = APIRouter(include_in_schema=False)

# The page's files (package data under gateway/pages/) and how each is served.
ASSETS: dict[str, str] = {
    "results.js": "text/javascript; charset=utf-8",
    "results.css": "text/css; charset=utf-8",
}
PAGE = "results.html"

# Only this origin's script, style, images (keyframes become blob: URLs) and API calls;
# no framing, no form posts elsewhere, no referrer carrying the job id away.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

_job_id_rule: TypeAdapter[str] = TypeAdapter(JobId)


@cache
def _page_file(name: str) -> bytes:
    """A file of the page, read once: it is package data and does not change while running."""
    return resources.files("gateway").joinpath("pages", name).read_bytes()


def _served(name: str, media_type: str) -> Response:
    return Response(_page_file(name), media_type=media_type, headers=SECURITY_HEADERS)


def _valid_job_id(job_id: str) -> bool:
    """Whether ``job_id`` could name a job, by exactly the rule the API applies to it."""
    try:
        _job_id_rule.validate_python(job_id)
    except ValidationError:
        return False
    return True


@router.get("/jobs/{job_id}")
def results_page(job_id: str) -> Response:
    """The results page shell; its script fetches the job with the key the person enters."""
    if not _valid_job_id(job_id):
        raise ApiError(Reason.NOT_FOUND, "no such job page")
    return _served(PAGE, "text/html; charset=utf-8")


@router.get("/pages/{name}")
def page_asset(name: str) -> Response:
    """The page's script and style sheet; nothing else of the package is reachable here."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(Reason.NOT_FOUND, "no such page asset")
    return _served(name, media_type)
