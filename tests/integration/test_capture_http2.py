"""HTTP/2 and gRPC against real peers: nginx (TLS and cleartext) with curl, node's
http2 module (TLS, many streams, a session opened before the collector), grpcio
(unary and server streaming), an Upgrade: h2c exchange; every message passes the
acceptance rules of Akto's runtime parser."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys

import orjson
import pytest

from conftest import REPO, Nginx, free_port, header, run

pytestmark = pytest.mark.ebpf
PEERS = REPO / "tests" / "peers"


def akto_acceptable(p: dict) -> None:
    """What Akto's runtime parser requires of a message (docs/message.md)."""
    assert all(isinstance(v, str) for v in p.values()), p
    int(p["statusCode"])
    int(p["time"])
    assert p["source"] == "MIRRORING" and p["is_pending"] == "false" and p["direction"] in ("1", "2")
    for field in ("requestHeaders", "responseHeaders", "tag"):
        doc = json.loads(p[field])
        assert isinstance(doc, dict) and all(isinstance(v, str) for v in doc.values()), (field, doc)
    assert "host" in json.loads(p["requestHeaders"])
    body = p["requestPayload"].lstrip()
    if body[:1] in ("{", "["):  # the consumer drops a sample whose JSON body looks cut
        json.loads(body)


def for_path(path, direction=None):
    return lambda p: p["path"] == path and (direction is None or p["direction"] == direction)


def both_sides(collector, path, count=2, timeout=15):
    """The HTTP/2 pairs of ``path``, by direction (a proxy's HTTP/1 leg to its app is not among them)."""
    def h2(p):
        return for_path(path)(p) and p["type"] in ("HTTP/2.0", "gRPC")
    got = collector.wait_pairs(h2, count=count, timeout=timeout)
    by_dir = {p["direction"]: p for p in got}
    assert set(by_dir) == {"1", "2"}, got
    for p in by_dir.values():
        akto_acceptable(p)
    return by_dir


@pytest.fixture(scope="module")
def app(collector):
    from conftest import PyServer

    script = (f"import runpy, sys; sys.argv = [{str(REPO / 'tests' / 'integration' / 'app_server.py')!r}] + sys.argv[1:]; "
              f"runpy.run_path(sys.argv[0], run_name='__main__')")
    srv = PyServer(script, free_port())
    yield srv
    srv.stop()


def test_nginx_http2_over_tls_and_cleartext_with_curl(collector, cert, tmp_path, app):
    (tmp_path / "tls").mkdir()
    (tmp_path / "clear").mkdir()
    # nginx terminates HTTP/2 and proxies to an HTTP/1.1 app, so it reads the request bodies.
    tls = Nginx(tmp_path / "tls", "/h2", "", cert=cert, http2=True, proxy_to=app.port)
    clear = Nginx(tmp_path / "clear", "/h2c", "", http2=True, proxy_to=app.port)
    try:
        cases = []
        for base, prefix, flag, is_tls in ((f"https://127.0.0.1:{tls.port}", "/h2", "--http2", "true"),
                                           (f"http://127.0.0.1:{clear.port}", "/h2c", "--http2-prior-knowledge", "false")):
            get = run(["curl", "-sk", flag, f"{base}{prefix}/get?x=1"])
            assert json.loads(get.stdout) == {"path": f"{prefix}/get?x=1", "ok": True}
            body = json.dumps({"user": "ann", "via": prefix})
            post = run(["curl", "-sk", flag, "-H", "content-type: application/json", "-d", body, f"{base}{prefix}/post"])
            assert json.loads(post.stdout)["received"] == len(body)
            cases += [(f"{prefix}/get?x=1", "GET", "", is_tls, base), (f"{prefix}/post", "POST", body, is_tls, base)]
        for path, method, body, is_tls, base in cases:
            sides = both_sides(collector, path)
            for p in sides.values():
                assert p["type"] == "HTTP/2.0" and p["statusCode"] == ("201" if body else "200") and p["tls"] == is_tls
                assert p["method"] == method
                assert header(p["requestHeaders"], "host") == base.split("//")[1]
                assert not any(k.startswith(":") for k in json.loads(p["requestHeaders"]))
                response = json.loads(p["responsePayload"])
                if body:
                    assert json.loads(p["requestPayload"]) == json.loads(body)
                    assert response["received"] == len(body)
                else:
                    assert p["requestPayload"] == "" and response == {"path": path, "ok": True}
            assert sides["1"]["process_name"] == "nginx" and sides["2"]["process_name"] == "curl"
    finally:
        tls.stop()
        clear.stop()


