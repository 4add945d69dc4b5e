"""One segment of a media blob, as both branches after ingest see it.

The audio branch (``streams.preprocess``) and the scene branch (``streams.scenes``) take
the same MediaIngested message in their own consumer groups; this is what each needs
of it and of its handler's context (the benches run the same work with a blob store
of their own and no Kafka).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from media.segments import Segment
from sinks.blobs import BlobStore
from streams.runtime.context import HandlerContext
from streams.runtime.stage import Inbound
from vidinsight.settings import Settings


@dataclass(frozen=True)
class MediaWork:
    """One segment of one media file to work on."""

    settings: Settings
    blobs: BlobStore
    job_id: str
    media: Path
    # The media's length as ingest probed it (what the container declared): the last
    # segment's end, and what a too_long message says was claimed.
    ingested_seconds: float
    segment: Segment
    deadline: float | None

    @property
    def segment_seconds(self) -> float:
        """The segment's playing time as declared, to the millisecond (what is billed)."""
        end = self.segment.end_seconds
        stop = self.ingested_seconds if end is None else end
        return round(max(0.0, stop - self.segment.start_seconds), 3)


def segment_of(value: Mapping[str, Any]) -> Segment:
    """The segment a MediaIngested is for (a message from before segments: the whole)."""
    end = value.get("segment_end_seconds")
    return Segment(
        index=int(value.get("segment_index") or 0),
        count=int(value.get("segment_count") or 1),
        start_seconds=float(value.get("segment_start_seconds") or 0.0),
        end_seconds=None if end is None else float(end),
    )


def media_work(ctx: HandlerContext, inbound: Inbound, media: Path) -> MediaWork:
    """The work a branch's handler does on the segment ``inbound`` is for, in ``media``."""
    return MediaWork(
        settings=ctx.settings,
        blobs=ctx.blobs,
        job_id=inbound.job_id,
        media=media,
        ingested_seconds=float(inbound.value["duration_seconds"]),
        segment=segment_of(inbound.value),
        deadline=ctx.deadline,
    )
