"""The DaemonSet's filters and limits, against the real collector."""

from __future__ import annotations

import socket
import time

import psutil
import pytest

from conftest import run

pytestmark = pytest.mark.ebpf



def curl(port, path, *extra):
    r = run(["curl", "-s", *extra, f"http://127.0.0.1:{port}{path}"])
    assert r.returncode == 0


def test_seed_discovery_rule(start_collector, app):
    c = start_collector({"AKTO_MODULE_DISCOVERY_CONFIG":
                         '[{"key":{"eq":"x-forwarded-client-cert","ifAbsent":"reject"},"value":{"regex":".*bookinfo.*"}}]'})
    curl(app.port, "/d/yes", "-H", "X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/bookinfo/sa/x")
    curl(app.port, "/d/other", "-H", "X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/shop/sa/x")
    curl(app.port, "/d/absent")
    got = c.wait_pairs(lambda p: p["path"] == "/d/yes", count=2)
    assert len(got) == 2
    time.sleep(1.5)
    paths = {p["path"] for p in c.read_pairs()}
    assert "/d/other" not in paths and "/d/absent" not in paths
    c.wait_log("stats", pred=lambda r: r["counters"].get("filter.discovery", 0) >= 4)


def test_ignore_ip_traffic(start_collector, app):
    c = start_collector({"AKTO_IGNORE_IP_TRAFFIC": "true"})
    curl(app.port, "/ip/literal")
    curl(app.port, "/ip/named", "-H", "Host: api.local")
    assert c.wait_pairs(lambda p: p["path"] == "/ip/named", count=2)
    time.sleep(1.0)
    assert not [p for p in c.read_pairs() if p["path"] == "/ip/literal"]


def test_disable_egress(start_collector, app):
    c = start_collector({"TRAFFIC_DISABLE_EGRESS": "true"})
    for i in range(3):
        curl(app.port, f"/eg/{i}")
    got = c.wait_pairs(lambda p: p["path"].startswith("/eg/"), count=3)
    time.sleep(1.0)
    got = [p for p in c.read_pairs() if p["path"].startswith("/eg/")]
    assert len(got) == 3 and {p["direction"] for p in got} == {"1"}


def test_max_active_conn_refuses_and_counts(start_collector, app):
    c = start_collector({"TRAFFIC_MAX_ACTIVE_CONN": "5"})
    socks = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", app.port))
        s.sendall(b"GET /cap HTTP/1.1\r\nHost: cap.local\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.recv(4096)
    rss_before = sum(p.memory_info().rss for p in [psutil.Process(c.proc.pid)] + psutil.Process(c.proc.pid).children())
    for s in socks:
        s.close()
    # 100 sockets (both ends are traced) against a table of 5: most calls are refused, and counted
    rec = c.wait_log("stats", pred=lambda r: r["counters"].get("kernel.dropped.conn_table_full", 0) >= 40)
    assert rec["counters"].get("pairs", 0) <= 10
    # existing connections keep working and new ones work once old ones closed
    curl(app.port, "/cap/after")
    assert c.wait_pairs(lambda p: p["path"] == "/cap/after")
    rss_after = sum(p.memory_info().rss for p in [psutil.Process(c.proc.pid)] + psutil.Process(c.proc.pid).children())
    assert rss_after < rss_before * 1.5


def test_inactive_connection_is_expired(start_collector, app):
    c = start_collector({"TRAFFIC_INACTIVITY_THRESHOLD": "2"})
    s = socket.create_connection(("127.0.0.1", app.port))
    s.sendall(b"POST /slow HTTP/1.1\r\nHost: slow.local\r\nContent-Length: 100\r\n\r\nonly-part")
    rec = c.wait_log("stats", timeout=20, pred=lambda r: r["counters"].get("worker.expired_connections", 0) >= 1)
    assert rec["counters"]["worker.expired_connections"] >= 1
    s.close()
    assert not [p for p in c.read_pairs() if p["path"] == "/slow"]


def test_memory_threshold_restarts_in_place(start_collector, app):
    c = start_collector({"AKTO_MEM_THRESH_RESTART": "1"})
    c.wait_log("memory_restart", timeout=30)
    c.wait_log("starting", timeout=60, pred=lambda r: r.get("restarts", {}).get("memory", 0) >= 1)
    c.wait_log("ready", timeout=60, pred=lambda r: sum(1 for x in c.logs() if x.get("event") == "ready") >= 2)
    assert c.proc.poll() is None  # the same process, exec'ed afresh
