"""A flood into a tiny ring buffer: what is captured is whole (or marked cut),
and what is not is counted, in requests where the kernel can tell them."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import Nginx

pytestmark = pytest.mark.ebpf
BODY = json.dumps({"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(40)]})


def test_a_flood_into_a_tiny_ring_sheds_new_connections_and_counts_every_missing_request(start_collector, tmp_path):
    if not shutil.which("wrk"):
        pytest.fail("wrk missing: make test-deps installs it")
    nginx = Nginx(tmp_path, "/flood", BODY.replace("'", ""))
    try:
        c = start_collector({"AKTO_RING_BUFFER_MB": "1", "AKTO_WORKERS": "1", "TRAFFIC_DISABLE_EGRESS": "true"})
        # A new connection per request: shedding acts on connections as they begin.
        wrk = subprocess.Popen(["wrk", "-t1", "-c16", "-d4s", "-H", "Connection: close",
                                f"http://127.0.0.1:{nginx.port}/flood"], stdout=subprocess.PIPE)
        # A fast machine drains this flood as it comes and nothing is shed. Stopping
        # the supervisor (the only reader of the ring) for a moment fills the ring
        # whatever the machine's speed, as a drain falling behind would.
        time.sleep(1.0)
        os.kill(c.proc.pid, signal.SIGSTOP)
        time.sleep(1.5)
        os.kill(c.proc.pid, signal.SIGCONT)
        out, _ = wrk.communicate(timeout=60)
        sent = int(re.search(rb"(\d+) requests in", out).group(1))
        c.wait_log("stats", timeout=20, pred=lambda rec: rec["counters"].get("kernel.dropped.shed_requests", 0) > 0)
        pairs = c.wait_pairs(lambda p: p["path"] == "/flood", count=1, timeout=20)
        c.stop()
        final = next(rec for rec in reversed(c.logs()) if rec.get("event") == "stats_final")["counters"]
    finally:
        nginx.stop()
    pairs = [p for p in c.read_pairs() if p["path"] == "/flood"]
    assert pairs
    for p in pairs:  # whole, or marked: never a partial body passed off as whole
        assert p["statusCode"] == "200"
        if p["responsePayloadCut"] == "false":
            assert json.loads(p["responsePayload"]) == json.loads(BODY)
    shed = final["kernel.dropped.shed_requests"]
    assert final["kernel.dropped.shed_connections"] >= 1 and final["kernel.dropped.shed_bytes"] > 0
    # Every request not captured is counted: shed (in requests), in a record the ring refused
    # (each loses at most one request), or in a connection the worker had no room for (one
    # request each, with Connection: close).
    missing = sent - len(pairs)
    counted = shed + final.get("kernel.dropped.ringbuf_full", 0) + final.get("worker.dropped.conn_limit", 0)
    assert 0 <= missing <= counted, (sent, len(pairs), final)
    assert any(rec.get("event") == "shedding_started" for rec in c.logs())
    print(f"sent {sent}, captured {len(pairs)}, shed requests {shed}, "
          f"ring refusals {final.get('kernel.dropped.ringbuf_full', 0)}")
