"""Supervision with real processes: a killed or stuck worker is replaced and what
it held counted; the endpoints, systemd's notify protocol, the memory
back-off, SIGHUP reloads and start-up refusals, against the real collector."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, run

pytestmark = pytest.mark.ebpf



def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def metric(c, family: str, **labels) -> float:
    _, body = get(f"http://{c.metrics_addr}/metrics")
    total = 0.0
    for f in text_string_to_metric_families(body.decode()):
        if f.name == family:
            for s in f.samples:
                if s.name.endswith("_total") or s.name == family:
                    if all(s.labels.get(k) == v for k, v in labels.items()):
                        total += s.value
    return total


def curl(port: int, path: str) -> None:
    assert run(["curl", "-s", f"http://127.0.0.1:{port}{path}"]).returncode == 0


def test_metrics_count_the_pairs_made_and_readyz_turns_ready(start_collector, app):
    c = start_collector(wait_ready=False)
    seen = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and 200 not in seen:
        seen.add(get(f"http://{c.metrics_addr}/readyz")[0])
        time.sleep(0.05)
    assert 503 in seen and 200 in seen  # not ready while the programs compile, ready after
    assert get(f"http://{c.metrics_addr}/healthz")[0] == 200
    for i in range(7):
        curl(app.port, f"/m/{i}")
    got = c.wait_pairs(lambda p: p["path"].startswith("/m/"), count=14)
    assert len(got) == 14  # both sides: curl's (2) and the server's (1)
    # Served pairs (direction 1) are the app server's only: the endpoints are the
    # collector's own, which it never traces (their clients' side is direction 2).
    deadline = time.monotonic() + 10
    while metric(c, "akto_collector_pairs", protocol="http1", direction="1") < 7 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # anything late would show now
    assert metric(c, "akto_collector_pairs", protocol="http1", direction="1") == 7
    assert metric(c, "akto_collector_pairs", protocol="http1", direction="2") >= 7
    assert metric(c, "akto_collector_dropped") == 0


def test_a_killed_worker_is_replaced_capture_goes_on_and_losses_are_counted(start_collector, app):
    c = start_collector({"AKTO_WORKERS": "2"})
    ready = c.wait_log("ready")
    stop = threading.Event()

    def traffic():
        i = 0
        while not stop.is_set():
            run(["curl", "-s", f"http://127.0.0.1:{app.port}/k/{i}"])
            i += 1

    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(2)
        victim = ready["workers"][0]
        os.kill(victim, signal.SIGKILL)
        died = c.wait_log("worker_died", timeout=10)
        assert died["pid"] == victim
        c.wait_log("worker_started", timeout=10, pred=lambda r: r.get("worker") == 0 and r.get("pid") != victim)
        time.sleep(1)
    finally:
        stop.set()
        t.join()
    curl(app.port, "/after-kill")
    assert c.wait_pairs(lambda p: p["path"] == "/after-kill", count=2)
    counters = c.wait_log("stats", pred=lambda r: "worker_died.dropped_records" in r["counters"])["counters"]
    assert "worker_died.dropped_connections" in counters and "worker_died.dropped_messages" in counters
    assert metric(c, "akto_collector_restarts", cause="worker") == 1


def test_a_stuck_worker_is_terminated_and_replaced(start_collector, app):
    c = start_collector({"AKTO_WORKERS": "2", "_AKTO_TEST_WORKER_STALL": "1"})
    ready = c.wait_log("ready")
    stuck = c.wait_log("worker_stalled", timeout=30)
    assert stuck["pid"] == ready["workers"][0]
    c.wait_log("worker_died", timeout=10, pred=lambda r: r["pid"] == stuck["pid"])
    c.wait_log("worker_started", timeout=10, pred=lambda r: r.get("worker") == 0 and r.get("pid") != stuck["pid"])
    assert c.proc.poll() is None


def test_notify_socket_gets_ready_watchdog_status_and_stopping(start_collector, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1)
    got: list[str] = []
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                got.append(sock.recv(4096).decode())
            except OSError:
                pass

    t = threading.Thread(target=receive)
    t.start()
    try:
        c = start_collector({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("WATCHDOG=1" in m for m in got):
            time.sleep(0.1)
        assert c.stop() == 0
    finally:
        stop.set()
        t.join()
        sock.close()
    text = "\n".join(got)
    assert "READY=1" in text and f"MAINPID={c.proc.pid}" in text
    assert "WATCHDOG=1" in text and "STATUS=pairs" in text
    assert got[-1].startswith("STOPPING=1")


def test_an_unwritable_output_stops_start_up_with_a_non_zero_exit(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKTO_", "TRAFFIC_"))}
    out = str(tmp_path / "no-such-dir" / "pairs.jsonl")
    r = subprocess.run([sys.executable, "-m", "akto_collector", "run", "--output", out],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"akto-collector: configuration error: --output={out!r}: cannot open it")
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_threshold_far_below_the_collector_backs_off_instead_of_looping(start_collector, app):
    c = start_collector({"AKTO_MEM_THRESH_RESTART": "1"})
    c.wait_log("memory_restart", timeout=30)
    # The fresh image (same process) is over the threshold at once: it sheds instead of restarting.
    backoff = c.wait_log("memory_restart_backoff", timeout=90)
    assert backoff["wait_seconds"] == 10.0 and backoff["restarts"] == 1
    assert backoff["used_mb"] > backoff["threshold_mb"]
    restarts_at_backoff = sum(1 for r in c.logs() if r.get("event") == "memory_restart")
    assert restarts_at_backoff == 1
    assert c.proc.poll() is None
    # While it backs off, live traffic still gets through.
    curl(app.port, "/during-backoff")
    assert c.wait_pairs(lambda p: p["path"] == "/during-backoff", timeout=15)


def test_sighup_reloads_a_valid_env_file_and_refuses_a_bad_one(start_collector, tmp_path, app):
    env_file = tmp_path / "collector.env"
    env_file.write_text("AKTO_LOG_LEVEL=info\n")
    c = start_collector({"AKTO_ENV_FILE": str(env_file)})
    pid = c.proc.pid
    env_file.write_text("TRAFFIC_MAX_ACTIVE_CONN=not-a-number\n")
    os.kill(pid, signal.SIGHUP)
    refused = c.wait_log("reload_refused", timeout=10)
    assert "TRAFFIC_MAX_ACTIVE_CONN='not-a-number'" in refused["error"]
    curl(app.port, "/still-running")
    assert c.wait_pairs(lambda p: p["path"] == "/still-running")
    env_file.write_text("# a valid change\nAKTO_IGNORE_IP_TRAFFIC=true\n")
    os.kill(pid, signal.SIGHUP)
    c.wait_log("reloading", timeout=10)
    c.wait_log("ready", timeout=120, pred=lambda r: sum(1 for x in c.logs() if x.get("event") == "ready") >= 2)
    assert c.proc.pid == pid and c.proc.poll() is None  # the same process, exec'ed afresh
    starting = [r for r in c.logs() if r.get("event") == "starting"][-1]
    assert starting["settings"]["ignore_ip_traffic"] is True and starting["restarts"] == {"reload": 1}
    gap = c.wait_log("restart_gap", timeout=5)  # the seconds without probes, from detach to ready, counted
    assert gap["seconds"] > 0 and gap["restarts"] == {"reload": 1}
    curl(app.port, "/after-reload-ip")  # Host is an IP literal: now ignored
    time.sleep(2)
    assert not [p for p in c.read_pairs() if p["path"] == "/after-reload-ip"]
