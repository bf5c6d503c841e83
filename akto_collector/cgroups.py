"""The collector's own cgroup: its CPU quota, how often it was throttled, and
the memory the kernel charges to it (what `kubectl top` shows).

cgroup v2 (one hierarchy: ``cpu.max``, ``cpu.stat``, ``memory.current``,
``memory.stat``) and v1 (a hierarchy per controller: ``cpu.cfs_quota_us``
and ``cpu.cfs_period_us``, ``cpu.stat``, ``memory.usage_in_bytes``). In a
container the cgroup namespace usually makes the own cgroup the root of
``/sys/fs/cgroup``; on a host it is the path ``/proc/self/cgroup`` names.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def own_dirs(controller: str, proc_cgroup: str = "/proc/self/cgroup", root: Path = ROOT) -> list[Path]:
    """Directories holding ``controller``'s files for this process, nearest first
    (v1: the controller's hierarchy; v2: the unified one)."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        names = controllers.split(",") if controllers else []
        if controller in names:  # v1
            base = next((root / d for d in (controllers, controller) if (root / d).is_dir()), None)
        elif not controllers:  # v2: the root itself, or beside v1 hierarchies (hybrid)
            base = next((d for d in (root, root / "unified") if (d / "cgroup.controllers").exists()), None)
        else:
            continue
        if base is None:
            continue
        rel = path.lstrip("/")
        # Inside a cgroup namespace the path is "/" and the root is ours.
        for d in (base / rel, base):
            if d.is_dir() and d not in found:
                found.append(d)
    return found


def cpu_quota(dirs: list[Path]) -> float | None:
    """The CPU quota in cores (``limits.cpu: 500m`` -> 0.5), None when unlimited."""
    for d in dirs:
        try:
            text = (d / "cpu.max").read_text().split()
            if text and text[0] != "max":
                return int(text[0]) / int(text[1])
            if text:
                return None
        except (OSError, ValueError, IndexError):
            pass
        try:
            quota = int((d / "cpu.cfs_quota_us").read_text())
            period = int((d / "cpu.cfs_period_us").read_text())
            return quota / period if quota > 0 and period > 0 else None
        except (OSError, ValueError):
            continue
    return None


def throttled_periods(dirs: list[Path]) -> int | None:
    """``nr_throttled`` of ``cpu.stat``: periods in which the quota ran out."""
    for d in dirs:
        try:
            for line in (d / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "nr_throttled":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def working_set(dirs: list[Path]) -> int | None:
    """Bytes charged to the cgroup minus its inactive page cache: the kubelet's
    working set, what `kubectl top` shows and what the OOM limit is measured on.
    It includes the BPF maps and the ring buffer (charged to the cgroup of the
    process that created them, memcg accounting since 5.11)."""
    for d in dirs:
        usage = None
        for name in ("memory.current", "memory.usage_in_bytes"):
            try:
                usage = int((d / name).read_text())
                break
            except (OSError, ValueError):
                continue
        if usage is None:
            continue
        inactive = 0
        try:
            for line in (d / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key in ("inactive_file", "total_inactive_file"):
                    inactive = int(value)
                    break
        except (OSError, ValueError):
            pass
        return max(0, usage - inactive)
    return None


def holds_only(dirs: list[Path], pids: set[int], more=None) -> bool:
    """Whether the nearest cgroup holds no process but these: only then is
    its charge the collector's own (a pod's container, a systemd service),
    not a host's or a shared slice's. ``more(others)``: whether the few
    others found are ours too, asked only then (finding a process's
    descendants reads the stat file of every process on the host)."""
    for d in dirs:
        try:
            procs = {int(x) for x in (d / "cgroup.procs").read_text().split()}
        except (OSError, ValueError):
            continue
        others = procs - pids
        if others:
            return len(others) <= _HELPERS and more is not None and more(frozenset(others))
        return bool(procs)
    return False


_HELPERS = 4  # more processes than ours than this: a shared cgroup, not ours plus a helper or two
