"""Fixtures that run the real collector against real servers and clients.

The collector runs as a subprocess (`python -m akto_collector run`), loads
its BPF programs into this kernel, and writes JSON lines to a file we read.
Where eBPF is unavailable the tests skip, except under AKTO_REQUIRE_EBPF=1
(set by .ci/run), where they fail: a skip must not hide a broken capture.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]


def ebpf_problem() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        return f"bcc not importable: {exc}"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "no BTF"
    return None


@pytest.fixture(scope="session")
def ebpf_available():
    problem = ebpf_problem()
    if problem:
        if os.environ.get("AKTO_REQUIRE_EBPF") == "1":
            pytest.fail(f"eBPF required (AKTO_REQUIRE_EBPF=1) but unavailable: {problem}")
        pytest.skip(f"eBPF unavailable: {problem}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    """A running collector: its JSON-lines output and its structured logs."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None, args: list[str] | None = None,
                 python: str = sys.executable, cwd: Path | str = REPO):
        self.out_path = tmp / "pairs.jsonl"
        self.err_path = tmp / "collector.log"
        full_env = dict(os.environ)
        for k in list(full_env):
            if k.startswith(("AKTO_", "TRAFFIC_", "CAPTURE_", "KAFKA_", "PROBE_ALL_PID", "UPROBE_", "NOTIFY_SOCKET",
                             "WATCHDOG_")) and \
                    k not in ("AKTO_REQUIRE_EBPF", "AKTO_REQUIRE_BROKER"):
                del full_env[k]
        full_env.setdefault("AKTO_WORKERS", "2")
        full_env["AKTO_STATS_INTERVAL"] = "1"
        # Several collectors run at once here: each serves its endpoints on a port of its own.
        full_env["AKTO_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
        full_env.update(env or {})
        self.metrics_addr = full_env["AKTO_METRICS_ADDR"]
        self.err = open(self.err_path, "wb")
        cmd = [python, "-m", "akto_collector", "run", "--output", str(self.out_path)] + (args or [])
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.DEVNULL, stderr=self.err)
        self._seen = 0
        self.pairs: list[dict] = []

    def logs(self) -> list[dict]:
        out = []
        for line in self.err_path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                out.append({"event": "raw", "text": line.decode("utf-8", "replace")})
        return out

    def wait_log(self, event: str, timeout: float = 60.0, pred=None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.logs():
                if rec.get("event") == event and (pred is None or pred(rec)):
                    return rec
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited with {self.proc.returncode}:\n{self.err_path.read_text()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {event!r} log within {timeout}s:\n{self.err_path.read_text()[-4000:]}")

    def read_pairs(self) -> list[dict]:
        if self.out_path.exists():
            data = self.out_path.read_bytes()
            lines = data.splitlines()
            if data and not data.endswith(b"\n"):
                lines = lines[:-1]
            self.pairs = [orjson.loads(x) for x in lines]
        return self.pairs

    def wait_pairs(self, pred, count: int = 1, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            got = [p for p in self.read_pairs() if pred(p)]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def stats(self) -> dict:
        recs = [r for r in self.logs() if r.get("event") in ("stats", "stats_final")]
        return recs[-1]["counters"] if recs else {}

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        return self.proc.returncode


@pytest.fixture
def start_collector(ebpf_available, tmp_path):
    started: list[Collector] = []

    def start(env: dict[str, str] | None = None, args=None, wait_ready: bool = True,
              python: str = sys.executable) -> Collector:
        d = tmp_path / f"c{len(started)}"
        d.mkdir()
        c = Collector(d, env, args, python=python)
        started.append(c)
        if wait_ready:
            c.wait_log("ready", timeout=120)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for localhost and 127.0.0.1: (cert.pem, key.pem)."""
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return str(crt), str(key)


@pytest.fixture(scope="module")
def collector(ebpf_available, tmp_path_factory):
    """One collector shared by a module's tests (loading BPF takes seconds)."""
    c = Collector(tmp_path_factory.mktemp("collector"))
    c.wait_log("ready", timeout=120)
    yield c
    c.stop()


class PyServer:
    """python's http.server (optionally with TLS) in a subprocess."""

    def __init__(self, script: str, port: int, env=None):
        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-c", script, str(port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start: " + self.proc.stderr.read().decode())

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Nginx:
    """nginx on a loopback port with one `location` answering JSON, plain or TLS."""

    def __init__(self, tmp: Path, location: str, body: str, cert: tuple[str, str] | None = None,
                 http2: bool = False, proxy_to: int | None = None):
        if not os.path.exists("/usr/sbin/nginx"):
            pytest.fail("nginx missing: make test-deps installs it")
        self.port = free_port()
        h2 = " http2" if http2 else ""  # nginx 1.22: `listen ... ssl http2`, `listen ... http2` (cleartext)
        tls = f"ssl{h2}; ssl_certificate {cert[0]}; ssl_certificate_key {cert[1]};" if cert else f"{h2};"
        conf = tmp / "nginx.conf"
        conf.write_text(f"""
daemon off; worker_processes 1; error_log {tmp}/error.log; pid {tmp}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{self.port} {tls}
    location {location} {{ {f"proxy_pass http://127.0.0.1:{proxy_to};" if proxy_to else
                            f"default_type application/json; return 200 '{body}';"} }}
  }}
}}
""")
        self.proc = subprocess.Popen(["/usr/sbin/nginx", "-c", str(conf), "-p", str(tmp)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start: " + (tmp / "error.log").read_text())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


def header(hdrs: str, name: str):
    d = json.loads(hdrs)
    for k, v in d.items():
        if k.lower() == name.lower():
            return v
    return None


def run(cmd, timeout=20, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


__all__ = ["Collector", "Nginx", "PyServer", "free_port", "header", "run", "have", "threading"]


# The application server most tests drive (app_server.py), as a PyServer script.
APP = str(Path(__file__).with_name("app_server.py"))
APP_SCRIPT = f"import runpy, sys; sys.argv = [{APP!r}] + sys.argv[1:]; runpy.run_path({APP!r}, run_name='__main__')"


@pytest.fixture
def app():
    srv = PyServer(APP_SCRIPT, free_port())
    yield srv
    srv.stop()
