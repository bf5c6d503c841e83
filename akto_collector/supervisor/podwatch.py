"""What the Kubernetes API says about the pods of this node, in a thread of the supervisor.

With ``AKTO_K8_METADATA_CAPTURE=true`` the ``kubernetes`` client lists the
pods of this node (field selector ``spec.nodeName=<NODE_NAME>``), then
watches them from the list's resource version, and keeps, per pod UID, its
name, namespace, labels and its containers' names by container id
(``Pod``). A watch that the server ends is resumed; one that expired (410)
or failed starts again from a fresh list, after a back-off when it failed.
Failures are logged and counted (``k8s.*``), never fatal: without the API
the tags still carry what /proc says (``podmeta``).

Credentials are the in-cluster ones (``KUBERNETES_SERVICE_HOST``/``_PORT``,
the service account's token and CA), read from ``AKTO_K8_SERVICE_ACCOUNT_DIR``
by the client's own in-cluster loader (what ``load_incluster_config()``
does with the default directory), so a test can point it at a server of its own.

The loop thread reads ``pod(uid)`` and takes the UIDs of pods that changed
(``take_changes``); this thread only replaces whole entries, so neither
needs a lock.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from typing import NamedTuple

import orjson

WATCH_SECONDS = 300  # the server ends a watch after this; it is resumed from where it was
REQUEST_TIMEOUT = 30.0  # a list, or a watch silent this much past WATCH_SECONDS, has failed
BACKOFF_MAX = 60.0
COUNTERS = ("k8s.lists", "k8s.events", "k8s.watch_expired", "k8s.config_failed", "k8s.api_failed")


class Pod(NamedTuple):
    name: str
    namespace: str
    labels: dict[str, str]
    containers: dict[str, str]  # container id (64 hex) -> its name in the pod spec


def pod_of(obj: dict) -> tuple[str, Pod] | None:
    """(UID, Pod) of a pod object as the API serialises it (JSON, camelCase), None without a UID."""
    meta = obj.get("metadata") or {}
    uid = meta.get("uid")
    if not uid:
        return None
    status = obj.get("status") or {}
    containers = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or ():
            cid = cs.get("containerID") or ""  # "containerd://<id>", "cri-o://<id>", "docker://<id>"
            if cid and cs.get("name"):
                containers[cid.rpartition("://")[2]] = str(cs["name"])
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return str(uid), Pod(str(meta.get("name") or ""), str(meta.get("namespace") or ""), labels, containers)


class PodWatch:
    """The pods of this node, by UID, kept up to date by a daemon thread."""

    def __init__(self, node_name: str, account_dir: str, log, counters: Counter, environ=None) -> None:
        self.node_name = node_name
        self.account_dir = account_dir
        self.log = log
        self.counters = counters
        # Counted from this thread: the keys exist before it starts, so the loop
        # thread never iterates the dict while this one adds a key.
        for name in COUNTERS:
            counters.setdefault(name, 0)
        self.environ = os.environ if environ is None else environ
        self.pods: dict[str, Pod] = {}
        self._changes: deque[str] = deque()
        self._stopping = threading.Event()
        self._watch = None
        self._thread: threading.Thread | None = None

    # -- the loop thread's side -------------------------------------------------------

    def pod(self, uid: str) -> Pod | None:
        return self.pods.get(uid)

    def take_changes(self) -> set[str]:
        """UIDs of the pods added, changed or deleted since the last call."""
        out = set()
        while self._changes:
            out.add(self._changes.popleft())
        return out

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="podwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; a watch blocked in a read is cut. Does not wait."""
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.stop()

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        delay = 1.0
        api = None
        while not self._stopping.is_set():
            try:
                if api is None:
                    api = self._api()
                version = self._list(api)
                delay = 1.0
                while not self._stopping.is_set():
                    began = time.monotonic()
                    version = self._follow(api, version)
                    if time.monotonic() - began < 1.0:  # a server that ends watches at once is not asked in a loop
                        self._stopping.wait(1.0)
            except Exception as exc:  # noqa: BLE001 (whatever fails, the collector goes on)
                if getattr(exc, "status", None) == 410:  # the client's ApiException: the watch expired
                    self.counters["k8s.watch_expired"] += 1  # expected now and then: list afresh
                    continue
                stage = "config" if api is None else "api"
                self.counters[f"k8s.{stage}_failed"] += 1
                self.log.warning("k8s_metadata_failed", stage=stage, error=_describe(exc), retry_in=delay,
                                 detail="pod labels and names from the API are missing until it works")
            if self._stopping.wait(delay):
                return
            delay = min(BACKOFF_MAX, delay * 2)

    def _api(self):
        from kubernetes import client, config  # noqa: PLC0415 (only with AKTO_K8_METADATA_CAPTURE)

        configuration = client.Configuration()
        config.incluster_config.InClusterConfigLoader(
            token_filename=os.path.join(self.account_dir, "token"),
            cert_filename=os.path.join(self.account_dir, "ca.crt"),
            environ=self.environ).load_and_set(configuration)
        return client.CoreV1Api(client.ApiClient(configuration))

    def _selector(self) -> str:
        return f"spec.nodeName={self.node_name}"

    def _list(self, api) -> str:
        """Replace every entry with the list's pods; the list's resource version."""
        resp = api.list_pod_for_all_namespaces(field_selector=self._selector(), _preload_content=False,
                                               _request_timeout=REQUEST_TIMEOUT)
        doc = orjson.loads(resp.data)
        pods = dict(filter(None, map(pod_of, doc.get("items") or ())))
        old, self.pods = self.pods, pods
        self._changes.extend(set(old) | set(pods))
        if not self.counters["k8s.lists"]:
            self.log.info("k8s_pods_listed", node=self.node_name, pods=len(pods))
        self.counters["k8s.lists"] += 1
        return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def _follow(self, api, version: str) -> str:
        """One watch from ``version`` until the server ends it; the version to resume from."""
        from kubernetes import watch  # noqa: PLC0415

        self._watch = w = watch.Watch()
        try:
            for event in w.stream(api.list_pod_for_all_namespaces, field_selector=self._selector(),
                                  resource_version=version, timeout_seconds=WATCH_SECONDS,
                                  allow_watch_bookmarks=True,
                                  _request_timeout=(REQUEST_TIMEOUT, WATCH_SECONDS + REQUEST_TIMEOUT)):
                kind = event.get("type")
                found = pod_of(event.get("raw_object") or {}) if kind in ("ADDED", "MODIFIED", "DELETED") else None
                if found is not None:
                    uid, pod = found
                    if kind == "DELETED":
                        self.pods.pop(uid, None)
                    else:
                        self.pods[uid] = pod
                    self._changes.append(uid)
                    self.counters["k8s.events"] += 1
                if self._stopping.is_set():
                    break
        finally:
            self._watch = None
        return w.resource_version or version


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"