def node(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen(["node", *map(str, args)], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, **kw)


@contextlib.contextmanager
def node_session(cert, prefix: str):
    """node's HTTP/2 server and a client session of 20 concurrent streams a batch on it, its first
    batch (``<prefix>first/<i>``) done; ``batch`` runs the next ones on the same session."""
    port = free_port()
    srv = node(PEERS / "node" / "h2server.js", port, *cert)
    client = None
    try:
        assert srv.stdout.readline().strip() == "listening"
        client = node(PEERS / "node" / "h2client.js", port, prefix, 20)
        assert client.stdout.readline().strip() == "done first"
        yield client
    finally:
        if client is not None:
            client.stdin.close()
            client.wait(10)
        srv.kill()
        srv.wait()


def batch(client, tag: str) -> None:
    client.stdin.write(f"{tag}\n")
    client.stdin.flush()
    assert client.stdout.readline().strip() == f"done {tag}"


def test_node_http2_many_streams_and_a_session_older_than_the_collector(start_collector, cert):
    with node_session(cert, "/node/") as client:  # its first batch before the collector: its table is unseen
        c = start_collector()
        batch(client, "later")
        batch(client, "again")
        # The server side of every later request; the client's side from when node's session could be
        # tied to its socket: node runs OpenSSL over memory BIOs, so a session the collector joined is
        # known only from its first read on (its writes before that are counted, not guessed).
        expect = {"later": ("1",), "again": ("1", "2")}
        for tag, directions in expect.items():
            got = c.wait_pairs(lambda p, t=tag: p["path"].startswith(f"/node/{t}/"), count=20 * len(directions),
                               timeout=20)
            by = {(p["path"], p["direction"]): p for p in got}
            assert {d for _, d in by} >= set(directions) and len(by) >= 20 * len(directions), sorted(by)
            for (path, direction), p in by.items():
                akto_acceptable(p)
                i = int(path.rsplit("/", 1)[1])
                assert p["method"] == "POST" and p["statusCode"] == "200" and p["tls"] == "true"
                assert json.loads(p["requestPayload"]) == {"tag": tag, "i": i}
                assert json.loads(p["responsePayload"]) == {"path": path, "method": "POST",
                                                            "got": json.dumps({"tag": tag, "i": i}, separators=(",", ":"))}
                assert p["process_name"] == "node"
        # The client's answers to requests it was not seen sending are counted (when their streams end).
        stats = c.wait_log("stats", timeout=30, pred=lambda r: r["counters"].get("kernel.dropped.tls_no_fd", 0) >= 1
                           and r["counters"].get("http2.unpaired_response", 0) >= 20)["counters"]
        # Header fields the session's table held from before the collector are unknown, counted, not guessed.
        assert stats.get("http2.fields_unknown", 0) > 0
        assert not [p for p in c.read_pairs() if "/first/" in p["path"]]


def test_grpc_unary_and_server_streaming(collector):
    port = free_port()
    peer = PEERS / "python" / "grpc_peer.py"
    srv = subprocess.Popen([sys.executable, str(peer), "serve", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "listening"
        r = run([sys.executable, str(peer), "call", str(port), "5"], timeout=30)
        assert r.returncode == 0, r.stderr
        unary = both_sides(collector, "/demo.Echo/Unary")
        for p in unary.values():
            assert p["type"] == "gRPC" and p["method"] == "POST" and p["statusCode"] == "200"
            assert base64.b64decode(p["requestPayload"]) == b"hello-grpc"
            assert base64.b64decode(p["responsePayload"]) == b"echo:hello-grpc"
            assert json.loads(p["requestGrpcMessageSizes"]) == [10]
            assert json.loads(p["responseGrpcMessageSizes"]) == [15]
            assert header(p["responseHeaders"], "grpc-status") == "0"
            assert header(p["requestHeaders"], "content-type").startswith("application/grpc")
        stream = both_sides(collector, "/demo.Echo/Stream")
        for p in stream.values():
            assert p["type"] == "gRPC"
            assert base64.b64decode(p["requestPayload"]) == b"5"
            assert base64.b64decode(p["responsePayload"]) == b"".join(b"part-%d" % i for i in range(5))
            assert json.loads(p["responseGrpcMessageSizes"]) == [6] * 5
            assert header(p["responseHeaders"], "grpc-status") == "0"
    finally:
        srv.kill()
        srv.wait()


def test_upgrade_h2c_continues_as_http2(collector):
    port = free_port()
    srv = subprocess.Popen([sys.executable, str(PEERS / "python" / "h2c_server.py"), str(port)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "listening"
        r = run(["curl", "-s", "--http2", f"http://127.0.0.1:{port}/upgraded"])  # curl asks for h2c
        assert json.loads(r.stdout) == {"path": "/upgraded", "h2c": True}
        sides = both_sides(collector, "/upgraded")
        for p in sides.values():
            assert p["statusCode"] == "200"
            assert json.loads(p["responsePayload"]) == {"path": "/upgraded", "h2c": True}
            assert header(p["requestHeaders"], "upgrade") == "h2c"
        # The stats line comes every second: wait for the one that counts both switches.
        collector.wait_log("stats", timeout=10, pred=lambda r: r["counters"].get("stream.protocol_switch", 0) >= 2)
    finally:
        srv.kill()
        srv.wait()


def test_every_captured_http2_message_is_acceptable(collector):
    for p in collector.read_pairs():
        if p["type"] in ("HTTP/2.0", "gRPC"):
            akto_acceptable(p)
    assert orjson.loads  # (the JSON lines themselves were parsed by read_pairs)
    assert os.path.exists(collector.out_path)


def shed_pairs(collector, prefix: str, count: int) -> dict:
    """The ``count`` pairs of paths under ``prefix``, by (path, direction), each acceptable to Akto."""
    got = collector.wait_pairs(lambda p: p["path"].startswith(prefix), count=count, timeout=30)
    by = {(p["path"], p["direction"]): p for p in got}
    assert len(by) == count, sorted(by)
    for p in by.values():
        akto_acceptable(p)
    return by


def shed_and_nothing_lost(collector, pairs: int) -> dict:
    """The stats once ``pairs`` were emitted: payloads shed and counted, every header block there
    (no field unknown, no framing lost, nothing counted lost)."""
    counters = collector.wait_log("stats", timeout=20, pred=lambda r: r["counters"].get("pairs", 0) >= pairs)["counters"]
    assert counters["kernel.dropped.shed_bytes"] > 0 and counters["kernel.dropped.shed_calls"] > 0
    for lost in ("http2.fields_unknown", "http2.resync_bytes", "http.lost_bytes", "http.uncopied_bytes"):
        assert not counters.get(lost), (lost, counters)
    return counters


def test_shedding_keeps_http2_headers_and_leaves_out_data_payloads(start_collector, cert):
    """While shedding, an HTTP/2 connection is never shed midway: its header blocks are all
    copied (the HPACK table stays whole for as long as the connection lives), its DATA payloads
    are left out, counted, and the bodies marked cut."""
    c = start_collector({"_AKTO_TEST_SHED_ALWAYS": "1"})
    with node_session(cert, "/shed/") as client:
        batch(client, "later")
        by = shed_pairs(c, "/shed/", 80)
        cut = 0
        for (path, _), p in by.items():
            tag, i = path.split("/")[2:]
            assert p["method"] == "POST" and p["statusCode"] == "200" and p["tls"] == "true"
            assert header(p["requestHeaders"], "x-request-id").startswith(f"{tag}-{i}-")
            assert header(p["requestHeaders"], "content-type") == "application/json"
            # A call the kernel could not walk is copied whole: then exact.
            if p["requestPayloadCut"] == "false":
                assert json.loads(p["requestPayload"]) == {"tag": tag, "i": int(i)}
            if p["responsePayloadCut"] == "false":
                assert json.loads(p["responsePayload"])["path"] == path
            cut += (p["requestPayloadCut"] == "true") + (p["responsePayloadCut"] == "true")
        assert cut >= 80, cut
        shed_and_nothing_lost(c, 80)


def test_shedding_follows_frames_across_calls_on_cleartext(start_collector):
    """Prior-knowledge HTTP/2 on cleartext, read 4 KiB at a time: DATA frames of 16 KiB span several
    reads, so the kernel carries the frame it is inside from one call to the next; every header block
    is still whole and every body marked cut."""
    c = start_collector({"_AKTO_TEST_SHED_ALWAYS": "1"})
    port = free_port()
    peer = PEERS / "python" / "h2_prior.py"
    srv = subprocess.Popen([sys.executable, str(peer), "serve", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "listening"
        r = run([sys.executable, str(peer), "call", str(port), "5", "40000"], timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == b"done", r.stderr
        by = shed_pairs(c, "/prior/", 10)
        cut = 0
        for (path, _), p in by.items():
            assert p["type"] == "HTTP/2.0" and p["method"] == "POST" and p["statusCode"] == "200"
            assert header(p["requestHeaders"], "x-request-id") == "prior-" + path.rsplit("/", 1)[1]
            for half in ("request", "response"):  # cut, or (a call the kernel could not walk) exact
                if p[half + "PayloadCut"] == "true":
                    cut += 1
                else:
                    assert json.loads(p[half + "Payload"])["path"] == path
        assert cut >= 18, cut  # the frames are followed from the preface on, across calls
        counters = shed_and_nothing_lost(c, 10)
        assert counters["kernel.dropped.shed_bytes"] >= 2 * 2 * 5 * 39000  # both ways, seen by both processes
    finally:
        srv.kill()
        srv.wait()
