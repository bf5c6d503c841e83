"""What /proc says about a process: its name, start time, sockets and memory.

Every function takes the /proc root first (tests pass a fake tree). New
connections get their addresses from the kernel (the socket's state change);
one opened before the collector started has none, and is looked up here by
its socket inode in the process's own network namespace.
"""

from __future__ import annotations

import ipaddress
import mmap
import os

from akto_collector.addresses import join_host_port


def read_stat(proc_root: str, pid: int) -> tuple[str, int, int]:
    """(comm, flags, start_time) from /proc/PID/stat; raises OSError."""
    with open(f"{proc_root}/{pid}/stat", "rb") as f:
        data = f.read()
    # comm may itself contain spaces and parentheses: it ends at the last ')'.
    lpar, rpar = data.find(b"("), data.rfind(b")")
    if lpar < 0 or rpar < 0:
        raise OSError(f"malformed {proc_root}/{pid}/stat")
    comm = os.fsdecode(data[lpar + 1 : rpar])
    fields = data[rpar + 2 :].split()  # fields[0] is field 3 (state)
    if len(fields) < 20:
        raise OSError(f"malformed {proc_root}/{pid}/stat")
    return comm, int(fields[6]), int(fields[19])


def process_start_time(proc_root: str, pid: int) -> int:
    """Start time of the process in clock ticks after boot (field 22 of
    /proc/PID/stat): with the pid, it names one process across pid reuse.
    Raises OSError when the process is gone or unreadable."""
    return read_stat(proc_root, pid)[2]


def process_comm(proc_root: str, pid: int) -> str:
    """The process's command name (/proc/PID/comm), "" if it cannot be read."""
    try:
        with open(f"{proc_root}/{pid}/comm", "rb") as f:
            return os.fsdecode(f.read().rstrip(b"\n"))
    except OSError:
        return ""


def fd_target(proc_root: str, pid: int, fd: int) -> str | None:
    """What a process's fd is (``socket:[inode]``, a path, ...), None when gone."""
    try:
        return os.readlink(f"{proc_root}/{pid}/fd/{fd}")
    except OSError:
        return None


def socket_addresses(proc_root: str, pid: int, fd: int) -> tuple[str, str] | None:
    """(local "ip:port", peer "ip:port") of a TCP socket fd, or None."""
    link = fd_target(proc_root, pid, fd)
    if link is None or not link.startswith("socket:["):
        return None
    inode = link[8:-1]
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open(f"{proc_root}/{pid}/net/{name}", "rb") as f:
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



def private_resident(proc_root: str, pid: int) -> int:
    """Resident bytes of the process that are neither file-backed nor shmem
    (/proc/PID/statm: resident less shared, as psutil's ``rss - shared``, read
    without psutil's Process: the memory guard asks every second, and building
    one cost more than the read); raises OSError when it is gone."""
    with open(f"{proc_root}/{pid}/statm", "rb") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * mmap.PAGESIZE


def bpf_memory(proc_root: str, pid: int) -> int:
    """Bytes the kernel charges for the BPF maps and programs this process
    holds (``memlock`` of each BPF fd in /proc/PID/fdinfo): the ring buffer and
    the tables, in the memory cgroup but in no process's RSS."""
    seen: dict[bytes, int] = {}  # an object may be open on several fds: each counted once
    try:
        fds = os.listdir(f"{proc_root}/{pid}/fdinfo")
    except OSError:
        return 0
    for fd in fds:
        try:
            with open(f"{proc_root}/{pid}/fdinfo/{fd}", "rb") as f:
                info = f.read(4096)
        except OSError:
            continue
        ident = memlock = None
        for line in info.splitlines():
            if line.startswith((b"map_id:", b"prog_id:")):
                ident = line.replace(b"\t", b"").replace(b" ", b"")
            elif line.startswith(b"memlock:"):
                memlock = int(line.split()[1])
        if ident is not None and memlock is not None:
            seen[ident] = memlock
    return sum(seen.values())
