"""MessageEncoder: the Akto message contract, golden messages of the recorded streams, cut marking."""

from __future__ import annotations

import json
import os

import orjson
import pytest

from akto_collector.events import ROLE_CLIENT, ROLE_SERVER, ConnId, ConnMeta, Exchange, HttpRequest, HttpResponse
from akto_collector.message import MessageEncoder, header_map
from test_http_replay import DATA, STREAMS, load, run

CONTRACT_FIELDS = [
    "path", "method", "type", "requestHeaders", "responseHeaders", "requestPayload", "responsePayload",
    "statusCode", "status", "ip", "destIp", "time", "direction", "is_pending", "source",
    "akto_account_id", "akto_vxlan_id", "process_id", "socket_id", "process_name", "daemonset_id", "tag",
]
META = ConnMeta(pid=4242, fd=17, comm="python3", local="10.0.2.7:8080", peer="10.0.1.5:43210",
                tag='{"pod":"api-7f9","namespace":"shop"}')
ENC = MessageEncoder(account_id="1000000", vxlan_id="0", daemonset_id="ds-test")


def ex(role=ROLE_SERVER, req_body=b"", req_cut=False, resp_body=b"{}", resp_cut=False, req_headers=None, target="/x"):
    req = HttpRequest("POST", target, "HTTP/1.1", req_headers if req_headers is not None else [("Host", "svc")],
                      req_body, req_cut, len(req_body) * (3 if req_cut else 1), 1764135000.7)
    resp = HttpResponse("HTTP/1.1", 200, "OK", [("Content-Type", "application/json")], resp_body, resp_cut,
                        len(resp_body) * (3 if resp_cut else 1), 1764135001.0)
    return Exchange(ConnId(4242, 17, 1), role, False, req, resp)


def decode(value: bytes) -> dict:
    return json.loads(value)


# -- the consumer's view, as akto-message.md describes it -----------------

def consumer_drops(msg: dict) -> bool:
    """The Akto sample parser's rule: no content-type means JSON; a JSON-looking cut body drops the sample."""
    headers = {k.lower(): v for k, v in json.loads(msg["requestHeaders"]).items()}
    ctype = headers.get("content-type", "application/json")
    body = msg["requestPayload"].strip()
    if "json" in ctype and body[:1] in ("{", "["):
        closing = "}" if body[0] == "{" else "]"
        return not body.endswith(closing)
    return False


def test_every_contract_field_is_a_string():
    key, value = ENC.encode(ex(), META)
    msg = decode(value)
    for f in CONTRACT_FIELDS:
        assert isinstance(msg[f], str), f
    assert all(isinstance(v, str) for v in msg.values())
    assert key == b"10.0.1.5"
    assert msg["ip"] == "10.0.1.5:43210" and msg["destIp"] == "10.0.2.7:8080"
    assert msg["time"] == "1764135000" and msg["direction"] == "1"
    assert msg["is_pending"] == "false" and msg["source"] == "MIRRORING"
    assert json.loads(msg["tag"]) == {"pod": "api-7f9", "namespace": "shop"}
    assert msg["process_id"] == "4242" and msg["socket_id"] == "17" and msg["process_name"] == "python3"
    assert msg["status"] == "200 OK" and msg["statusCode"] == "200"


def test_client_role_direction_and_key():
    key, value = ENC.encode(ex(role=ROLE_CLIENT), META)
    assert decode(value)["direction"] == "2"
    assert key == b"10.0.2.7"  # the client is this process: its own IP


@pytest.mark.parametrize("role, direction", [(ROLE_SERVER, "1"), (ROLE_CLIENT, "2")])
def test_ip_is_the_client_end_and_dest_ip_the_server_end_in_both_directions(role, direction):
    """As Akto's own collector: ingress sends (remote, local), egress (local, remote)."""
    msg = decode(ENC.encode(ex(role=role), META)[1])
    assert msg["direction"] == direction
    if role == ROLE_SERVER:  # a client at 10.0.1.5 called this process
        assert (msg["ip"], msg["destIp"]) == ("10.0.1.5:43210", "10.0.2.7:8080")
    else:  # this process at 10.0.2.7 called the peer
        assert (msg["ip"], msg["destIp"]) == ("10.0.2.7:8080", "10.0.1.5:43210")
    key = ENC.encode(ex(role=role), META)[0]
    assert msg["ip"].startswith(key.decode() + ":")  # the Kafka key is the client's IP too


