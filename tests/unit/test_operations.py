"""What operators rely on, piece by piece: the memory guard's back-off, systemd's
notify protocol on a real datagram socket, the health endpoints and /metrics
over real HTTP (parsed with prometheus_client's own parser)."""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from akto_collector.supervisor.health import SINK_GRACE, STALE_LOOP, Health, HealthServer
from akto_collector.supervisor.memory import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    OK,
    QUIET,
    RESTART,
    SHED,
    MemoryGuard,
    private_memory,
)
from akto_collector.supervisor.metrics import Snapshot
from akto_collector.supervisor.notify import Notifier
from akto_collector.supervisor.stats import dropped_items

MB = 1 << 20


def test_the_first_crossing_restarts_at_once_then_restarts_back_off():
    g = MemoryGuard(100 * MB)
    assert g.check(0.0, 50 * MB) == OK
    assert g.check(1.0, 150 * MB) == RESTART
    g.restarted(1.0)
    # The fresh image is over again 20 s later: it sheds for 10 s before restarting.
    assert g.check(21.0, 150 * MB) == SHED
    assert g.check(21.0 + BACKOFF_FIRST - 0.1, 150 * MB) == SHED
    assert g.check(21.0 + BACKOFF_FIRST, 150 * MB) == RESTART
    delays = []
    now = 40.0
    for _ in range(8):
        g.restarted(now)
        delays.append(g.delay)
        now += 5.0
    assert delays[:3] == [BACKOFF_FIRST * 3, BACKOFF_FIRST * 9, BACKOFF_FIRST * 27]
    assert max(delays) == BACKOFF_MAX
    assert g.check(now + QUIET, 150 * MB) == RESTART  # a quiet hour: immediate again


def test_the_back_off_crosses_the_exec_and_going_below_ends_the_shedding():
    g = MemoryGuard(100 * MB)
    g.restarted(1000.0)
    h = MemoryGuard.from_state(100 * MB, g.state())
    assert h.check(1010.0, 150 * MB) == SHED
    assert h.check(1011.0, 50 * MB) == OK and h.shedding_since is None


def test_private_memory_of_this_process():
    used = private_memory([os.getpid(), 2 ** 22 + 3])
    assert set(used) == {os.getpid()} and used[os.getpid()] > 1 * MB


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def received(sock) -> dict:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def test_notify_ready_status_watchdog_stopping(notify_socket):
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert n.watchdog_interval == 1.0
    n.ready("pairs 0")
    msg = received(sock)
    assert msg["READY"] == "1" and msg["STATUS"] == "pairs 0" and msg["MAINPID"] == str(os.getpid())
    n.watchdog(100.0)
    assert received(sock) == {"WATCHDOG": "1"}
    n.watchdog(100.5)  # not due yet: nothing sent
    n.reloading()
    assert received(sock)["RELOADING"] == "1"
    n.stopping()
    assert received(sock) == {"STOPPING": "1"}


def test_notify_abstract_socket_and_watchdog_for_another_pid():
    name = f"akto-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
        assert n.watchdog_interval == 0.0  # the watchdog is someone else's
        n.status("x")
        assert received(sock) == {"STATUS": "x"}
    finally:
        sock.close()


def test_notify_never_blocks_or_raises_when_systemd_is_gone(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert n.send(READY=1) is False and n.counters["notify.failed"] == 1
    assert Notifier({}).send(READY=1) is False  # not under systemd: a no-op


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_health_endpoints_and_metrics_over_http():
    health = Health()
    server = HealthServer("127.0.0.1:0", health)
    base = f"http://{server.address}"
    try:
        assert get(base + "/healthz")[0] == 503  # the loop has not run yet
        assert get(base + "/readyz")[0] == 503
        health.last_loop = time.monotonic()
        assert get(base + "/healthz")[0] == 200
        health.started = True
        health.sinks(["open", "connecting"], time.monotonic())
        assert get(base + "/readyz")[0] == 503  # a sink not usable yet
        health.sinks(["open", "connected"], time.monotonic())
        assert get(base + "/readyz")[0] == 200
        health.sinks(["open", "disconnected"], time.monotonic() - SINK_GRACE - 1)
        assert get(base + "/readyz")[0] == 503  # the broker is gone for longer than the grace
        health.last_loop = time.monotonic() - STALE_LOOP - 1
        assert get(base + "/healthz")[0] == 503  # a stuck loop

        health.snapshot = Snapshot(
            counters={"pairs": 5, "pairs.http1.1": 3, "pairs.http2.2": 2, "kernel.dropped.ringbuf_full": 4,
                      "worker.records": 99},
            workers=[{"worker": 0, "connections": 2, "buffered": 10, "queue": 1, "queued_bytes": 5, "sink": "open"}],
            uprobes=3, processes_covered=7, ring_fill=0.25, memory={"supervisor": 1000}, restarts={"memory": 1})
        code, body = get(base + "/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        pairs = {(s.labels["protocol"], s.labels["direction"]): s.value
                 for s in families["akto_collector_pairs"].samples if s.name.endswith("_total")}
        assert pairs == {("http1", "1"): 3, ("http2", "2"): 2}
        dropped = {s.labels["reason"]: s.value for s in families["akto_collector_dropped"].samples
                   if s.name.endswith("_total")}
        assert dropped == {"kernel.dropped.ringbuf_full": 4}
        assert families["akto_collector_connections"].samples[0].value == 2
        assert families["akto_collector_processes_covered"].samples[0].value == 7
        restarts = {s.labels["cause"]: s.value for s in families["akto_collector_restarts"].samples
                    if s.name.endswith("_total")}
        assert restarts == {"memory": 1, "reload": 0, "worker": 0}
        assert get(base + "/other")[0] == 404
    finally:
        server.close()


def test_the_buffer_budget_fits_under_the_memory_threshold_next_to_the_collector():
    from akto_collector.supervisor.memory import MIN_BUFFER_BUDGET, WORKER_RESERVE, buffer_budget

    # The defaults: 600 MB of buffers fit under 800 MB next to a 70 MB supervisor and two workers.
    assert buffer_budget(600 * MB, 800 * MB, 70 * MB, 2) == 600 * MB
    # A tighter threshold: the buffers shrink to what fits, with a fortieth of the threshold to spare.
    assert buffer_budget(600 * MB, 500 * MB, 70 * MB, 2) == 500 * MB - 70 * MB - 2 * WORKER_RESERVE - 500 * MB // 40
    # Below the collector's own size: a small budget still (and the memory guard backs off).
    assert buffer_budget(600 * MB, 1 * MB, 70 * MB, 2) == MIN_BUFFER_BUDGET
    # Never more than configured.
    assert buffer_budget(1 * MB, 1 * MB, 70 * MB, 2) == 1 * MB


def test_the_status_lines_drop_figure_counts_things_not_bytes_or_milliseconds():
    from collections import Counter

    total = Counter({"queue.dropped_records": 3, "kernel.dropped.shed_requests": 2, "kernel.dropped.shed_bytes": 9000,
                     "supervisor.dropped.restart_gap_ms": 12500, "pairs": 40})
    assert dropped_items(total) == 5
