"""Scene cuts found in a job's video, with their keyframe and thumbnail blobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sinks.db import Connection


def save_scenes(conn: Connection, job_id: str, scenes: Sequence[dict[str, Any]]) -> None:
    """Replace a job's scenes with ``scenes`` (keys: start_seconds, end_seconds,
    keyframe_uri, thumbnail_uri), indexed in order.

    Replacing rather than merging means a rerun that finds fewer scenes leaves no stale
    ones behind.
    """
    conn.execute("DELETE FROM scenes WHERE job_id = %s", (job_id,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO scenes (job_id, scene_index, start_seconds, end_seconds,"
            " keyframe_uri, thumbnail_uri) VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (
                    job_id,
                    index,
                    scene["start_seconds"],
                    scene["end_seconds"],
                    scene.get("keyframe_uri"),
                    scene.get("thumbnail_uri"),
                )
                for index, scene in enumerate(scenes)
            ],
        )


def job_scenes(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """A job's scenes in order."""
    return conn.execute(
        "SELECT * FROM scenes WHERE job_id = %s ORDER BY scene_index", (job_id,)
    ).fetchall()
