"""What /proc says about a process's socket, for connections that predate us.

New connections get their addresses from the kernel (the socket's state
change); one opened before the collector started has none, and is looked up
here by its socket inode in the process's own network namespace.
"""

from __future__ import annotations

import ipaddress
import os


def process_comm(pid: int, proc: str = "/proc") -> str:
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            return f.read().strip().decode("utf-8", "replace")
    except OSError:
        return ""


def socket_addresses(pid: int, fd: int, proc: str = "/proc") -> tuple[str, str] | None:
    """(local "ip:port", peer "ip:port") of a TCP socket fd, or None."""
    try:
        link = os.readlink(f"{proc}/{pid}/fd/{fd}")
    except OSError:
        return None
    if not link.startswith("socket:["):
        return None
    inode = link[8:-1]
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open(f"{proc}/{pid}/net/{name}", "rb") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 9 and parts[9].decode() == inode:
                        return _endpoint(parts[1], v6), _endpoint(parts[2], v6)
        except OSError:
            continue
    return None


def _endpoint(field: bytes, v6: bool) -> str:
    hexaddr, hexport = field.decode().split(":")
    raw = bytes.fromhex(hexaddr)
    # /proc prints the address as host-order 32-bit words
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.IPv6Address(raw) if v6 else ipaddress.IPv4Address(raw)
    if v6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return join_host_port(str(ip), int(hexport, 16))


def join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
