"""End-to-end plaintext capture: real kernel, real servers and clients, loopback."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import APP_SCRIPT, Nginx, PyServer, free_port, header, run

pytestmark = pytest.mark.ebpf


@pytest.fixture(scope="module")
def app(collector):
    srv = PyServer(APP_SCRIPT, free_port())
    yield srv
    srv.stop()


def for_path(path: str, direction: str | None = None):
    def pred(p):
        return p["path"] == path and (direction is None or p["direction"] == direction)
    return pred


def test_curl_get_both_sides(collector, app):
    r = run(["curl", "-s", f"http://127.0.0.1:{app.port}/api/users?id=1"])
    assert r.returncode == 0
    got = collector.wait_pairs(for_path("/api/users?id=1"), count=2)
    by_dir = {p["direction"]: p for p in got}
    assert set(by_dir) == {"1", "2"}, got
    server, client = by_dir["1"], by_dir["2"]
    for p in (server, client):
        assert p["method"] == "GET"
        assert p["type"] == "HTTP/1.1"
        assert p["statusCode"] == "200"
        assert p["status"] == "200 OK"
        assert json.loads(p["responsePayload"]) == {"path": "/api/users?id=1", "ok": True}
        assert header(p["requestHeaders"], "host") == f"127.0.0.1:{app.port}"
        assert header(p["requestHeaders"], "user-agent").startswith("curl/")
        assert header(p["responseHeaders"], "content-type") == "application/json"
        assert p["requestPayload"] == ""
        assert p["is_pending"] == "false" and p["source"] == "MIRRORING"
        assert all(isinstance(v, str) for v in p.values())
        assert abs(int(p["time"]) - time.time()) < 60
    # As Akto's collector: "ip" is the client end, "destIp" the server end, seen from either side.
    assert server["destIp"] == client["destIp"] == f"127.0.0.1:{app.port}"
    assert server["ip"].startswith("127.0.0.1:") and server["ip"] != server["destIp"]
    assert client["ip"] == server["ip"]
    assert server["process_id"] == str(app.proc.pid)
    assert client["process_name"] == "curl"


def test_keep_alive_many_requests_and_post_json(collector, app):
    conn = http.client.HTTPConnection("127.0.0.1", app.port)
    for i in range(20):
        conn.request("GET", f"/ka/{i}")
        assert conn.getresponse().read()
    body = json.dumps({"user": "ann", "roles": ["a", "b"]})
    conn.request("POST", "/ka/post", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 201
    resp.read()  # a client that never reads the body has no complete response to pair
    conn.close()
    got = collector.wait_pairs(lambda p: p["path"].startswith("/ka/") and p["direction"] == "1", count=21)
    paths = sorted(p["path"] for p in got)
    assert len(paths) == 21, paths
    assert {f"/ka/{i}" for i in range(20)} <= set(paths)
    post = [p for p in got if p["path"] == "/ka/post"][0]
    assert post["method"] == "POST"
    assert json.loads(post["requestPayload"]) == {"user": "ann", "roles": ["a", "b"]}
    assert post["statusCode"] == "201"
    assert json.loads(post["responsePayload"])["received"] == len(body)
    # the client side (this test process) is captured too, as egress
    client = collector.wait_pairs(lambda p: p["path"].startswith("/ka/") and p["direction"] == "2", count=21)
    assert len(client) == 21


def test_chunked_gzip_head_204(collector, app):
    for args in (["/chunked"], ["/gzip"], ["-I", "/head"], ["/empty"]):
        url = f"http://127.0.0.1:{app.port}{args[-1]}"
        assert run(["curl", "-s", *args[:-1], url]).returncode == 0
    chunked = collector.wait_pairs(for_path("/chunked", "1"))[0]
    assert chunked["responsePayload"] == "hello chunked world"
    gz = collector.wait_pairs(for_path("/gzip", "1"))[0]
    assert json.loads(gz["responsePayload"]) == {"compressed": True}
    head = collector.wait_pairs(for_path("/head", "1"))[0]
    assert head["method"] == "HEAD" and head["responsePayload"] == "" and head["statusCode"] == "200"
    empty = collector.wait_pairs(for_path("/empty", "1"))[0]
    assert empty["statusCode"] == "204" and empty["responsePayload"] == ""


def test_pipelined_requests_raw_socket(collector, app):
    s = socket.create_connection(("127.0.0.1", app.port))
    reqs = b"".join(b"GET /pipe/%d HTTP/1.1\r\nHost: pipe.local\r\n\r\n" % i for i in range(5))
    s.sendall(reqs)
    data = b""
    deadline = time.monotonic() + 5
    while data.count(b"HTTP/1.1 200") < 5 and time.monotonic() < deadline:
        data += s.recv(65536)
    s.close()
    got = collector.wait_pairs(lambda p: p["path"].startswith("/pipe/") and p["direction"] == "1", count=5)
    assert sorted(p["path"] for p in got) == [f"/pipe/{i}" for i in range(5)]
    for p in got:
        assert json.loads(p["responsePayload"])["path"] == p["path"]


def test_large_body_is_cut_and_flagged(collector, app):
    r = run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{app.port}/big?n=5000000"])
    assert r.returncode == 0
    p = collector.wait_pairs(for_path("/big?n=5000000", "1"), timeout=20)[0]
    assert p["statusCode"] == "200"
    assert p.get("responsePayloadCut") == "true", {k: v for k, v in p.items() if "Payload" not in k}
    assert len(p["responsePayload"]) <= 1_100_000
    assert p["responsePayload"].startswith("xxxx")


def test_900kb_document_written_in_one_call_arrives_whole(collector, app):
    # The server writes the body with one send() of ~900 KB, the client sends a ~900 KB body with one
    # sendall(): both are copied whole (no per-call cap below AKTO_MAX_BODY_BYTES, 1 MiB by default).
    doc = json.dumps({"items": ["%08d" % i for i in range(900_000 // 11)]})
    r = run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{app.port}/document?n=900000"])
    assert r.returncode == 0
    for direction in ("1", "2"):
        p = collector.wait_pairs(for_path("/document?n=900000", direction), timeout=20)[0]
        assert p["responsePayloadCut"] == "false" and p["responsePayloadSize"] == str(len(doc))
        assert p["responsePayload"] == doc
    body = b'{"blob":"' + b"y" * 900_000 + b'"}'
    c = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    c.request("POST", "/upload-900k", body=body, headers={"Content-Type": "application/json"})
    assert c.getresponse().read()
    c.close()
    for direction in ("1", "2"):
        p = collector.wait_pairs(for_path("/upload-900k", direction), timeout=20)[0]
        assert p["requestPayloadCut"] == "false" and p["requestPayload"] == body.decode()


def test_not_http_server_produces_nothing(collector, app):
    before = collector.stats().get("kernel.not_http_connections", 0)
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-c", f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', {port})); s.listen()
for _ in range(3):
    c, _ = s.accept(); c.recv(100); c.sendall(b'\\x00\\x00\\x00\\x08binary!!' * 10); c.close()
"""])
    time.sleep(0.3)
    for _ in range(3):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2fREDIS*1\r\n$4\r\nPING\r\n")
        c.recv(100)
        c.close()
    srv.wait(5)
    # The kernel saw those connections and judged them not HTTP (both ends of each) ...
    collector.wait_log("stats", pred=lambda r: r["counters"].get("kernel.not_http_connections", 0) >= before + 6)
    # ... while HTTP on the same collector, right after, is captured.
    assert run(["curl", "-s", f"http://127.0.0.1:{app.port}/after-binary"]).returncode == 0
    assert collector.wait_pairs(for_path("/after-binary", "1"))
    assert not [p for p in collector.read_pairs() if str(port) in p["ip"] + p["destIp"]]


