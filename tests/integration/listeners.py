"""What a set of processes listens on, found by process rather than by expected port."""

from __future__ import annotations

import ipaddress

import psutil

LOOPBACK = {"127.0.0.1", "::1"}


def listeners(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket of these processes; an
    IPv4-mapped IPv6 address is given as the IPv4 address it maps."""
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            address = conn.laddr.ip
            mapped = ipaddress.ip_address(address.split("%")[0])
            if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped:
                address = str(mapped.ipv4_mapped)
            out.append((conn.pid, address, conn.laddr.port))
    return out


def exposed(pids: set[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listener of these processes beyond loopback."""
    return [
        (psutil.Process(pid).name(), address, port) for pid, address, port in listeners(pids) if address not in LOOPBACK
    ]
