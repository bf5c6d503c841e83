"""TLS that terminates in the application: plaintext from uprobes on the TLS
library, tied to its socket, for python (OpenSSL _ex), curl (OpenSSL),
node (static OpenSSL inside the executable), wget (GnuTLS) and nginx."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Nginx, PyServer, free_port, header, run

pytestmark = pytest.mark.ebpf
APP = str(Path(__file__).with_name("app_server.py"))


def start_tls_app(cert) -> PyServer:
    script = (f"import runpy, sys; sys.argv = [{APP!r}] + sys.argv[1:] + [{cert[0]!r}, {cert[1]!r}]; "
              f"runpy.run_path({APP!r}, run_name='__main__')")
    return PyServer(script, free_port())


@pytest.fixture(scope="module")
def tls_app(collector, cert):
    srv = start_tls_app(cert)  # started after `ready`: found through the exec path
    time.sleep(1.5)  # python maps libssl after exec, at import: the scanner rescans
    yield srv
    srv.stop()


def no_tls_records(p: dict) -> None:
    for field in ("requestPayload", "responsePayload", "path", "method"):
        v = p[field]
        assert not v.startswith(("\x16\x03", "\x17\x03", "\x15\x03")), (field, v[:20])
    assert p["method"].isupper()


def for_path(path, direction=None):
    return lambda p: p["path"] == path and (direction is None or p["direction"] == direction)


def test_python_server_curl_client(collector, tls_app):
    r = run(["curl", "-sk", f"https://127.0.0.1:{tls_app.port}/tls/hello?x=1"])
    assert r.returncode == 0, r.stderr
    got = collector.wait_pairs(for_path("/tls/hello?x=1"), count=2)
    by_dir = {p["direction"]: p for p in got}
    assert set(by_dir) == {"1", "2"}, got
    for p in by_dir.values():
        no_tls_records(p)
        assert p["method"] == "GET" and p["statusCode"] == "200"
        assert json.loads(p["responsePayload"]) == {"path": "/tls/hello?x=1", "ok": True}
        assert header(p["requestHeaders"], "host") == f"127.0.0.1:{tls_app.port}"
    assert by_dir["1"]["destIp"] == f"127.0.0.1:{tls_app.port}"
    assert by_dir["2"]["process_name"] == "curl"
    assert by_dir["1"]["process_id"] == str(tls_app.proc.pid)


def test_keep_alive_chunked_gzip_over_tls(collector, tls_app):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", tls_app.port, context=ctx)
    for i in range(5):
        conn.request("GET", f"/tka/{i}")
        conn.getresponse().read()
    conn.request("POST", "/tka/post", body=b'{"a":1}', headers={"Content-Type": "application/json"})
    conn.getresponse().read()
    conn.request("GET", "/chunked")
    assert conn.getresponse().read() == b"hello chunked world"
    conn.request("GET", "/gzip")
    conn.getresponse().read()
    conn.close()
    got = collector.wait_pairs(lambda p: p["path"].startswith("/tka/") and p["direction"] == "1", count=6)
    assert sorted(p["path"] for p in got) == sorted([f"/tka/{i}" for i in range(5)] + ["/tka/post"])
    post = [p for p in got if p["method"] == "POST"][0]
    assert json.loads(post["requestPayload"]) == {"a": 1}
    ch = collector.wait_pairs(lambda p: p["path"] == "/chunked" and p["direction"] == "1"
                              and p["destIp"].endswith(f":{tls_app.port}"))
    assert ch and ch[0]["responsePayload"] == "hello chunked world"
    gz = collector.wait_pairs(lambda p: p["path"] == "/gzip" and p["destIp"].endswith(f":{tls_app.port}"))
    assert gz and json.loads(gz[0]["responsePayload"]) == {"compressed": True}
    for p in got:
        no_tls_records(p)


def test_900kb_tls_document_written_in_one_call_arrives_whole(collector, tls_app):
    # Python's SSL_write of the whole body: one uprobe return of ~900 KB, copied whole.
    doc = json.dumps({"items": ["%08d" % i for i in range(900_000 // 11)]})
    r = run(["curl", "-sk", "-o", "/dev/null", f"https://127.0.0.1:{tls_app.port}/document?n=900000"])
    assert r.returncode == 0
    for direction in ("1", "2"):
        p = collector.wait_pairs(for_path("/document?n=900000", direction), timeout=20)[0]
        assert p["responsePayloadCut"] == "false" and p["responsePayload"] == doc and p["tls"] == "true"


def test_large_tls_body_cut_and_flagged(collector, tls_app):
    r = run(["curl", "-sk", "-o", "/dev/null", f"https://127.0.0.1:{tls_app.port}/big?n=2000000"])
    assert r.returncode == 0
    p = collector.wait_pairs(for_path("/big?n=2000000", "1"), timeout=20)
    assert p, "2 MB TLS response not captured"
    assert p[0]["responsePayloadCut"] == "true"
    assert p[0]["responsePayload"].startswith("xxxx")


def test_wget_gnutls_client(collector, tls_app):
    if not shutil.which("wget"):
        pytest.fail("wget missing: make test-deps installs it")
    r = run(["wget", "-q", "-O", "-", "--no-check-certificate", f"https://127.0.0.1:{tls_app.port}/wget/x"])
    assert r.returncode == 0, r.stderr
    got = collector.wait_pairs(for_path("/wget/x", "2"))
    assert got, "wget (GnuTLS) side not captured"
    p = got[0]
    no_tls_records(p)
    assert p["process_name"] == "wget"
    assert header(p["requestHeaders"], "user-agent").startswith("Wget")
    assert json.loads(p["responsePayload"])["path"] == "/wget/x"


NODE_SERVER = r"""
const https = require('https'), fs = require('fs');
const [port, cert, key] = process.argv.slice(1);
https.createServer({cert: fs.readFileSync(cert), key: fs.readFileSync(key)}, (req, res) => {
  let body = '';
  req.on('data', d => body += d);
  req.on('end', () => { res.setHeader('content-type', 'application/json');
                        res.end(JSON.stringify({node: true, url: req.url, got: body.length})); });
}).listen(+port, '127.0.0.1', () => console.log('listening'));
"""

NODE_CLIENT = r"""
const https = require('https');
const [port, path] = process.argv.slice(1);
const req = https.request({host: '127.0.0.1', port: +port, path, method: 'POST', rejectUnauthorized: false,
                           headers: {'content-type': 'application/json'}}, res => {
  let b = ''; res.on('data', d => b += d); res.on('end', () => { console.log(b); });
});
req.end(JSON.stringify({from: 'node'}));
"""


def test_node_server_and_client(collector, cert):
    port = free_port()
    srv = subprocess.Popen(["node", "-e", NODE_SERVER, str(port), *cert], stdout=subprocess.PIPE)
    try:
        assert srv.stdout.readline().strip() == b"listening"
        time.sleep(1.0)  # exec-triggered scan attaches to /usr/bin/node
        r = run(["node", "-e", NODE_CLIENT, str(port), "/node/call"])
        assert r.returncode == 0 and b'"node":true' in r.stdout, r.stderr
        got = collector.wait_pairs(for_path("/node/call"), count=2)
        by_dir = {p["direction"]: p for p in got}
        assert set(by_dir) == {"1", "2"}, got
        for p in by_dir.values():
            no_tls_records(p)
            assert p["method"] == "POST"
            assert json.loads(p["requestPayload"]) == {"from": "node"}
            assert json.loads(p["responsePayload"]) == {"node": True, "url": "/node/call", "got": 15}
            assert p["process_name"] == "node"
        assert by_dir["1"]["destIp"] == f"127.0.0.1:{port}"
    finally:
        srv.kill()
        srv.wait()


def test_nginx_tls_server(collector, cert, tmp_path):
    ng = Nginx(tmp_path, "/ngs", '{"nginx":"tls"}', cert=cert)
    try:
        r = run(["curl", "-sk", f"https://127.0.0.1:{ng.port}/ngs/a"])
        assert r.returncode == 0 and b"tls" in r.stdout
        got = collector.wait_pairs(for_path("/ngs/a", "1"))
        assert got, "nginx TLS server side not captured"
        no_tls_records(got[0])
        assert json.loads(got[0]["responsePayload"]) == {"nginx": "tls"}
        assert got[0]["process_name"] == "nginx"
    finally:
        ng.stop()


def test_uprobes_logged(collector, tls_app):
    rec = collector.wait_log("uprobe_attached", pred=lambda r: "libssl" in r.get("library", ""))
    assert "SSL_read_ex" in rec["symbols"] or "SSL_read" in rec["symbols"]


# -- modes, each with its own collector ----------------------------------------------

def test_server_started_before_collector_and_tls_only_mode(start_collector, cert):
    srv = start_tls_app(cert)
    plain = PyServer(f"import runpy, sys; sys.argv = [{APP!r}] + sys.argv[1:]; runpy.run_path({APP!r}, run_name='__main__')",
                     free_port())
    try:
        c = start_collector({"CAPTURE_ALL": "false", "CAPTURE_SSL": "true"})
        assert run(["curl", "-sk", f"https://127.0.0.1:{srv.port}/before/tls"]).returncode == 0
        assert run(["curl", "-s", f"http://127.0.0.1:{plain.port}/before/plain"]).returncode == 0
        got = c.wait_pairs(for_path("/before/tls", "1"))
        assert got, "TLS server started before the collector not captured"
        time.sleep(1.0)
        assert not [p for p in c.read_pairs() if p["path"] == "/before/plain"]
    finally:
        srv.stop()
        plain.stop()


def test_capture_ssl_false_captures_no_tls(start_collector, cert):
    c = start_collector({"CAPTURE_SSL": "false"})
    srv = start_tls_app(cert)
    plain = PyServer(f"import runpy, sys; sys.argv = [{APP!r}] + sys.argv[1:]; runpy.run_path({APP!r}, run_name='__main__')",
                     free_port())
    try:
        time.sleep(1.0)
        assert run(["curl", "-sk", f"https://127.0.0.1:{srv.port}/nossl"]).returncode == 0
        # Positive control: the same collector captures plaintext ...
        assert run(["curl", "-s", f"http://127.0.0.1:{plain.port}/plain-while-nossl"]).returncode == 0
        assert c.wait_pairs(for_path("/plain-while-nossl", "1"))
        # ... and saw the TLS connection, as ciphertext, judged not HTTP.
        c.wait_log("stats", pred=lambda r: r["counters"].get("kernel.not_http_connections", 0) >= 2)
        assert not [p for p in c.read_pairs() if p["path"] == "/nossl"]
        assert not [p for p in c.read_pairs() if "\x16\x03" in p.get("path", "")]
        assert not [r for r in c.logs() if r.get("event") == "uprobe_attached"]
    finally:
        srv.stop()
        plain.stop()