def test_nginx_server(collector, tmp_path):
    ng = Nginx(tmp_path, "/ng", '{"nginx":true}')
    try:
        assert run(["curl", "-s", f"http://127.0.0.1:{ng.port}/ng/x"]).returncode == 0
        p = collector.wait_pairs(for_path("/ng/x", "1"))[0]
        assert json.loads(p["responsePayload"]) == {"nginx": True}
        assert p["process_name"] == "nginx"
        assert header(p["responseHeaders"], "server").startswith("nginx")
    finally:
        ng.stop()


def test_stats_and_clean_counters(collector):
    collector.wait_log("stats")
    stats = collector.stats()
    assert stats.get("kernel.dropped.ringbuf_full", 0) == 0
    assert stats.get("queue.dropped_records", 0) == 0


def test_concurrent_clients_bytes_never_mixed(collector, app):
    """Many threads on both CPUs at once: each captured body must be exactly
    its own (a scratch buffer shared across preempted programs would mix them)."""
    import threading

    errors = []

    def client(t):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", app.port)
            for i in range(40):
                body = (f"t{t}-r{i}-" * (1 + (i * 37) % 300)).encode()
                conn.request("POST", f"/mix/{t}/{i}", body=body)
                assert json.loads(conn.getresponse().read())["received"] == len(body)
            conn.close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    got = collector.wait_pairs(lambda p: p["path"].startswith("/mix/") and p["direction"] == "1", count=320,
                               timeout=30)
    assert len(got) == 320
    for p in got:
        _, _, t, i = p["path"].split("/")
        i = int(i)
        assert p["requestPayload"] == f"t{t}-r{i}-" * (1 + (i * 37) % 300), p["path"]
        assert json.loads(p["responsePayload"])["received"] == len(p["requestPayload"])


