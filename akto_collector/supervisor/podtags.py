"""Each process's ``tag`` (akto_collector/tags.py), known in the supervisor, sent to the workers.

The router asks for a process's tag the first time one of its connection
records other than data passes (an accept, a connect, the first data of a
connection: its OPEN/ADDR record, which also carries its comm); ``scan()``
asks for every process alive at start, whose connections may predate the
collector and come without one. A lookup reads /proc (``podmeta``) once per
process and is kept, with the process's start time, until the process exits
(the kernel's EXIT record, ``forget``). ``sweep()`` is the backstop for an
EXIT lost with a full ring buffer: it drops the processes that are gone and
looks again at a pid that now names another process (another start time,
``tags.pid_reused``).

A tag that is more than the fixed tags becomes a ``KIND_TAGS`` record for
every worker; the others cost the workers nothing (they default to the fixed
tags). When the Kubernetes API says something new about a pod (``refresh``:
labels, its name, its containers' names), the tags of its processes are
made again and sent again. Everything here runs in the supervisor's loop
thread; the API watch (``podwatch``) only hands over the UIDs of pods that changed.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import NamedTuple

from akto_collector import tags
from akto_collector.procfs import process_start_time
from akto_collector.supervisor import podmeta


class _Known(NamedTuple):
    start: int | None  # None: gone before it could be looked up
    pod: podmeta.PodProcess | None
    tag: str


class PodTags:
    """pid -> the tag of its messages. ``pods`` (a ``podwatch.PodWatch``, or
    None without the API) answers ``pod(uid)`` with what the API says of a pod."""

    def __init__(self, inject: tuple[tuple[str, str], ...], counters: Counter, pods=None,
                 proc_root: str = "/proc", log=None) -> None:
        self.inject = inject
        self.base = tags.base_tag(inject)
        self.counters = counters
        self.log = log
        self.pods = pods
        self.proc_root = proc_root
        self.known: dict[int, _Known] = {}  # the router reads it: a pid in it needs no lookup
        self._by_pod: dict[str, set[int]] = {}  # pod UID -> its known pids
        self._host_net: str | None = None

    # -- the router's question ----------------------------------------------------

    def lookup(self, pid: int) -> bytes | None:
        """Look ``pid`` up and keep it; the record for the workers when its
        tag is more than the fixed tags."""
        known = self._read(pid)
        self._keep(pid, known)
        return tags.tags_record(pid, known.tag) if known.tag != self.base else None

    def forget(self, pid: int) -> None:
        """The process exited (the workers forget it on the same EXIT record)."""
        known = self.known.pop(pid, None)
        if known is not None and known.pod is not None:
            pids = self._by_pod.get(known.pod.uid)
            if pids is not None:
                pids.discard(pid)
                if not pids:
                    del self._by_pod[known.pod.uid]

    # -- the loop's periodic work --------------------------------------------------

    def scan(self) -> None:
        """Look up every process alive now (at start: their connections may predate us)."""
        self._host_net = podmeta.host_net_namespace(self.proc_root)
        for pid in _pids(self.proc_root):
            if pid not in self.known:
                self._keep(pid, self._read(pid, at_scan=True))

    def records(self) -> list[bytes]:
        """Every tag that is more than the fixed tags: what a new worker is told first."""
        return [tags.tags_record(pid, k.tag) for pid, k in self.known.items() if k.tag != self.base]

    def refresh(self, uids) -> list[bytes]:
        """The pods ``uids`` changed in the API: their processes' new tags, for the workers."""
        out = []
        for uid in uids:
            for pid in list(self._by_pod.get(uid, ())):
                known = self.known[pid]
                tag = self._tag(known.pod)
                if tag != known.tag:
                    self.known[pid] = known._replace(tag=tag)
                    out.append(tags.tags_record(pid, tag if tag != self.base else None))
        return out

    def sweep(self) -> list[bytes]:
        """Forget processes that are gone, look again at pids reused by another
        process; the records that correct the workers."""
        alive = set(_pids(self.proc_root))
        out = []
        for pid, known in list(self.known.items()):
            try:
                start = process_start_time(self.proc_root, pid) if pid in alive else None
            except OSError:
                start = None
            if start is not None and start == known.start:
                continue
            self.forget(pid)
            record = None
            if start is not None:  # the pid names another process now
                self.counters["tags.pid_reused"] += 1
                record = self.lookup(pid)
            if record is None and known.tag != self.base:
                record = tags.tags_record(pid, None)
            if record is not None:
                out.append(record)
        return out

    # -- lookups -------------------------------------------------------------------

    def _read(self, pid: int, at_scan: bool = False) -> _Known:
        if self._host_net is None:
            self._host_net = podmeta.host_net_namespace(self.proc_root)
        try:
            start = process_start_time(self.proc_root, pid)
            cgroup = podmeta.parse_cgroup(podmeta.read_cgroup(self.proc_root, pid))
            if cgroup is None:
                return _Known(start, None, self.base)
            pod = podmeta.pod_process(self.proc_root, pid, cgroup, self._host_net)
            tag = self._tag(pod)
        except OSError:
            if not at_scan:  # at start, a process ending meanwhile had no traffic of ours yet
                # Its messages (already in flight) carry the fixed tags only.
                self.counters["tags.process_gone"] += 1
            return _Known(None, None, self.base)
        except Exception as exc:  # noqa: BLE001 (the router asks in the drain: nothing may stop it)
            self.counters["tags.lookup_failed"] += 1
            if self.log is not None:
                self.log.error("tag_lookup_failed", pid=pid, error=repr(exc))
            return _Known(None, None, self.base)
        self.counters["tags.pod_processes"] += 1
        return _Known(start, pod, tag)

    def _keep(self, pid: int, known: _Known) -> None:
        self.known[pid] = known
        if known.pod is not None:
            self._by_pod.setdefault(known.pod.uid, set()).add(pid)

    def _tag(self, pod: podmeta.PodProcess | None) -> str:
        if pod is None:
            return self.base
        found = {tags.POD_UID: pod.uid}
        api = self.pods.pod(pod.uid) if self.pods is not None else None
        name = api.name if api is not None else pod.hostname
        namespace = api.namespace if api is not None else pod.namespace
        if name:
            found[tags.POD] = name
        if namespace:
            found[tags.NAMESPACE] = namespace
        if pod.container_id:
            found[tags.CONTAINER_ID] = pod.container_id
            container = api.containers.get(pod.container_id) if api is not None else None
            if container:
                found[tags.CONTAINER] = container
        return tags.tag_string(self.inject, api.labels if api is not None else None, found)


def _pids(proc_root: str):
    try:
        names = os.listdir(proc_root)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)
