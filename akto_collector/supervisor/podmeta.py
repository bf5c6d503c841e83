"""Which Kubernetes pod a process is in, from what /proc says about it (no API).

- ``/proc/PID/cgroup`` names the pod's UID and the container's id: the
  kubelet makes one cgroup per pod and the runtime one per container below
  it. Both drivers and every QoS class are recognised, on cgroup v1 and v2,
  wherever the kubepods tree sits (a collector in a cgroup namespace of its
  own sees the paths relative to its own cgroup, ``/../../kubepods-...``):

    systemd   .../kubepods-burstable-pod<uid, "_" for "-">.slice/cri-containerd-<id>.scope
              (``docker-<id>.scope``, ``crio-<id>.scope``; guaranteed pods: ``kubepods-pod<uid>.slice``)
    cgroupfs  .../kubepods/burstable/pod<uid>/<id>  (guaranteed pods: ``kubepods/pod<uid>/<id>``)

- The service-account volume the kubelet mounts into the container names
  the pod's namespace: ``/var/run/secrets/kubernetes.io/serviceaccount/namespace``,
  read inside the process's own root (``/proc/PID/root``) with the kernel
  resolving links there (``openat2`` with ``RESOLVE_IN_ROOT``): images where
  ``/var/run`` links to ``/run`` are common, and an absolute link followed
  from outside would name the collector's own file. Pods that do not mount a
  service account have no such file.
- ``HOSTNAME`` in the process's environment is the pod's name for a normal
  pod (its ``spec.hostname`` when set), but the node's name in a pod on the
  host's network (``hostNetwork: true``): it is taken as the pod's name only
  for a process in a pod's cgroup and not in the host's network namespace
  (``host_net_namespace``: init's, or, where init's cannot be read, the
  collector's own, which is the host's in a ``hostNetwork`` DaemonSet and on a bare host).

Every function takes the /proc root first (tests pass a fake tree).
"""

from __future__ import annotations

import ctypes
import os
import re
from typing import NamedTuple

SERVICE_ACCOUNT_NAMESPACE = "var/run/secrets/kubernetes.io/serviceaccount/namespace"
_ENVIRON_LIMIT = 1 << 20  # an environment larger than this is not read past it

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD_SEGMENT = re.compile(rf"(?:^|-)pod({_UID})(?:\.slice)?$")
# The runtime's prefix (systemd driver) or none (cgroupfs driver). "crio-conmon-<id>"
# is cri-o's monitor process, not the container: it has no id here.
_CONTAINER_SEGMENT = re.compile(r"^(?:(?:cri-containerd|containerd|docker|crio|cri-o)-)?([0-9a-f]{64})(?:\.scope)?$")


class CgroupPod(NamedTuple):
    """A pod's UID (with dashes) and, for a process in one of its containers, the container's id."""

    uid: str
    container_id: str | None


class PodProcess(NamedTuple):
    """What /proc says about the pod of one process."""

    uid: str
    container_id: str | None
    namespace: str | None  # from the service-account volume
    hostname: str | None  # HOSTNAME, only where it names the pod (see the module's docstring)


def parse_cgroup(text: str) -> CgroupPod | None:
    """The pod of a process from its /proc/PID/cgroup, None when in none.

    Each line is ``hierarchy:controllers:path`` (v1) or ``0::path`` (v2); the
    first path with a pod segment decides (every hierarchy names the same pod).
    """
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if "pod" not in path:
            continue
        segments = path.split("/")
        for i, segment in enumerate(segments):
            m = _POD_SEGMENT.search(segment)
            if m is None:
                continue
            uid = m.group(1).replace("_", "-")
            container = None
            if i + 1 < len(segments):
                c = _CONTAINER_SEGMENT.match(segments[i + 1])
                if c is not None:
                    container = c.group(1)
            return CgroupPod(uid, container)
    return None


def read_cgroup(proc_root: str, pid: int) -> str:
    """/proc/PID/cgroup; raises OSError when the process is gone."""
    with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
        return f.read()


def net_namespace(proc_root: str, pid: int | str) -> str | None:
    """The process's network namespace ("net:[4026531840]"), None when unreadable."""
    try:
        return os.readlink(f"{proc_root}/{pid}/ns/net")
    except OSError:
        return None


def host_net_namespace(proc_root: str) -> str | None:
    """The host's network namespace: init's (pid 1), else this process's own."""
    return net_namespace(proc_root, 1) or net_namespace(proc_root, "self")


def environ_value(proc_root: str, pid: int, name: str) -> str | None:
    """One variable of the environment the process was started with, None when absent or unreadable."""
    try:
        with open(f"{proc_root}/{pid}/environ", "rb") as f:
            data = f.read(_ENVIRON_LIMIT)
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode("utf-8", "replace")
    return None


def read_in_root(root: str, path: str, limit: int = 4096) -> bytes:
    """A file read as if ``root`` were ``/``: ``..`` and absolute links stay
    inside it (openat2 with RESOLVE_IN_ROOT, Linux 5.6+). Raises OSError."""
    dirfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = _OpenHow(os.O_RDONLY | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT)
        fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), f"{root}/{path}")
    finally:
        os.close(dirfd)
    with os.fdopen(fd, "rb") as f:
        return f.read(limit)


def pod_process(proc_root: str, pid: int, cgroup: CgroupPod, host_net: str | None) -> PodProcess:
    """The rest of what /proc says about a process ``parse_cgroup`` placed in a pod."""
    try:
        namespace = read_in_root(f"{proc_root}/{pid}/root", SERVICE_ACCOUNT_NAMESPACE, 256).decode().strip() or None
    except (OSError, UnicodeDecodeError):
        namespace = None
    hostname = None
    net = net_namespace(proc_root, pid)
    if net is not None and host_net is not None and net != host_net:
        hostname = environ_value(proc_root, pid, "HOSTNAME") or None
    return PodProcess(cgroup.uid, cgroup.container_id, namespace, hostname)


# openat2(2): the same number on every architecture (syscalls added since 5.1 share one table).
_SYS_OPENAT2 = 437
_RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
