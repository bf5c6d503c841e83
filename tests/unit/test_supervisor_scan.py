"""The uprobe manager's handling of scan results: a failed attach is logged with
its reason and retried on the next scan, never forgotten."""

import types
from collections import Counter

import structlog
from structlog.testing import capture_logs

from akto_collector.kernel.errors import ProbeError
from akto_collector.supervisor.scanner import ScanResult, TlsLibrary, Unsupported
from akto_collector.supervisor.uprobes import UprobeManager


class FakeProbes:
    def __init__(self, failures):
        self.failures = failures
        self.uprobes = {}
        self.allowed = set()

    def attach_tls(self, key, path, kind, symbols):
        if self.failures:
            self.failures -= 1
            raise ProbeError("could not attach uprobe: No such file or directory")
        self.uprobes[key] = list(symbols)
        return list(symbols)

    def allow_tls_pid(self, pid):
        self.allowed.add(pid)


class FakeScanner:
    def scan(self, pids=None):
        lib = TlsLibrary(path="/proc/42/root/usr/lib/libssl.so.3", kind="openssl", version="3",
                         symbols=("SSL_read", "SSL_write"), dev=1, ino=2, pids={42})
        return ScanResult(libraries={(1, 2): lib}, unsupported=[Unsupported(7, "java", "java: not captured")])


def make(failures, probe_all_pid=True):
    return UprobeManager(types.SimpleNamespace(probe_all_pid=probe_all_pid), FakeProbes(failures),
                         structlog.get_logger(), Counter(), ignore_pids=(), scanner=FakeScanner())


def test_failed_attach_is_logged_and_retried():
    s = make(failures=1)
    with capture_logs() as logs:
        s.scan(None)
        s.scan(None)
    events = [e["event"] for e in logs]
    assert events.count("uprobe_attach_failed") == 1
    failed = next(e for e in logs if e["event"] == "uprobe_attach_failed")
    assert "No such file" in failed["error"] and failed["retry"] == "next scan"
    assert "uprobe_attached" in events
    assert (1, 2) in s.probes.uprobes
    assert s.counters["uprobe.attach_failed"] == 1
    assert any(e["event"] == "tls_not_capturable" and e["comm"] == "java" for e in logs)


def test_probe_all_pid_false_allows_only_scanned_pids():
    s = make(failures=0, probe_all_pid=False)
    with capture_logs():
        s.scan(None)
    assert s.probes.allowed == {42}
