"""A loopback TCP proxy the fault suite puts between the workers and the broker.

It streams both directions chunk by chunk (nothing waits for a whole Kafka request), and
can make the network worse on demand: ``set_latency`` holds every chunk back for a while
(each chunk its own delay, so latency does not cut throughput), ``cut`` drops every open
connection at once and refuses new ones (the listening socket is closed) for a while,
then listens again on the same port. It runs an asyncio loop in a thread of its own, so
the harness drives it with plain calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

_CHUNK_BYTES = 65536
# Chunks read ahead of a slow writer per direction (at most this many x 64 KiB buffered).
_QUEUED_CHUNKS = 64
_CALL_TIMEOUT_SECONDS = 10.0
_REBIND_SECONDS = 0.1
# (when due, chunk) in arrival order; b"" is the end of the stream.
_Chunks = asyncio.Queue[tuple[float, bytes]]


class TcpProxy:
    """Forwards 127.0.0.1:``listen_port`` to ``target_host``:``target_port``.

    ``listen_port`` 0 picks a free port (read it from ``port``); the fault suite passes
    the port the broker advertises, so clients that learn the broker's address keep
    coming through here.
    """

    def __init__(self, listen_port: int, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.port = listen_port
        self.latency_seconds = 0.0
        self.connections_accepted = 0
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._reopening: asyncio.Task[None] | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def open_connections(self) -> int:
        return len(self._relays)

    @property
    def is_cut(self) -> bool:
        """Whether new connections are refused right now."""
        return self._listener is None

    def start(self) -> TcpProxy:
        """Listen (returns once the port accepts connections)."""
        self._thread.start()
        self._call(self._listen())
        return self

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk read from now on by ``seconds``, in each direction (0: none)."""
        self.latency_seconds = max(0.0, seconds)

    def cut(self, seconds: float) -> None:
        """Drop every open connection and refuse new ones for ``seconds`` (returns at once).

        A cut during a cut restarts the clock: the proxy listens ``seconds`` after the last.
        """
        self._call(self._cut(seconds))

    def stop(self) -> None:
        """Close every socket, stop the loop and join its thread."""
        self._call(self._close_everything())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` on the proxy's loop and wait for it (errors are raised here)."""
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_CALL_TIMEOUT_SECONDS)

    async def _listen(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), backlog=128)
        listener.setblocking(False)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._accepting = asyncio.get_running_loop().create_task(self._accept(listener))

    async def _listen_after(self, seconds: float) -> None:
        """Listen again once the cut is over (retrying while something else holds the port)."""
        await asyncio.sleep(seconds)
        while True:
            try:
                await self._listen()
                return
            except OSError as exc:
                log.warning("proxy port %d not free again yet: %s", self.port, exc)
                await asyncio.sleep(_REBIND_SECONDS)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(listener)
            self.connections_accepted += 1
            relay = loop.create_task(self._relay(client))
            self._relays.add(relay)
            relay.add_done_callback(self._relays.discard)

    async def _cut(self, seconds: float) -> None:
        self.cuts += 1
        await self._close_everything()
        self._reopening = asyncio.get_running_loop().create_task(self._listen_after(seconds))

    async def _close_everything(self) -> None:
        """Stop listening, reset every connection and wait for their relays to end."""
        tasks = [self._reopening, self._accepting, *self._relays]
        self._reopening = self._accepting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(task for task in tasks if task is not None), return_exceptions=True)

    async def _relay(self, client: socket.socket) -> None:
        """One client connection: connect to the target, relay, close both ends."""
        try:
            reader, writer = await asyncio.open_connection(sock=client)
        except BaseException:
            client.close()
            raise
        self._writers.add(writer)
        ends = [writer]
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            ends.append(up_writer)
            await self._both_ways(((reader, up_writer), (up_reader, writer)))
        except OSError:
            pass  # the target is down: the client sees its connection closed
        finally:
            for end in ends:
                self._writers.discard(end)
                end.close()  # flushes what is still buffered (a no-op after a cut's abort)

    async def _both_ways(
        self, directions: tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], ...]
    ) -> None:
        """Copy each (source, sink) until both have ended; a reset on either ends both."""
        try:
            async with asyncio.TaskGroup() as tasks:
                for source, sink in directions:
                    queue: _Chunks = asyncio.Queue(_QUEUED_CHUNKS)
                    tasks.create_task(self._read(source, queue))
                    tasks.create_task(self._deliver(queue, sink))
        except* OSError:
            pass  # one side reset: the caller closes both

    async def _read(self, source: asyncio.StreamReader, queue: _Chunks) -> None:
        """Queue each chunk with the time it is due (now + latency); b"" marks the end."""
        while True:
            chunk = await source.read(_CHUNK_BYTES)
            await queue.put((time.monotonic() + self.latency_seconds, chunk))
            if not chunk:
                return

    @staticmethod
    async def _deliver(queue: _Chunks, sink: asyncio.StreamWriter) -> None:
        """Write queued chunks when due; the end of the stream is passed on as a half-close."""
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not chunk:
                with contextlib.suppress(OSError):
                    sink.write_eof()
                return
            sink.write(chunk)
            await sink.drain()
