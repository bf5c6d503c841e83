"""A Kubernetes API server for the tests: the recorded pod list (k8s/pods.json) and a watch stream.

``GET /api/v1/pods`` answers the list as the API server does (the pods of
the node the ``fieldSelector`` names); with ``watch=true`` it streams, one
JSON line per event, what the test ``push``es, until ``end_watch`` (as the
server's ``timeoutSeconds`` would) or ``close``. Every request is kept
(path, query, Authorization header) for the test to check. Plain HTTP, or
HTTPS with ``cert=(cert.pem, key.pem)`` as an in-cluster client expects.
"""

from __future__ import annotations

import copy
import json
import queue
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PODS = json.loads((Path(__file__).with_name("k8s") / "pods.json").read_text())
_END = object()


class KubeApi:
    def __init__(self, pods: dict | None = None, cert: tuple[str, str] | None = None) -> None:
        self.pods = copy.deepcopy(PODS if pods is None else pods)
        self.requests: list[tuple[str, dict, str]] = []
        self.watches = 0  # watches opened so far
        self._events: queue.Queue = queue.Queue()
        self._closing = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # a watch is chunked, one chunk per event, as the API server's

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                api.requests.append((url.path, query, self.headers.get("Authorization", "")))
                if url.path != "/api/v1/pods":
                    self.send_error(404)
                    return
                node = query.get("fieldSelector", "").partition("spec.nodeName=")[2]
                if query.get("watch", "").lower() == "true":
                    api.watches += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.close_connection = True
                    while not api._closing.is_set():
                        try:
                            event = api._events.get(timeout=0.1)
                        except queue.Empty:
                            continue
                        if event is _END:
                            break
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                doc = dict(api.pods, items=[p for p in api.pods["items"] if p["spec"].get("nodeName") == node])
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*cert)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if cert else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def pod(self, name: str) -> dict:
        return next(p for p in self.pods["items"] if p["metadata"]["name"] == name)

    def push(self, kind: str, obj: dict) -> None:
        """One event on the open (or next) watch: ADDED, MODIFIED, DELETED, ERROR."""
        self._events.put({"type": kind, "object": obj})

    def end_watch(self) -> None:
        self._events.put(_END)

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
