"""Kubernetes tags and redaction end to end: processes placed in simulated pods on this host.

A "pod" here is what the collector looks at: a kubelet-style cgroup (the
cgroupfs driver's v1 layout, or the systemd driver's in the v2 hierarchy), a
mount namespace of its own where the service account's ``namespace`` file
exists (a tmpfs over /run: /var/run links there on this host, so the file is
only found by resolving the link inside the process's root), ``HOSTNAME`` in
its environment, and, for a normal pod, a network namespace of its own. The
API is a local HTTPS server answering with the recorded pod list
(tests/data/k8s/pods.json) and a watch stream. Cgroups are removed and the
processes killed after; the mounts die with their namespaces.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Collector, free_port, header, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from kube_api import KubeApi  # noqa: E402

pytestmark = pytest.mark.ebpf
APP = str(Path(__file__).with_name("app_server.py"))
CGROUP = Path("/sys/fs/cgroup")
# This host mounts the cgroup v1 controllers and the v2 hierarchy beside them ("hybrid");
# a pure v2 host has the latter only.
V2 = CGROUP / "unified" if (CGROUP / "unified").is_dir() else CGROUP
V1_OR_V2 = CGROUP / "cpu" if (CGROUP / "cpu").is_dir() else V2

# The recorded pods (tests/data/k8s/pods.json) whose UIDs and container ids the simulated pods carry.
SHOP_UID = "5d2a9c4e-8f1b-4c3d-9e7a-1b2c3d4e5f60"
SHOP_API = "3f9a1c0d2b7e4a6f8c5d1e3b9a7f2c4d6e8b0a1c3e5d7f9b2a4c6e8d0f1a3b5c"
SHOP_POD = "shop-api-7f9c6d5b8-x2k4q"
EXPORTER_UID = "c4b3a291-7d6e-4f5a-8b9c-0d1e2f3a4b5c"
EXPORTER_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
INJECT = {"env": "ci", "team": "payments"}


class SimulatedPod:
    """app_server.py in a kubelet-style cgroup and a mount namespace (and a network one unless host_network)."""

    def __init__(self, tmp: Path, cgroup: Path, namespace: str, hostname: str, host_network: bool) -> None:
        self.cgroup = cgroup
        self.port = free_port()
        self.made = [d for d in (cgroup, *cgroup.parents) if not d.exists()]  # leaf first: removed in this order
        cgroup.mkdir(parents=True)
        pidfile = tmp / f"pid-{self.port}"
        account = "/run/secrets/kubernetes.io/serviceaccount"
        script = (
            "set -e; mount -t tmpfs tmpfs /run; "
            f"mkdir -p {account}; printf %s {namespace} > {account}/namespace; "
            + ("" if host_network else "ip link set lo up; ")
            + f"echo $$ > {cgroup}/cgroup.procs; echo $$ > {pidfile}; "
            f"exec {sys.executable} {APP} {self.port}"
        )
        flags = ["--mount"] + ([] if host_network else ["--net"])
        env = {"PATH": os.environ["PATH"], "HOSTNAME": hostname}
        self.unshare = subprocess.Popen(["unshare", *flags, "--fork", "sh", "-c", script], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().strip()):
            if self.unshare.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("simulated pod did not start: " + self.unshare.stderr.read().decode())
            time.sleep(0.05)
        self.pid = int(pidfile.read_text())
        self.net = [] if host_network else ["nsenter", f"--target={self.pid}", "--net"]
        while self.curl("/ready").returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("simulated pod does not answer")
            time.sleep(0.05)

    def curl(self, path: str, *args: str) -> subprocess.CompletedProcess:
        """A client on the host (its cgroup, its mount namespace), in the pod's network namespace."""
        return run([*self.net, "curl", "-s", "-m", "10", *args, f"http://127.0.0.1:{self.port}{path}"])

    def stop(self) -> None:
        for pid in (self.pid, self.unshare.pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        self.unshare.wait(5)
        deadline = time.monotonic() + 5
        for d in self.made:
            while d.exists():
                try:
                    d.rmdir()
                except OSError:  # EBUSY while the killed process is being reaped
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


@pytest.fixture(scope="module")
def shop(ebpf_available, tmp_path_factory):
    """A normal pod, started before any collector: v1, cgroupfs driver, burstable, containerd's id."""
    pod = SimulatedPod(tmp_path_factory.mktemp("shop"),
                       V1_OR_V2 / "kubepods" / "burstable" / f"pod{SHOP_UID}" / SHOP_API,
                       namespace="shop", hostname=SHOP_POD, host_network=False)
    yield pod
    pod.stop()


def exporter(tmp: Path) -> SimulatedPod:
    """A pod on the host's network: v2, systemd driver, besteffort, cri-o's id; HOSTNAME is the node's name."""
    uid = EXPORTER_UID.replace("-", "_")
    cgroup = (V2 / "kubepods.slice" / "kubepods-besteffort.slice"
              / f"kubepods-besteffort-pod{uid}.slice" / f"crio-{EXPORTER_ID}.scope")
    return SimulatedPod(tmp, cgroup, namespace="monitoring", hostname="node-a", host_network=True)


@pytest.fixture(scope="module")
def collector(shop, tmp_path_factory):
    c = Collector(tmp_path_factory.mktemp("collector"), {
        "AKTO_INJECT_TAGS": "env=ci; team=payments",
        "AKTO_REDACT_HEADERS": "authorization,cookie",
        "AKTO_REDACT_JSON_KEYS": "password,token",
    })
    c.wait_log("ready", timeout=120)
    yield c
    c.stop()


def pairs(collector, path: str, count: int = 2) -> dict[str, dict]:
    got = collector.wait_pairs(lambda p: p["path"] == path, count=count, timeout=30)
    return {p["direction"]: p for p in got}


def test_a_pod_process_alive_at_start_is_tagged_from_proc(collector, shop):
    assert shop.curl("/tags/a").returncode == 0
    by = pairs(collector, "/tags/a")
    served, client = by["1"], by["2"]
    assert served["process_id"] == str(shop.pid)
    assert json.loads(served["tag"]) == {**INJECT, "pod_uid": SHOP_UID, "pod": SHOP_POD, "namespace": "shop",
                                         "container_id": SHOP_API}
    # curl ran on the host (its cgroup): the fixed tags only.
    assert client["process_name"] == "curl" and json.loads(client["tag"]) == INJECT
    log = next(r for r in collector.logs() if r.get("event") == "processes_tagged")
    assert log["in_pods"] >= 1


def test_a_short_lived_client_in_a_pod_is_looked_up_before_it_exits(collector, shop):
    # curl in the pod's cgroup lives a few ms, far less than the drain's paced wait on a quiet node:
    # its first connection wakes the supervisor, which looks it up while it is alive.
    for i in range(3):
        client = [*shop.net, "sh", "-c", f"echo $$ > {shop.cgroup}/cgroup.procs && "
                  f"exec curl -s -m 10 http://127.0.0.1:{shop.port}/tags/short?n={i}"]
        assert run(client).returncode == 0
        got = collector.wait_pairs(lambda p, i=i: p["path"] == f"/tags/short?n={i}" and p["direction"] == "2",
                                   timeout=30)
        assert got and got[0]["process_name"] == "curl"
        tag = json.loads(got[0]["tag"])
        assert (tag.get("pod_uid"), tag.get("container_id")) == (SHOP_UID, SHOP_API), tag
        time.sleep(0.5)  # a quiet node: the next client meets a waiting, empty ring


def test_a_pod_on_the_host_network_started_later_is_tagged_without_the_node_name(collector, tmp_path):
    pod = exporter(tmp_path)
    try:
        assert pod.curl("/tags/b").returncode == 0
        served = pairs(collector, "/tags/b")["1"]
        assert served["process_id"] == str(pod.pid)
        # HOSTNAME is the node's name on the host's network: no "pod" without the API.
        assert json.loads(served["tag"]) == {**INJECT, "pod_uid": EXPORTER_UID, "namespace": "monitoring",
                                             "container_id": EXPORTER_ID}
    finally:
        pod.stop()


def test_listed_headers_and_json_keys_are_redacted_both_sides(collector, shop):
    body = json.dumps({"user": "ann", "password": "hunter2", "profile": {"token": "t0k", "keep": 1}})
    r = shop.curl("/login", "-X", "POST", "-H", "Authorization: Bearer s3cret", "-H", "Cookie: sid=c00kie",
                  "-H", "Content-Type: application/json", "--data-binary", body)
    assert r.returncode == 0 and b"hunter2" in r.stdout  # the app itself saw everything
    by = pairs(collector, "/login")
    assert set(by) == {"1", "2"}
    for p in by.values():
        assert header(p["requestHeaders"], "authorization") == "<redacted>"
        assert header(p["requestHeaders"], "cookie") == "<redacted>"
        assert json.loads(p["requestPayload"]) == {"user": "ann", "password": "<redacted>",
                                                   "profile": {"token": "<redacted>", "keep": 1}}
        assert header(p["requestHeaders"], "content-length") == str(len(p["requestPayload"]))
        assert p["requestPayloadSize"] == str(len(body))
        request = p["requestHeaders"] + p["requestPayload"]  # (the app echoes the body in its response)
        assert not [s for s in ("hunter2", "s3cret", "c00kie", "t0k") if s in request]


def test_labels_names_and_a_relabel_from_the_api(start_collector, shop, cert, tmp_path):
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("test-token")
    (account / "ca.crt").write_text(Path(cert[0]).read_text())
    api = KubeApi(cert=cert)
    try:
        c = start_collector({
            "AKTO_K8_METADATA_CAPTURE": "true", "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(api.port), "AKTO_K8_SERVICE_ACCOUNT_DIR": str(account),
            "NODE_NAME": "node-a", "PROBE_ALL_PID": "true", "AKTO_INJECT_TAGS": "env=ci;app=overridden",
        })
        c.wait_log("k8s_pods_listed", timeout=30)
        labels = {"app": "shop-api", "app.kubernetes.io/part-of": "shop", "pod-template-hash": "7f9c6d5b8"}
        want = {"env": "ci", **labels, "pod_uid": SHOP_UID, "pod": SHOP_POD, "namespace": "shop",
                "container_id": SHOP_API, "container": "api"}
        served = tagged(c, shop, "/api/a", lambda tag: tag == want)
        assert json.loads(served["tag"]) == want
        path, query, auth = api.requests[0]
        assert (path, query["fieldSelector"], auth.lower()) == ("/api/v1/pods", "spec.nodeName=node-a",
                                                                "bearer test-token")
        # The pod's labels change: the watch says so, the next messages carry the new ones.
        pod = copy.deepcopy(api.pod(SHOP_POD))
        pod["metadata"]["labels"]["version"] = "v2"
        pod["metadata"]["resourceVersion"] = "48500"
        api.push("MODIFIED", pod)
        served = tagged(c, shop, "/api/b", lambda tag: tag.get("version") == "v2")
        assert json.loads(served["tag"]) == {**want, "version": "v2"}
        stats = c.wait_log("stats", timeout=10, pred=lambda r: r["counters"].get("k8s.events", 0) >= 1)["counters"]
        assert not {k: v for k, v in stats.items() if k.startswith("k8s.") and k.endswith("_failed") and v}
    finally:
        api.close()


def tagged(c, pod, path: str, pred, timeout: float = 20.0) -> dict:
    """The first served message of ``path`` (asked again and again) whose tag satisfies ``pred``."""
    deadline = time.monotonic() + timeout
    i = 0
    while time.monotonic() < deadline:
        i += 1
        assert pod.curl(f"{path}?n={i}").returncode == 0
        got = c.wait_pairs(lambda p, i=i: p["path"] == f"{path}?n={i}" and p["direction"] == "1", timeout=5)
        if got and pred(json.loads(got[0]["tag"])):
            return got[0]
        time.sleep(0.3)
    raise AssertionError(f"no message of {path} with the expected tag; last: {got and got[0]['tag']}")

