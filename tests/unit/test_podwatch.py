"""PodWatch: the recorded pod list and watch events (tests/data/k8s) through the kubernetes client."""

from __future__ import annotations

import copy
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import structlog

from akto_collector.supervisor.podwatch import Pod, PodWatch, pod_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from kube_api import PODS, KubeApi  # noqa: E402

SHOP = "5d2a9c4e-8f1b-4c3d-9e7a-1b2c3d4e5f60"
API_ID = "3f9a1c0d2b7e4a6f8c5d1e3b9a7f2c4d6e8b0a1c3e5d7f9b2a4c6e8d0f1a3b5c"


def test_pod_of_recorded_pods():
    uid, pod = pod_of(PODS["items"][0])
    assert uid == SHOP
    assert pod == Pod("shop-api-7f9c6d5b8-x2k4q", "shop",
                      {"app": "shop-api", "app.kubernetes.io/part-of": "shop", "pod-template-hash": "7f9c6d5b8"},
                      {API_ID: "api",
                       "9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b": "metrics",
                       "0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d": "migrate"})
    _, exporter = pod_of(PODS["items"][1])  # cri-o's ids, a pod without labels of many kinds
    assert exporter.containers == {"a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90": "exporter"}
    _, pending = pod_of(PODS["items"][2])  # no status yet: no containers, no labels
    assert (pending.labels, pending.containers) == ({}, {})
    assert pod_of({"metadata": {"name": "no-uid"}}) is None


def wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def api():
    server = KubeApi()
    yield server
    server.close()


def watcher(api, counters, node="node-a") -> PodWatch:
    from kubernetes import client

    w = PodWatch(node, "/nonexistent", structlog.get_logger(), counters)

    def plain_http_api():  # the in-cluster loader insists on https; this test talks plain HTTP
        configuration = client.Configuration(host=api.url)
        configuration.api_key["BearerToken"] = "bearer unit-token"
        return client.CoreV1Api(client.ApiClient(configuration))

    w._api = plain_http_api
    return w


def test_list_then_watch_keeps_the_node_pods_by_uid(api):
    counters: Counter = Counter()
    w = watcher(api, counters)
    w.start()
    try:
        assert wait(lambda: api.watches == 1)
        assert set(w.pods) == {SHOP, "c4b3a291-7d6e-4f5a-8b9c-0d1e2f3a4b5c", "e0f1a2b3-c4d5-4e6f-8a9b-c0d1e2f3a4b5"}
        assert w.take_changes() == set(w.pods) and w.take_changes() == set()
        path, query, auth = api.requests[0]
        assert (path, query["fieldSelector"], auth) == ("/api/v1/pods", "spec.nodeName=node-a", "bearer unit-token")
        assert api.requests[1][1]["resourceVersion"] == "48213" and api.requests[1][1]["watch"].lower() == "true"
        # A label changes: the entry is replaced and the UID reported.
        pod = copy.deepcopy(api.pod("shop-api-7f9c6d5b8-x2k4q"))
        pod["metadata"]["labels"]["version"] = "v2"
        pod["metadata"]["resourceVersion"] = "48300"
        api.push("MODIFIED", pod)
        assert wait(lambda: w.pod(SHOP) is not None and w.pod(SHOP).labels.get("version") == "v2")
        assert w.take_changes() == {SHOP}
        gone = copy.deepcopy(api.pod("pending-job-zz"))
        gone["metadata"]["resourceVersion"] = "48301"
        api.push("DELETED", gone)
        assert wait(lambda: w.pod("e0f1a2b3-c4d5-4e6f-8a9b-c0d1e2f3a4b5") is None)
        # The server ends the watch: it is resumed from the last version seen, without a new list.
        api.end_watch()
        assert wait(lambda: api.watches == 2)
        assert api.requests[-1][1]["resourceVersion"] == "48301"
        assert [r for r in api.requests if "watch" not in r[1]] == api.requests[:1]
        # An expired watch (410) is listed afresh.
        api.push("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired",
                           "message": "too old resource version: 48301 (48400)", "code": 410})
        assert wait(lambda: api.watches == 3)
        assert counters["k8s.watch_expired"] == 1 and counters["k8s.lists"] == 2
        assert w.pod("e0f1a2b3-c4d5-4e6f-8a9b-c0d1e2f3a4b5") is not None  # back, as the list says
        assert not counters["k8s.api_failed"]
    finally:
        w.stop()


def test_failures_are_counted_logged_and_retried_never_raised(api):
    counters: Counter = Counter()
    w = PodWatch("node-a", "/nonexistent", structlog.get_logger(), counters, environ={})
    with structlog.testing.capture_logs() as logs:
        w.start()
        assert wait(lambda: counters["k8s.config_failed"] >= 1)
        w.stop()
    assert logs[0]["event"] == "k8s_metadata_failed" and logs[0]["stage"] == "config"
    assert "Service host/port is not set" in logs[0]["error"]
    assert w.pods == {}
    # An API that answers with errors: counted as the API's failure.
    api.close()
    counters = Counter()
    w = watcher(api, counters)
    w.start()
    assert wait(lambda: counters["k8s.api_failed"] >= 1)
    w.stop()
