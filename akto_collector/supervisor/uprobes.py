"""TLS uprobes: scanner results turned into attached probes, in a thread of their own.

The scanner reads ELF files (node's is ~100 MB), which must never stall the
ring buffer drain, so scans run in the ``scanner`` thread: at start (before
``ready``, so what runs then is covered when the collector says so), for
each exec (at +0, +1 and +3 s: libraries are often dlopen'ed after exec),
and every ``UPROBE_POLL_INTERVAL``. Uprobes are attached once per file
(device, inode): a uprobe on a file covers every process that maps it. A
failed attach is logged with its reason and retried on the next scan. With
``PROBE_ALL_PID=false`` the kernel lets through only the pids the scanner
allowed (processes in containers).

``stop()`` ends and joins the thread, so nothing attaches while the probes
are being closed.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter

from akto_collector.kernel.errors import ProbeError
from akto_collector.procfs import process_comm
from akto_collector.supervisor.scanner import ProcessScanner, system_tls_libraries

RESCAN_AFTER_EXEC = (0.0, 1.0, 3.0)  # libraries are often dlopen'ed after exec
_FULL = None  # a scan request for every process


class UprobeManager:
    """Owns the scanner and the scan thread; attaches through ``probes``."""

    def __init__(self, settings, probes, log, counters: Counter, ignore_pids, scanner=None) -> None:
        self.settings = settings
        self.probes = probes
        self.log = log
        self.counters = counters
        self.scanner = scanner if scanner is not None else ProcessScanner(
            proc_root="/proc", probe_all_pid=settings.probe_all_pid, ignore_pids=frozenset(ignore_pids))
        self._requests: queue.Queue = queue.Queue()
        self._covered: dict[tuple[int, int], set[int]] = {}  # attached file -> pids seen mapping it
        self.processes_covered = 0  # pids mapping a probed file, as of the latest scan (read by the loop)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # held while attaching: stop() waits for it

    # -- the supervisor's loop calls these (cheap, never blocking) ----------------

    def start(self) -> None:
        """The first scan, here and now; then the thread takes over."""
        self.scan(_FULL)
        if self.settings.probe_all_pid:
            self.attach(self.scanner.scan_files(system_tls_libraries()))
        self._thread = threading.Thread(target=self._run, name="scanner", daemon=True)
        self._thread.start()

    def on_exec(self, pid: int) -> None:
        now = time.monotonic()
        for delay in RESCAN_AFTER_EXEC:
            self._requests.put((now + delay, pid))

    def rescan_all(self) -> None:
        self._requests.put((time.monotonic(), _FULL))

    def stop(self, timeout: float = 5.0) -> None:
        """End the scan thread and wait for it: no attach can race a close."""
        self._stopping.set()
        self._requests.put((0.0, _FULL))
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            self.probes = None

    def ignore(self, pid: int) -> None:
        """A new process of the collector's own (a replaced worker): never scanned."""
        self.scanner.ignore_pids = frozenset(self.scanner.ignore_pids | {pid})

    @property
    def attached(self) -> int:
        probes = self.probes
        return len(probes.uprobes) if probes is not None else 0

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[tuple[float, int | None]] = []
        while not self._stopping.is_set():
            timeout = max(0.0, min(t for t, _ in pending) - time.monotonic()) if pending else 1.0
            try:
                pending.append(self._requests.get(timeout=timeout))
            except queue.Empty:
                pass
            if self._stopping.is_set():
                return
            now = time.monotonic()
            due = [p for p in pending if p[0] <= now]
            if not due:
                continue
            pending = [p for p in pending if p[0] > now]
            full = any(pid is _FULL for _, pid in due)
            try:
                self.scan(_FULL if full else sorted({pid for _, pid in due}))
            except Exception as exc:  # noqa: BLE001 (the scanner thread must survive anything)
                self.counters["uprobe.scan_failed"] += 1
                self.log.error("scan_failed", error=str(exc))

    def scan(self, pids) -> None:
        """Scan every process (``pids`` None) or those given, and attach what was found."""
        if self.probes is None:
            return
        self.attach(self.scanner.scan(pids=pids))

    def attach(self, result) -> None:
        with self._lock:
            probes = self.probes
            if probes is None or self._stopping.is_set():
                return
            for key, lib in result.libraries.items():
                if not self.settings.probe_all_pid:
                    for pid in lib.pids:
                        probes.allow_tls_pid(pid)
                if lib.go is not None:
                    for pid in lib.pids:  # each process of the executable learns how to read its fd
                        probes.set_go_layout(pid, lib.go.fd_layout)
                if key in probes.uprobes:
                    continue
                try:
                    if lib.go is not None:
                        attached = probes.attach_go(key, lib.path, lib.go)
                    else:
                        attached = probes.attach_tls(key, lib.path, lib.kind, lib.symbols)
                except ProbeError as exc:
                    self.counters["uprobe.attach_failed"] += 1
                    self.log.warning("uprobe_attach_failed", library=lib.path, kind=lib.kind,
                                     pids=sorted(lib.pids)[:10], error=str(exc), retry="next scan")
                    continue
                comms = sorted({process_comm("/proc", p) for p in list(lib.pids)[:5]})
                go = {} if lib.go is None else {
                    "stripped": lib.go.stripped, "pie": lib.go.pie, "functions_found_by": lib.go.how_found,
                    "fd_layout": lib.go.fd_layout_source, "rets": [len(f.rets) for f in lib.go.functions]}
                self.log.info("uprobe_attached", library=lib.path, kind=lib.kind, version=lib.version,
                              symbols=attached, pids=sorted(lib.pids)[:10], comm=comms, **go)
            for key, lib in result.libraries.items():
                if key in probes.uprobes and lib.pids:
                    self._covered.setdefault(key, set()).update(lib.pids)
            alive = {pid for pids in self._covered.values() for pid in pids if os.path.exists(f"/proc/{pid}")}
            for pids in self._covered.values():
                pids &= alive
            self.processes_covered = len(alive)
        for u in result.unsupported:
            self.log.warning("tls_not_capturable", pid=u.pid, comm=u.comm, reason=u.reason)
        for e in result.errors:
            self.log.debug("scan_pid_failed", pid=e.pid, reason=e.reason, retry="next scan")
