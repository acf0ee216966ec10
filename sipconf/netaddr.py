"""Addresses as SIP writes them (SPEC section 15).

One idea: which local address a message to or from a peer carries, and how an
address is spelled in a URI, a Via or SDP. Sockets stay in transport.py.
"""

from __future__ import annotations

import ipaddress
import socket

WILDCARDS = frozenset({"0.0.0.0", "::"})
_MAPPED_PREFIX = "::ffff:"


def is_wildcard(host: str) -> bool:
    """``0.0.0.0`` / ``::`` (in any spelling, e.g. ``0:0::0``)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def is_ipv6(host: str) -> bool:
    return ":" in host


def unmap(host: str) -> str:
    """``::ffff:192.0.2.1`` -> ``192.0.2.1``: on a dual-stack ``::`` socket IPv4
    peers appear v4-mapped, but SIP and SDP must name them as plain IPv4."""
    if host[:7].lower() == _MAPPED_PREFIX and "." in host:
        return host[7:]
    return host


def mapped(host: str) -> str:
    """The form a dual-stack IPv6 socket needs to reach an IPv4 ``host``."""
    return _MAPPED_PREFIX + host if "." in host and ":" not in host else host


def bracket(host: str) -> str:
    """A host as written in a URI or Via sent-by: IPv6 references in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def sdp_addrtype(host: str) -> str:
    return "IP6" if ":" in host else "IP4"


def route_source(peer_host: str) -> str | None:
    """The local address the kernel would send from to reach ``peer_host``.

    Used only for a request we start before any packet from that peer (a
    REGISTER to a provider): a connected UDP socket sends nothing, so this is a
    routing-table lookup. It is not used for answers: on a multi-homed host the
    route to a phone may leave by another interface than the one the phone sent
    to, and the phone expects the address it used (IP_PKTINFO tells that one).
    """
    family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((peer_host, 9))
            return unmap(probe.getsockname()[0])
    except OSError:
        return None