def test_ipv6_key_has_no_port():
    meta = ConnMeta(pid=1, fd=3, local="[::1]:8080", peer="[fe80::1]:5000")
    key, _ = ENC.encode(ex(), meta)
    assert key == b"fe80::1"


def test_host_always_present():
    msg = decode(ENC.encode(ex(req_headers=[]), META)[1])
    assert json.loads(msg["requestHeaders"])["host"] == "10.0.2.7:8080"  # server: the local address
    msg = decode(ENC.encode(ex(role=ROLE_CLIENT, req_headers=[]), META)[1])
    assert json.loads(msg["requestHeaders"])["host"] == "10.0.1.5:43210"  # client: the peer
    msg = decode(ENC.encode(ex(req_headers=[], target="http://user@origin:81/p"), META)[1])
    assert json.loads(msg["requestHeaders"])["host"] == "origin:81"
    msg = decode(ENC.encode(ex(req_headers=[("HOST", "h")]), META)[1])
    assert json.loads(msg["requestHeaders"]) == {"host": "h"}


def test_repeated_headers_join():
    m = header_map([("Accept", "a"), ("accept", "b"), ("Set-Cookie", "s=1; Expires=Wed, 21 Oct 2015"),
                    ("Set-Cookie", "t=2"), ("Cookie", "a=1"), ("Cookie", "b=2")])
    assert m == {"Accept": "a, b", "Set-Cookie": "s=1; Expires=Wed, 21 Oct 2015\nt=2", "Cookie": "a=1; b=2"}


def test_invalid_utf8_body_is_replaced_not_dropped():
    msg = decode(ENC.encode(ex(resp_body=b"ok \xff\xfe end"), META)[1])
    assert msg["responsePayload"] == "ok \ufffd\ufffd end"


@pytest.mark.parametrize("body", [b'{"a": [1, 2, 3], "b": "xy', b'[{"a":1},{"b"', b'  {"k":'])
def test_cut_json_request_body_does_not_make_the_consumer_drop_the_sample(body):
    msg = decode(ENC.encode(ex(req_body=body, req_cut=True, req_headers=[("Host", "svc")]), META)[1])
    assert not consumer_drops(msg)
    assert msg["requestPayloadCut"] == "true"
    assert msg["requestPayloadSize"] == str(len(body) * 3)
    assert "cut" in msg["requestPayload"]
    # The same body uncut would be passed through as is.
    whole = decode(ENC.encode(ex(req_body=body, req_headers=[("Host", "svc")]), META)[1])
    assert whole["requestPayload"] == body.decode() and whole["requestPayloadCut"] == "false"


def test_cut_non_json_body_keeps_its_prefix():
    msg = decode(ENC.encode(ex(resp_body=b"<html>partial", resp_cut=True), META)[1])
    assert msg["responsePayload"] == "<html>partial" and msg["responsePayloadCut"] == "true"
    assert msg["responsePayloadSize"] == str(len(b"<html>partial") * 3)


