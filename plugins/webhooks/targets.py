"""Safe webhook targets: no request to this machine, its private network or a cloud
metadata service (server-side request forgery).

A URL is checked when it is saved and again before every attempt, after DNS resolution;
the attempt then connects to the very address that was checked, so a DNS answer that
changes between the check and the connection (rebinding) cannot redirect it. Hosts in
``RAPPORT_WEBHOOK_ALLOWED_HOSTS`` skip the address check (tests, on-premise receivers).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from plugins.webhooks.config import WebhookSettings

SCHEMES = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2000


class UnsafeTarget(ValueError):
    """The URL may not be called; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str          # as written in the URL, lower case, IPv6 without brackets
    port: int
    address: str       # the checked IP address to connect to

    @property
    def connect_url(self) -> str:
        """The URL with the host replaced by the checked address."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return SplitResult(parts.scheme, f"{literal}:{self.port}", parts.path or "/",
                           parts.query, "").geturl()

    @property
    def host_header(self) -> str:
        literal = f"[{self.host}]" if ":" in self.host else self.host
        default = SCHEMES[self.scheme]
        return literal if self.port == default else f"{literal}:{self.port}"


def forbidden_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not connect to ``address``, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "a reserved address"
    if not address.is_global:
        return "a non-public address"
    return None


def parse(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a webhook URL, or ``UnsafeTarget``."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeTarget("Give the URL the webhooks are posted to.")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ord(c) < 33 for c in url):
        raise UnsafeTarget("The URL may not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"Not a URL: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeTarget("Use an http:// or https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("Credentials in the URL are not allowed; verify the signature "
                           "instead.")
    if parts.fragment:
        raise UnsafeTarget("The URL may not have a #fragment.")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeTarget("The URL has no host.")
    return scheme, host, port or SCHEMES[scheme]


def _addresses(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeTarget(f"The host {host} does not resolve ({exc}).") from None
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


def resolve(url: str, settings: WebhookSettings) -> Target:
    """Check ``url`` and pick the address to connect to; ``UnsafeTarget`` if refused.

    Every address the name resolves to must be public: one private answer among public
    ones is enough to refuse, since a later resolution could pick it.
    """
    scheme, host, port = parse(url)
    addresses = _addresses(host, port)
    if not addresses:
        raise UnsafeTarget(f"The host {host} does not resolve.")
    if settings.enforce_safe_targets and host not in settings.allowed_hosts:
        for text in addresses:
            reason = forbidden_reason(ipaddress.ip_address(text))
            if reason is not None:
                raise UnsafeTarget(
                    f"{host} resolves to {text}, {reason}: webhooks may not target it "
                    f"unless RAPPORT_WEBHOOK_ALLOWED_HOSTS lists {host}.")
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])
