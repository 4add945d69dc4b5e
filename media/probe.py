"""Probing media with PyAV: what is in a file, and why it cannot be processed.

Every rejection is a ``PermanentError`` with its reason code, so the ingest stage
fails the job with a clear message instead of crashing on it later in the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av

from vidinsight.errors import PermanentError, Reason, remaining_seconds

# Leading bytes of containers we know; a file that starts like one but cannot be
# read is corrupt, a file that starts like none is not media at all.
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # MP4, MOV, M4A, 3GP
    (4, b"moov"),
    (4, b"mdat"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska, WebM
    (0, b"RIFF"),  # WAV, AVI
    (0, b"OggS"),
    (0, b"fLaC"),
    (0, b"ID3"),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x30\x26\xb2\x75"),  # ASF, WMV
)
# A file whose packets stop well before its declared duration was cut short.
_MIN_PLAYED_FRACTION = 0.9
# Packets may end this far past the declared duration (a last audio frame's padding, a
# last video frame's length); beyond it the declaration is not believed.
_OVERRUN_SECONDS = 1.0


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class MediaInfo:
    """What ingest reports about a file (the MediaIngested fields)."""

    container: str
    duration_seconds: float
    size_bytes: int
    video: VideoInfo | None
    audio: AudioInfo | None

    @property
    def has_video(self) -> bool:
        return self.video is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def looks_like_media(path: Path) -> bool:
    """Whether the file starts with the signature of a container we know (or MPEG-TS/MP3 sync)."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if any(head[offset : offset + len(magic)] == magic for offset, magic in _SIGNATURES):
        return True
    return head[:1] == b"\x47" or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf1", b"\xff\xf9")


def probe(
    path: Path,
    *,
    max_bytes: int,
    max_duration_seconds: float,
    max_picture_pixels: int,
    deadline: float | None = None,
) -> MediaInfo:
    """Probe ``path``, or raise PermanentError with the reason it cannot be processed.

    The duration is measured, not believed: every packet is demuxed (not decoded, so
    six hours take seconds) and the media's length is how far its packets reach, so a
    container that declares one second and holds ten hours fails too_long, as soon as
    its packets pass ``max_duration_seconds``. A container that declares no duration
    (a live recording, MPEG-TS) is measured the same way.

    ``deadline`` (a ``time.monotonic()`` instant) is checked before opening and between
    demuxed packets: StageTimeout once it has passed, so a file whose packets never end
    cannot hold the handler.
    """
    remaining_seconds(deadline, f"probing {path.name}")
    size = path.stat().st_size
    if size == 0:
        raise PermanentError(Reason.EMPTY_MEDIA, "the file is empty (0 bytes)")
    if size > max_bytes:
        raise PermanentError(
            Reason.TOO_LARGE, f"the file has {size} bytes, more than the maximum of {max_bytes}"
        )
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if looks_like_media(path):
            raise PermanentError(
                Reason.CORRUPT_MEDIA, f"the media cannot be read: {exc.strerror}"
            ) from exc
        raise PermanentError(Reason.NOT_MEDIA, "the file is not a media file") from exc
    with container:
        info = _describe(container, size)
        if info.video is None and info.audio is None:
            raise PermanentError(
                Reason.NO_STREAMS, "the file has neither an audio nor a video stream"
            )
        if info.video is not None:
            check_picture(info.video.width, info.video.height, max_picture_pixels)
        if info.duration_seconds > max_duration_seconds:
            raise PermanentError(
                Reason.TOO_LONG,
                f"the media plays {info.duration_seconds:.1f} s, more than the maximum of"
                f" {max_duration_seconds:.0f} s",
            )
        played = _played_seconds(container, info.duration_seconds, max_duration_seconds, deadline)
    if played < _MIN_PLAYED_FRACTION * info.duration_seconds:
        raise PermanentError(
            Reason.CORRUPT_MEDIA,
            f"the media is truncated: it declares {info.duration_seconds:.1f} s but its data"
            f" ends at {played:.1f} s",
        )
    return replace(info, duration_seconds=_believed_seconds(info.duration_seconds, played))


def _believed_seconds(declared: float, played: float) -> float:
    """The media's length: the declared one (exact: it accounts for encoder padding)
    unless the packets reach clearly past it, or it is missing; then the measured one."""
    if declared > 0 and played <= declared + _OVERRUN_SECONDS:
        return declared
    return played


def check_picture(width: int, height: int, max_pixels: int) -> None:
    """PermanentError(picture_too_large) for a picture of more than ``max_pixels``: decoding
    one costs memory in proportion (1.5 bytes a pixel, several frames in flight)."""
    if width * height > max_pixels:
        raise PermanentError(
            Reason.PICTURE_TOO_LARGE,
            f"the video picture is {width}x{height} ({width * height} pixels), more than the"
            f" maximum of {max_pixels} pixels",
        )


def too_long(read_seconds: float, max_seconds: float, declared_seconds: float) -> PermanentError:
    """The too_long failure of media found, while reading it, to play past ``max_seconds``;
    it says what was declared (by the container, or by ingest to the later stages), since
    that is what the file's owner was told."""
    declared = f"{declared_seconds:.1f} s" if declared_seconds > 0 else "no duration"
    return PermanentError(
        Reason.TOO_LONG,
        f"the media plays longer than the maximum of {max_seconds:.0f} s (its data reaches"
        f" {read_seconds:.1f} s; {declared} declared)",
    )


def _describe(container: av.container.InputContainer, size: int) -> MediaInfo:
    """The container's format, duration and first audio and video streams."""
    video = audio = None
    if container.streams.video:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        video = VideoInfo(
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(rate),
        )
    if container.streams.audio:
        astream = container.streams.audio[0]
        audio = AudioInfo(
            codec=astream.codec_context.name,
            sample_rate=astream.codec_context.sample_rate,
            channels=astream.codec_context.layout.nb_channels,
        )
    duration = container.duration / av.time_base if container.duration else 0.0
    return MediaInfo(
        container=container.format.name,
        duration_seconds=duration,
        size_bytes=size,
        video=video,
        audio=audio,
    )


def _played_seconds(
    container: av.container.InputContainer,
    declared_seconds: float,
    max_seconds: float,
    deadline: float | None,
) -> float:
    """How far the file's packets reach: demuxing (no decoding) measures the media cheaply.

    The length is the later of the last packet's end and, per stream, the sum of its
    packets' durations (timestamps that stand still do not hide the data behind them).
    Raises too_long as soon as it passes ``max_seconds``.
    """
    streams = [s for s in (*container.streams.video[:1], *container.streams.audio[:1])]
    end = 0.0
    summed = dict.fromkeys(range(len(container.streams)), 0.0)
    try:
        for packet in container.demux(streams):
            remaining_seconds(deadline, "demuxing the media to find where it ends")
            if packet.time_base is None:
                continue
            summed[packet.stream.index] += float((packet.duration or 0) * packet.time_base)
            if packet.pts is not None:
                stop = (packet.pts + (packet.duration or 0)) * packet.time_base
                start_offset = packet.stream.start_time or 0
                end = max(end, float(stop - start_offset * packet.time_base))
            played = max(end, summed[packet.stream.index])
            if played > max_seconds:
                raise too_long(played, max_seconds, declared_seconds)
    except av.error.FFmpegError as exc:
        raise PermanentError(Reason.CORRUPT_MEDIA, f"the media is corrupt: {exc.strerror}") from exc
    return max(end, *summed.values())
