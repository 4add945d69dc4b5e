"""Fetching an ``http(s)://`` source with a size cap, a time cap and an SSRF guard.

Before every hop (the first request and each redirect) the host is resolved and
every address it resolves to must be public: loopback, private, link-local (cloud
metadata at 169.254.169.254), shared, reserved and multicast addresses are refused,
so a job cannot make a worker read internal services. Redirects are followed by
hand, so each target passes the same check. The request then goes to the checked
address itself (``pin``: the URL's host replaced by the address, with the Host header
and the TLS server name kept), so a DNS answer that changes between the check and the
connection (rebinding) cannot send it anywhere else.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlparse, urlsplit, urlunsplit

import httpx

from vidinsight.errors import PermanentError, Reason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


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
    """Public unicast addresses only, unless an allowlisted network holds the address."""
    if any(address in network for network in allowed):
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address_allowed(address.ipv4_mapped, allowed)
    return address.is_global and not address.is_multicast


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


def fetch(
    url: str,
    target: BinaryIO,
    *,
    max_bytes: int,
    timeout_seconds: float,
    connect_timeout_seconds: float,
    max_redirects: int,
    allowed: Iterable[Network] = (),
) -> Fetched:
    """Stream ``url`` into ``target``, checking every hop; the caps are permanent errors."""
    allowed = tuple(allowed)
    deadline = time.monotonic() + timeout_seconds
    timeout = httpx.Timeout(timeout_seconds, connect=connect_timeout_seconds)
    with httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout) as client:
        for _ in range(max_redirects + 1):
            pinned = pin(url, allowed)
            try:
                with client.stream(
                    "GET",
                    pinned.url,
                    headers=pinned.headers,
                    extensions=pinned.extensions,
                ) as response:
                    if response.status_code in REDIRECT_STATUSES:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    _check_status(url, response.status_code)
                    return _copy(response, target, url, max_bytes, deadline)
            except httpx.TimeoutException as exc:
                raise PermanentError(
                    Reason.SOURCE_UNREACHABLE, f"{url} timed out after {timeout_seconds:.0f} s"
                ) from exc
            except httpx.TransportError as exc:
                raise PermanentError(Reason.SOURCE_UNREACHABLE, f"{url}: {exc}") from exc
    raise PermanentError(Reason.SOURCE_UNREACHABLE, f"more than {max_redirects} redirects")


def _check_status(url: str, status: int) -> None:
    """Any error answer is permanent: the source is the customer's server, not our
    infrastructure, and retrying it forever would block the partition behind it (the
    dead letter can be replayed once the customer's server is back)."""
    if status >= 400:
        raise PermanentError(Reason.SOURCE_UNREACHABLE, f"{url} answered HTTP {status}")


def _copy(
    response: httpx.Response, target: BinaryIO, url: str, max_bytes: int, deadline: float
) -> Fetched:
    """Copy the body with its hash, refusing it once it passes the size or time cap."""
    declared = int(response.headers.get("content-length") or 0)
    if declared > max_bytes:
        raise PermanentError(
            Reason.TOO_LARGE, f"{url} declares {declared} bytes, more than the maximum {max_bytes}"
        )
    digest = hashlib.sha256()
    size = 0
    for block in response.iter_bytes():
        size += len(block)
        if size > max_bytes:
            raise PermanentError(
                Reason.TOO_LARGE, f"{url} sent more than the maximum of {max_bytes} bytes"
            )
        if time.monotonic() > deadline:
            raise PermanentError(Reason.SOURCE_UNREACHABLE, f"{url} took longer than the time cap")
        digest.update(block)
        target.write(block)
    return Fetched(sha256=digest.hexdigest(), size_bytes=size, final_url=url)
