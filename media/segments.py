"""Time segments of a long video, each handled by its own message.

Borders are nominal: whole multiples of the segment length from the start. The audio
branch moves each border to the pause nearest it (``media.chunking``) and the scene
branch decides cuts on both sides of it with context (``media.scenes``), so where the
nominal border falls changes no result. The last segment has no end: it runs to the
end of the media, whatever the container declared, so a file longer than it says is
still read (and refused when too long) by someone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """[start, end) on the video timeline; ``end`` None for the last segment."""

    index: int
    count: int
    start_seconds: float
    end_seconds: float | None


def plan_segments(duration_seconds: float, segment_seconds: float) -> list[Segment]:
    """Segments of ``segment_seconds`` (the last one up to twice as long, so no sliver
    is left over); one segment for media no longer than that."""
    count = max(1, math.floor(duration_seconds / segment_seconds))
    return [
        Segment(
            index=index,
            count=count,
            start_seconds=index * segment_seconds,
            end_seconds=(index + 1) * segment_seconds if index < count - 1 else None,
        )
        for index in range(count)
    ]
