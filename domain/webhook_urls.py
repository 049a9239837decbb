"""Which URLs a webhook may be sent to: http(s), and (unless allowed) only public addresses.

A callback URL comes from a client, so it must not make the API call into the network it
runs in (server-side request forgery): loopback, private, link-local, shared (CGNAT),
multicast and reserved addresses are refused, by the addresses the name resolves to, both
when the task is submitted and before each attempt. The attempt then connects to the
address that was checked (the name is not resolved a second time), so a DNS answer that
changes in between (rebinding) cannot move it elsewhere. `AUDIOFLOW_WEBHOOK_ALLOW_PRIVATE`
lifts the address rule (the embedded stack and the tests, whose receivers are local).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from core.errors import InvalidInputError

__all__ = ["MAX_URL_CHARS", "UnsafeUrlError", "check_url", "resolve_allowed"]

MAX_URL_CHARS = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrlError(InvalidInputError):
    """A webhook URL that may not be called (422 at submission; a failed delivery later)."""


def check_url(url: str) -> None:
    """The URL's form: http(s), a host, no credentials, no spaces or control characters."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeUrlError(f"callbackUrl is longer than {MAX_URL_CHARS} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise UnsafeUrlError("callbackUrl contains spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # a bad port raises here
    except ValueError as exc:
        raise UnsafeUrlError(f"callbackUrl is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrlError("callbackUrl must be an http or https URL")
    if not parts.hostname:
        raise UnsafeUrlError("callbackUrl has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrlError("callbackUrl must not carry credentials (user:password@)")


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (address.is_multicast or address.is_reserved)


def resolve_allowed(url: str, *, allow_private: bool) -> list[IPAddress]:
    """The addresses the URL's host resolves to, all of them allowed; UnsafeUrlError when
    the URL's form is wrong, its name does not resolve, or any address is not public (one
    bad address is enough: which one a connection would use is not ours to choose)."""
    check_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrlError(f"callbackUrl host {host!r} does not resolve: {exc}") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeUrlError(f"callbackUrl host {host!r} does not resolve")
    if not allow_private:
        refused = [str(a) for a in addresses if not _is_public(a)]
        if refused:
            raise UnsafeUrlError(
                f"callbackUrl host {host!r} resolves to a non-public address "
                f"({', '.join(refused)}): loopback, private and link-local receivers are "
                "refused unless AUDIOFLOW_WEBHOOK_ALLOW_PRIVATE=true"
            )
    return addresses
