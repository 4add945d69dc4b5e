"""The ``file`` field of a ``multipart/form-data`` upload, streamed chunk by chunk.

Browsers and form-based clients upload this way. The body is fed through
python-multipart's streaming parser as it arrives, and only the bytes of the first
``file`` field are passed on, so a multipart upload is never held whole in memory
either (Starlette's ``request.form()`` would spool the whole file first).
"""

from __future__ import annotations

from collections.abc import Callable

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.api_errors import ApiError
from vidinsight.errors import Reason

FILE_FIELD = b"file"


def _invalid(message: str) -> ApiError:
    return ApiError(Reason.INVALID_REQUEST, message)


class FileFieldReader:
    """Feed it the body's chunks; it hands the ``file`` field's bytes to ``sink``."""

    def __init__(self, content_type: str, sink: Callable[[bytes], None]) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise _invalid("multipart/form-data without a boundary")
        self._sink = sink
        self.found = False
        self._in_file = False
        self._part_is_file = False
        self._header_name = b""
        self._header_value = b""
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise _invalid(f"malformed multipart body: {exc}") from exc

    def finish(self) -> None:
        """End of body: the ``file`` field must have been there, complete."""
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise _invalid(f"malformed multipart body: {exc}") from exc
        if not self.found:
            raise _invalid("the multipart body has no complete 'file' field")

    def _part_begin(self) -> None:
        self._part_is_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            _, params = parse_options_header(self._header_value)
            self._part_is_file = params.get(b"name") == FILE_FIELD
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        self._in_file = self._part_is_file and not self.found

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._sink(data[start:end])

    def _part_end(self) -> None:
        if self._in_file:
            self.found = True
        self._in_file = False