def test_requests_written_with_iovecs_arrive_whole(collector, app):
    """sendmsg with several buffers: a few that fit one record (gathered into one
    in the kernel), more buffers than are gathered, more bytes than are gathered,
    an empty buffer among them. The client's copy of each request is exact."""
    cases = {
        "few": lambda head, body: [head[:10], head[10:], body],
        "many": lambda head, body: [head] + [body[i:i + 40] for i in range(0, len(body), 40)],
        "large": lambda head, body: [head, body, body, body],
        "empty": lambda head, body: [head, b"", body],
    }
    s = socket.create_connection(("127.0.0.1", app.port))
    for name, layout in cases.items():
        body = (f"{name}-" * (3000 if name == "large" else 100)).encode()
        sent = body * 3 if name == "large" else body
        head = b"POST /iov/%s HTTP/1.1\r\nHost: iov.local\r\nContent-Length: %d\r\n\r\n" % (name.encode(), len(sent))
        bufs = layout(head, body)
        assert sum(map(len, bufs)) == len(head) + len(sent)
        assert s.sendmsg(bufs) == len(head) + len(sent)
        resp = b""
        while b'"received"' not in resp or not resp.endswith(b"}"):
            resp += s.recv(65536)
    s.close()
    for name in cases:
        for direction in ("1", "2"):
            p = collector.wait_pairs(for_path(f"/iov/{name}", direction))[0]
            assert p["requestPayloadCut"] == "false", (name, direction)
            assert json.loads(p["responsePayload"])["received"] == len(p["requestPayload"])
            assert p["requestPayload"].startswith(f"{name}-") and set(p["requestPayload"].split("-")) == {name, ""}


def bpf_program_ids() -> set[int]:
    out = subprocess.run(["bpftool", "--json", "prog", "show"], capture_output=True, text=True).stdout
    return {p["id"] for p in json.loads(out or "[]")}


def programs_held_by(pid: int) -> set[int]:
    """IDs of the BPF programs whose fds process `pid` holds (from fdinfo)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def test_connection_opened_before_collector_and_nothing_left_after_exit(start_collector):
    """A keep-alive connection (and a server thread already blocked in its
    read) from before the collector started is picked up at its next
    request; after SIGTERM no program of ours stays loaded."""
    srv = PyServer(APP_SCRIPT, free_port())
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port)
        conn.request("GET", "/pre/0")
        conn.getresponse().read()
        c = start_collector()  # the server thread sits in recv() on this connection now
        ours = programs_held_by(c.proc.pid)
        assert len(ours) > 20
        for i in range(1, 4):
            conn.request("GET", f"/pre/{i}")
            conn.getresponse().read()
        got = c.wait_pairs(lambda p: p["path"].startswith("/pre/") and p["direction"] == "1", count=3)
        assert sorted(p["path"] for p in got) == ["/pre/1", "/pre/2", "/pre/3"]
        for p in got:
            assert p["destIp"] == f"127.0.0.1:{srv.port}"
            assert p["ip"].startswith("127.0.0.1:") and p["ip"] != "127.0.0.1:0"
        conn.close()
        t0 = time.monotonic()
        assert c.stop() == 0
        assert time.monotonic() - t0 < 10
        assert not ours & bpf_program_ids()
        assert Path("/sys/kernel/tracing/uprobe_events").read_text().strip() == ""
    finally:
        srv.stop()


def test_untraced_socket_bytes_are_counted(collector):
    """splice() moves socket bytes through no buffer we can read: counted, not silent."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname())
    s2, _ = srv.accept()
    r, w = os.pipe()
    os.write(w, b"GET /spliced HTTP/1.1\r\n\r\n" + b"x" * 5000)
    os.splice(r, c.fileno(), 5025)
    s2.recv(10000)
    for s in (c, s2, srv):
        s.close()
    rec = collector.wait_log("stats", pred=lambda r: r["counters"].get("kernel.untraced_socket_bytes", 0) >= 5025)
    assert rec
