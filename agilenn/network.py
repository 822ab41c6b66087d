"""Addresses: which hosts are loopback, shared by the cloud (may it serve plaintext?) and the device
(may it send a token without TLS?)."""

from __future__ import annotations

import ipaddress

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def address_host(address: str) -> str:
    """The host of `host:port`, `[v6]:port` or a bare host, without brackets."""
    address = address.strip()
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") == 1:
        return address.rsplit(":", 1)[0]
    return address  # a bare host, or a bare IPv6 address


def is_loopback_host(host: str) -> bool:
    """True for a host only this machine can reach (127.0.0.0/8, ::1, localhost). False for wildcards such
    as 0.0.0.0, "" and ::, which listen on every interface."""
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
