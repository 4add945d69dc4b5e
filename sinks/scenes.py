"""Scene cuts found in a job's video, with their keyframe and thumbnail blobs.

Each time segment of a long video is searched for scenes by its own message, so a
segment stores "pieces": its scenes clipped to its borders. A piece that starts at a
segment border where there is no cut continues the previous segment's last piece;
``job_scenes`` joins such pieces, so readers see the scenes of the whole video.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sinks.db import Connection


def save_scene_pieces(
    conn: Connection, job_id: str, segment_index: int, pieces: Sequence[dict[str, Any]]
) -> None:
    """Replace one segment's pieces with ``pieces`` (keys: start_seconds, end_seconds,
    keyframe_uri, thumbnail_uri, opens_with_cut, sharpness), indexed in order.

    Replacing rather than merging means a rerun that finds fewer scenes leaves no stale
    ones behind.
    """
    conn.execute(
        "DELETE FROM scenes WHERE job_id = %s AND segment_index = %s", (job_id, segment_index)
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO scenes (job_id, segment_index, scene_index, start_seconds,"
            " end_seconds, keyframe_uri, thumbnail_uri, opens_with_cut, sharpness)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    job_id,
                    segment_index,
                    index,
                    piece["start_seconds"],
                    piece["end_seconds"],
                    piece.get("keyframe_uri"),
                    piece.get("thumbnail_uri"),
                    piece.get("opens_with_cut", True),
                    piece.get("sharpness", 0.0),
                )
                for index, piece in enumerate(pieces)
            ],
        )


def save_scenes(conn: Connection, job_id: str, scenes: Sequence[dict[str, Any]]) -> None:
    """Replace the scenes of a job stored as one segment."""
    save_scene_pieces(conn, job_id, 0, scenes)


def job_scenes(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """A job's scenes in order, pieces joined across segment borders, indexed from 0."""
    pieces = conn.execute(
        "SELECT start_seconds, end_seconds, keyframe_uri, thumbnail_uri, opens_with_cut,"
        " sharpness FROM scenes WHERE job_id = %s ORDER BY segment_index, scene_index",
        (job_id,),
    ).fetchall()
    return [{**scene, "scene_index": index} for index, scene in enumerate(join_pieces(pieces))]


def join_pieces(pieces: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The video's scenes from the pieces of all its segments, in time order.

    A piece that does not open with a cut goes on with the scene before: that scene now
    ends where the piece ends and keeps the sharper piece's keyframe (the earlier on a
    tie, as a whole-file pass picks). A scene ends where the next opens, which also spans
    a border just before a cut, where the stretch to the cut held no frame and no piece.
    """
    scenes: list[dict[str, Any]] = []
    for piece in pieces:
        if scenes and not piece["opens_with_cut"]:
            scene = scenes[-1]
            sharper = piece if piece["sharpness"] > scene["sharpness"] else scene
            scenes[-1] = {
                **sharper,
                "start_seconds": scene["start_seconds"],
                "end_seconds": piece["end_seconds"],
                "opens_with_cut": scene["opens_with_cut"],
            }
            continue
        if scenes:
            scenes[-1]["end_seconds"] = piece["start_seconds"]
        scenes.append(dict(piece))
    return scenes
