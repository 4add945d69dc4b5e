"""Fetching an ``http(s)://`` source with a size cap, a time cap and an SSRF guard.

Before every hop (the first request and each redirect) the host is resolved and
every address it resolves to must be public: loopback, private, link-local (cloud
metadata at 169.254.169.254), shared, reserved and multicast addresses are refused,
so a job cannot make a worker read internal services. Redirects are followed by
hand, so each target passes the same check. The request then goes to the checked
address itself (``pin``: the URL's host replaced by the address, with the Host header
and the TLS server name kept), so a DNS answer that changes between the check and the
connection (rebinding) cannot send it anywhere else.

Time: httpx's timeouts bound each socket read, not the request, so a server that sends
its headers one byte a second holds a call for ever. Requests here go through httpcore
(httpx's own engine) with a network backend that gives every connect, TLS handshake,
read and write only the time left before one instant (``bounded_pool``): connect,
headers and body together end by it, without a watchdog thread.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlparse, urlsplit, urlunsplit

import httpcore

from vidinsight.errors import PermanentError, Reason, StageTimeout, remaining_seconds

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# What httpcore raises when a connection fails or its peer breaks HTTP (timeouts apart).
TRANSPORT_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol)


@dataclass(frozen=True)
class Fetched:
    """What was written: its hash, its size and where it finally came from."""

    sha256: str
    size_bytes: int
    final_url: str


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (the test-only allowlist) as networks."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def address_allowed(address: IPAddress, allowed: Iterable[Network] = ()) -> bool:
    """Public unicast addresses only, unless an allowlisted network holds the address.

    An IPv6 address that carries an IPv4 address (mapped, compatible, translated,
    NAT64, 6to4, Teredo) reaches that IPv4 host through a translator or tunnel, so it
    is judged by what it carries: ``64:ff9b::7f00:1`` counts as global IPv6 but is
    127.0.0.1 behind a NAT64 gateway.
    """
    allowed = tuple(allowed)
    if any(address in network for network in allowed):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL_USE:
            return False  # the IPv4 address sits where the operator's prefix puts it
        carried = embedded_ipv4(address)
        if carried:
            return all(address_allowed(inner, allowed) for inner in carried)
    return address.is_global and not address.is_multicast


# IPv6 prefixes whose low 32 bits are an IPv4 address: IPv4-compatible (::/96,
# deprecated), IPv4-mapped (::ffff:0:0/96), IPv4-translated (::ffff:0:0:0/96, RFC 2765),
# NAT64's well-known prefix (64:ff9b::/96, RFC 6052).
LOW_32_BITS_IPV4 = tuple(
    ipaddress.IPv6Network(prefix)
    for prefix in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)
# NAT64's local-use prefix (RFC 8215): the operator picks a prefix of /32 to /96 inside
# it, and RFC 6052 puts the IPv4 address at bits that depend on that length, so what it
# carries cannot be read without knowing the translator: refused unless allowlisted.
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for (none for a plain IPv6 address).

    ``::`` and ``::1`` sit in ::/96 but are IPv6's own unspecified and loopback
    addresses, judged as such (neither is global).
    """
    if address in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")):
        return []
    if any(address in network for network in LOW_32_BITS_IPV4):
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    return []


def resolve_and_validate(url: str, allowed: Iterable[Network] = ()) -> list[IPAddress]:
    """Every address ``url``'s host resolves to, or PermanentError(source_forbidden)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise PermanentError(Reason.SOURCE_FORBIDDEN, f"only http(s) URLs can be fetched: {url}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        answers = socket.getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PermanentError(
            Reason.SOURCE_UNREACHABLE, f"cannot resolve {parsed.hostname}: {exc}"
        ) from exc
    addresses = [ipaddress.ip_address(str(answer[4][0]).split("%")[0]) for answer in answers]
    refused = [str(a) for a in addresses if not address_allowed(a, tuple(allowed))]
    if refused or not addresses:
        raise PermanentError(
            Reason.SOURCE_FORBIDDEN,
            f"{parsed.hostname} resolves to a non-public address ({', '.join(refused)})",
        )
    return addresses


@dataclass(frozen=True)
class Pinned:
    """A request aimed at the address the guard checked, not at whatever DNS says next."""

    url: str  # the URL with its host replaced by the checked address, port kept
    headers: dict[str, str]  # Host: the name the server expects
    extensions: dict[str, Any]  # sni_hostname: the name TLS verifies the certificate for


def pin(url: str, allowed: Iterable[Network] = ()) -> Pinned:
    """Resolve and check ``url``'s host (``resolve_and_validate``), then pin the first address."""
    address = resolve_and_validate(url, allowed)[0]
    parts = urlsplit(url)
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return Pinned(
        url=urlunsplit(parts._replace(netloc=netloc)),
        headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
        extensions={"sni_hostname": parts.hostname or ""},
    )