@pytest.mark.parametrize("name", STREAMS)
def test_golden_messages(name):
    """Encoder output for each recorded stream, compared field by field with tests/data/golden/<name>.json.

    Regenerate (then review the diff) with AKTO_UPDATE_GOLDEN=1.
    """
    out, _, _ = run(load(name))
    got = [decode(ENC.encode(x, META)[1]) for x in out]
    path = DATA / "golden" / f"{name}.json"
    if os.environ.get("AKTO_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    want = json.loads(path.read_text())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for field in sorted(set(g) | set(w)):
            assert g.get(field) == w.get(field), (name, field)


def test_value_is_orjson_utf8():
    _, value = ENC.encode(ex(resp_body="caf\u00e9 \u2713".encode()), META)
    assert orjson.loads(value)["responsePayload"] == "caf\u00e9 \u2713"


def reference_encode(enc: MessageEncoder, x: Exchange, meta: ConnMeta) -> tuple[bytes, bytes]:
    """The message as one plain dict through one orjson.dumps: what the encoder's pieces must add up to."""
    from akto_collector.addresses import host_of as _ip_only
    from akto_collector.message import _default_host, payload_text

    req, resp = x.request, x.response
    client = x.role == ROLE_CLIENT
    req_headers = header_map(req.headers)
    if "host" not in req_headers:
        req_headers["host"] = _default_host(req.target, meta.peer if client else meta.local)
    msg = {
        "path": req.target, "method": req.method, "type": req.version,
        "requestHeaders": orjson.dumps(req_headers).decode(),
        "responseHeaders": orjson.dumps(header_map(resp.headers)).decode(),
        "requestPayload": payload_text(req.body, req.body_cut, req.body_size),
        "responsePayload": payload_text(resp.body, resp.body_cut, resp.body_size),
        "statusCode": str(resp.status),
        "status": f"{resp.status} {resp.reason}" if resp.reason else str(resp.status),
        "ip": meta.local if client else meta.peer, "destIp": meta.peer if client else meta.local,
        "time": str(int(req.ts or resp.ts)),
        "direction": "2" if client else "1", "is_pending": "false", "source": "MIRRORING",
        "akto_account_id": enc._account_id, "akto_vxlan_id": enc._vxlan_id,
        "process_id": str(meta.pid), "socket_id": str(meta.fd), "process_name": meta.comm,
        "daemonset_id": enc._daemonset_id, "tag": meta.tag,
        "requestPayloadCut": "true" if req.body_cut else "false",
        "responsePayloadCut": "true" if resp.body_cut else "false",
        "requestPayloadSize": str(req.body_size), "responsePayloadSize": str(resp.body_size),
        "tls": "true" if x.tls else "false",
    }
    return _ip_only(meta.local if client else meta.peer).encode(), orjson.dumps(msg)


ODD_META = ConnMeta(pid=1, fd=3, comm='we"ird\\ \x01 caf\u00e9', local="[::1]:8080", peer="[fe80::1]:5000",
                    tag=orjson.dumps({"k": 'v"\\\n'}).decode())


@pytest.mark.parametrize("headers", [
    [("Host", "svc"), ("Accept", "*/*")],
    [("Accept", "*/*"), ("HoSt", "svc")],
    [("host", "svc"), ("x-a", "1")],
    [("X-A", "1"), ("Host", "h"), ("ETag", 'W/"x"'), ("X-B", "a\\b\x01")],
    [("Host", "a"), ("host", "b"), ("Cookie", "a=1"), ("cookie", "b=2")],
    [("a\"Host", "x"), ("Host", "y")],
    [("X-\u00c9t\u00e9", "caf\u00e9"), ("Host", "h")],
    [("Accept", "a")],
    [],
])
def test_value_is_byte_identical_to_one_dict_through_orjson(headers):
    """The encoder builds the value from cached and per-pair pieces; it must equal the plain dict's bytes."""
    enc = MessageEncoder(account_id="1000000", vxlan_id="0", daemonset_id='ds-"q"')
    for role in (ROLE_SERVER, ROLE_CLIENT):
        for meta in (META, ODD_META, META):  # META twice: the second use hits the per-connection cache
            x = ex(role=role, req_headers=headers, req_body=b'{"a": "\\"q\\""}', resp_body=b"\xff\n\t{}")
            assert enc.encode(x, meta) == reference_encode(enc, x, meta)
    meta = ConnMeta(pid=9, fd=9, local="10.0.0.1:1", peer="10.0.0.2:2", tag='{"a":"1"}')
    x = ex(req_headers=headers)
    assert enc.encode(x, meta) == reference_encode(enc, x, meta)
    meta.tag = '{"a":"2"}'  # the worker may update a ConnMeta in place (the supervisor relabelled it)
    meta.comm = "renamed"
    assert enc.encode(x, meta) == reference_encode(enc, x, meta)


@pytest.mark.parametrize("req_cut", [False, True])
@pytest.mark.parametrize("resp_cut", [False, True])
@pytest.mark.parametrize("tls", [False, True])
def test_cut_and_tls_members_byte_identical_to_one_dict_through_orjson(req_cut, resp_cut, tls):
    x = ex(req_body=b"abc", req_cut=req_cut, resp_body=b"def", resp_cut=resp_cut)
    x.tls = tls
    assert ENC.encode(x, META) == reference_encode(ENC, x, META)


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_streams_byte_identical_to_one_dict_through_orjson(name):
    out, _, _ = run(load(name))
    for x in out:
        for meta in (META, ODD_META):
            assert ENC.encode(x, meta) == reference_encode(ENC, x, meta), name
