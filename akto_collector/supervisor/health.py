"""The operator's endpoints: /metrics, /healthz, /readyz, on AKTO_METRICS_ADDR.

A small HTTP server in a daemon thread (the standard library's, one thread
per request: a scrape never waits for another). It reads only what the
supervisor's loop publishes: a ``metrics.Snapshot`` and the health verdicts
below, so it never blocks the loop and the loop never waits for it.

- ``/healthz``: 200 while the loop has run in the last ``STALE_LOOP`` seconds
  (the drain proves it is alive), else 503: a stuck supervisor is restarted
  by its liveness probe.
- ``/readyz``: 503 until every probe is attached and every worker's sink has
  been usable, then 200, and 503 again while a sink has been unusable for
  longer than ``SINK_GRACE`` (a broker gone for minutes).
- ``/metrics``: the Prometheus text format.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from akto_collector.addresses import split_host_port
from akto_collector.supervisor.metrics import Snapshot, SnapshotCollector

STALE_LOOP = 5.0  # seconds without a drain after which the collector is not healthy
SINK_GRACE = 30.0  # seconds a sink may be unusable before the collector is not ready


class Health:
    """What the loop publishes and the endpoints answer (written by one thread, read by others)."""

    def __init__(self) -> None:
        self.last_loop = 0.0  # monotonic time of the latest loop iteration
        self.started = False  # every probe attached, the first scan done
        self.sinks_seen_up = False  # every worker's sink was usable at least once
        self.sink_down_since: float | None = None  # monotonic time since when a sink is unusable
        self.stopping = False
        self.snapshot = Snapshot()

    def healthy(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return not self.stopping and now - self.last_loop < STALE_LOOP

    def ready(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if not (self.started and self.sinks_seen_up) or self.stopping:
            return False
        return self.sink_down_since is None or now - self.sink_down_since < SINK_GRACE

    def sinks(self, states, now: float) -> None:
        """The loop tells the sinks' states (each worker's last report)."""
        up = bool(states) and all(s in ("open", "connected") for s in states)
        if up:
            self.sinks_seen_up = True
            self.sink_down_since = None
        elif self.sink_down_since is None:
            self.sink_down_since = now


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HealthServer:
    """Serves ``health`` on ``address`` ("host:port") until ``close()``."""

    def __init__(self, address: str, health: Health) -> None:
        host, port = split_host_port(address)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: health.snapshot))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = health.healthy()
                    self._answer(200 if ok else 503, b"ok\n" if ok else b"supervisor loop stalled\n")
                elif path == "/readyz":
                    ok = health.ready()
                    self._answer(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._answer(404, b"not found: /metrics, /healthz, /readyz\n")

            def _answer(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes are not log lines
                pass

        server_class = _Server6 if ":" in host else ThreadingHTTPServer
        self.server = server_class((host, int(port)), Handler)
        self.server.daemon_threads = True
        self.address = "%s:%d" % self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