class _BoundedStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by ``until``."""

    def __init__(self, stream: httpcore.NetworkStream, until: float) -> None:
        self._stream = stream
        self._until = until

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clip(timeout, self._until, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clip(timeout, self._until, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clip(timeout, self._until, httpcore.ConnectTimeout)
        return _BoundedStream(
            self._stream.start_tls(ssl_context, server_hostname, timeout), self._until
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    """Plain sockets whose connect, and every operation after it, ends by ``until``."""

    def __init__(self, until: float) -> None:
        self._sockets = httpcore.SyncBackend()
        self._until = until

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clip(timeout, self._until, httpcore.ConnectTimeout)
        stream = self._sockets.connect_tcp(host, port, timeout, local_address, socket_options)
        return _BoundedStream(stream, self._until)


def _clip(timeout: float | None, until: float, expired: type[Exception]) -> float:
    """The smaller of an operation's own timeout and the time left; ``expired`` once none is."""
    left = until - time.monotonic()
    if left <= 0:
        raise expired("the time allowed for the request has run out")
    return left if timeout is None else min(timeout, left)


def bounded_pool(until: float) -> httpcore.ConnectionPool:
    """Connections whose whole exchange (connect, TLS, headers, body) ends by ``until``.

    Each socket operation gets only the time left, so a peer that drips bytes, or never
    stops sending, raises an ``httpcore.TimeoutException`` at ``until`` at the latest.
    """
    return httpcore.ConnectionPool(network_backend=_BoundedBackend(until))


def _header(response: httpcore.Response, name: str) -> str:
    """The value of the response header ``name`` (case-insensitive), or "" without one."""
    wanted = name.lower().encode()
    for key, value in response.headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return ""


def fetch(
    url: str,
    target: BinaryIO,
    *,
    max_bytes: int,
    timeout_seconds: float,
    connect_timeout_seconds: float,
    max_redirects: int,
    idle_timeout_seconds: float | None = None,
    allowed: Iterable[Network] = (),
    deadline: float | None = None,
) -> Fetched:
    """Stream ``url`` into ``target``, checking every hop; the caps are permanent errors.

    The whole download, redirects included, ends by ``timeout_seconds`` from now (a
    permanent source_unreachable: the source is too slow) or by ``deadline`` (a
    ``time.monotonic()`` instant: StageTimeout, the handler ran out of time), whichever
    comes first. A source that sends nothing for ``idle_timeout_seconds`` is unreachable
    at once: waiting for the deadline would hold the partition and then retry the same
    silence as a timeout.
    """
    allowed = tuple(allowed)
    remaining_seconds(deadline, f"fetching {url}")
    cap = time.monotonic() + timeout_seconds
    until = cap if deadline is None else min(cap, deadline)
    timeouts = {"timeout": {"connect": connect_timeout_seconds, "read": idle_timeout_seconds}}
    with bounded_pool(until) as pool:
        for _ in range(max_redirects + 1):
            pinned = pin(url, allowed)
            try:
                with pool.stream(
                    "GET",
                    pinned.url,
                    headers=list(pinned.headers.items()),
                    extensions={**pinned.extensions, **timeouts},
                ) as response:
                    if response.status in REDIRECT_STATUSES:
                        url = urljoin(url, _header(response, "location"))
                        continue
                    _check_status(url, response.status)
                    return _copy(response, target, url, max_bytes)
            except httpcore.TimeoutException as exc:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise StageTimeout(f"fetching {url}: deadline passed") from exc
                if now < cap and isinstance(exc, httpcore.ReadTimeout):
                    raise PermanentError(
                        Reason.SOURCE_UNREACHABLE,
                        f"{url} sent nothing for {idle_timeout_seconds:.0f} s",
                    ) from exc
                raise PermanentError(
                    Reason.SOURCE_UNREACHABLE, f"{url} timed out after {timeout_seconds:.0f} s"
                ) from exc
            except TRANSPORT_ERRORS as exc:
                raise PermanentError(Reason.SOURCE_UNREACHABLE, f"{url}: {exc}") from exc
    raise PermanentError(Reason.SOURCE_UNREACHABLE, f"more than {max_redirects} redirects")


def _check_status(url: str, status: int) -> None:
    """Any error answer is permanent: the source is the customer's server, not our
    infrastructure, and retrying it forever would block the partition behind it (the
    dead letter can be replayed once the customer's server is back)."""
    if status >= 400:
        raise PermanentError(Reason.SOURCE_UNREACHABLE, f"{url} answered HTTP {status}")


def _copy(response: httpcore.Response, target: BinaryIO, url: str, max_bytes: int) -> Fetched:
    """Copy the body with its hash, refusing it once it passes the size cap (the time cap
    is the pool's: a read past it raises)."""
    declared = int(_header(response, "content-length") or 0)
    if declared > max_bytes:
        raise PermanentError(
            Reason.TOO_LARGE, f"{url} declares {declared} bytes, more than the maximum {max_bytes}"
        )
    digest = hashlib.sha256()
    size = 0
    for block in response.iter_stream():
        size += len(block)
        if size > max_bytes:
            raise PermanentError(
                Reason.TOO_LARGE, f"{url} sent more than the maximum of {max_bytes} bytes"
            )
        digest.update(block)
        target.write(block)
    return Fetched(sha256=digest.hexdigest(), size_bytes=size, final_url=url)
