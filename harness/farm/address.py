"""A Ray head's address as users type it (HOST:PORT, ray://HOST:PORT, [::1]:6379), read without importing Ray."""

from __future__ import annotations

from urllib.parse import urlparse


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port), or None when ``address`` is not HOST:PORT with a port in 1-65535 ('garbage:::', '[::1')."""
    try:
        parsed = urlparse(f"//{address.removeprefix('ray://')}")
        host, port = parsed.hostname, parsed.port  # a malformed IPv6 host or port is a ValueError here
    except ValueError:
        return None
    return (host, port) if host and port else None
