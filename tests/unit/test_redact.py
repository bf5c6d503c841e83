"""Redaction (AKTO_REDACT_HEADERS, AKTO_REDACT_JSON_KEYS): recorded exchanges through the parsers and the encoder."""

from __future__ import annotations

import json
from collections import Counter

import orjson

from akto_collector.config import Settings
from akto_collector.events import ROLE_CLIENT, ROLE_SERVER, ConnMeta
from akto_collector.message import MessageEncoder
from akto_collector.redact import REDACTED, Redactor, redact_keys
from test_grpc import GRPC_REQ, GRPC_RESP, TRAILERS, frame
from test_http2 import Talk, ok
from test_http2 import run as run_h2
from test_http_replay import run

META = ConnMeta(pid=4242, fd=17, comm="python3", local="10.0.2.7:8080", peer="10.0.1.5:43210")

LOGIN = {"user": "ann", "Password": "hunter2",
         "profile": {"token": "t0k", "nested": [{"password": "p1"}, {"ok": 1}]},
         "items": [{"id": 1, "secret": {"deep": "x"}}, {"id": 2, "secret": None}],
         "big": 123456789012345678901234567890}
ANSWER = [{"id": 1, "token": "a"}, {"id": 2, "TOKEN": "b", "meta": {"token": ["c", "d"]}}]


def recorded(req: bytes, resp: bytes, role: int = ROLE_SERVER) -> dict:
    """A recorded stream of one exchange (tests/data/streams' format)."""
    recv, send = ("recv", "send") if role == ROLE_SERVER else ("send", "recv")
    return {"role_hint": role, "steps": [{"dir": recv, "text": req.decode()}, {"dir": send, "text": resp.decode()}]}


def http1(body: bytes, resp_body: bytes, extra: bytes = b"", ctype: bytes = b"application/json") -> dict:
    req = (b"POST /login HTTP/1.1\r\nHost: svc:8080\r\nAuthorization: Bearer abc.def\r\n"
           b"cookie: a=1\r\nCookie: b=2\r\nX-Api-KEY: k1\r\nX-Api-Key: k2\r\n" + extra +
           b"Content-Type: " + ctype + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    resp = (b"HTTP/1.1 200 OK\r\nSet-Cookie: s=1; Path=/\r\nSet-Cookie: t=2\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(resp_body)).encode() + b"\r\n\r\n" + resp_body)
    return recorded(req, resp)


def encode(doc: dict, headers=(), keys=(), meta: ConnMeta = META):
    (ex,) = run(doc)[0]
    counters: Counter = Counter()
    enc = MessageEncoder(daemonset_id="ds", redactor=Redactor(headers, keys, counters) if headers or keys else None)
    return json.loads(enc.encode(ex, meta)[1]), counters


def lower(headers: str) -> dict:
    return {k.lower(): v for k, v in json.loads(headers).items()}


def test_off_by_default_and_then_nothing_changes():
    assert Redactor.from_settings(Settings(), Counter()) is None
    assert Redactor.from_settings(Settings(redact_headers=("authorization",)), Counter()) is not None
    body = json.dumps(LOGIN).encode()
    plain, _ = encode(http1(body, orjson.dumps(ANSWER)))
    assert plain["requestPayload"] == body.decode()
    assert lower(plain["requestHeaders"])["authorization"] == "Bearer abc.def"
    # Listing names that the message does not carry changes nothing either, byte for byte.
    (ex,) = run(http1(body, orjson.dumps(ANSWER)))[0]
    on = MessageEncoder(daemonset_id="ds", redactor=Redactor(["x-none"], ["nope"], Counter()))
    assert on.encode(ex, META) == MessageEncoder(daemonset_id="ds").encode(ex, META)


def test_headers_any_case_and_multi_valued_request_and_response():
    msg, counters = encode(http1(b"{}", b"{}"), headers=["AUTHORIZATION", "cookie", "x-api-key", "set-cookie"])
    req, resp = json.loads(msg["requestHeaders"]), json.loads(msg["responseHeaders"])
    # The names stay as sent; a header sent twice is one joined value, replaced whole.
    assert req["Authorization"] == REDACTED and req["cookie"] == REDACTED and req["X-Api-KEY"] == REDACTED
    assert "Cookie" not in req and "X-Api-Key" not in req
    assert resp["Set-Cookie"] == REDACTED
    assert req["host"] == "svc:8080" and resp["Content-Type"] == "application/json"
    assert counters["redact.header_values"] == 4
    assert "abc.def" not in json.dumps(msg) and "k2" not in json.dumps(msg)


def test_json_keys_at_any_depth_in_arrays_of_objects_any_case_and_any_value_type():
    body, answer = json.dumps(LOGIN).encode(), orjson.dumps(ANSWER)
    msg, counters = encode(http1(body, answer), keys=["password", "TOKEN", "secret"])
    req, resp = json.loads(msg["requestPayload"]), json.loads(msg["responsePayload"])
    assert req == {"user": "ann", "Password": REDACTED,
                   "profile": {"token": REDACTED, "nested": [{"password": REDACTED}, {"ok": 1}]},
                   "items": [{"id": 1, "secret": REDACTED}, {"id": 2, "secret": REDACTED}],
                   "big": 123456789012345678901234567890}  # numbers kept exactly
    assert resp == [{"id": 1, "token": REDACTED}, {"id": 2, "TOKEN": REDACTED, "meta": {"token": REDACTED}}]
    assert counters["redact.body_values"] == 5 + 3
    assert "hunter2" not in json.dumps(msg) and "t0k" not in json.dumps(msg)
    # Headers are left alone when only keys are listed.
    assert lower(msg["requestHeaders"])["authorization"] == "Bearer abc.def"


def test_content_length_follows_the_redacted_body_and_the_sizes_stay_those_on_the_wire():
    body, answer = json.dumps(LOGIN).encode(), orjson.dumps(ANSWER)
    msg, _ = encode(http1(body, answer), keys=["password", "token"])
    for side in ("request", "response"):
        payload = msg[f"{side}Payload"]
        assert lower(msg[f"{side}Headers"])["content-length"] == str(len(payload.encode()))
    # ...PayloadSize is the body as it went over the wire: how much there was, whether it was cut.
    assert msg["requestPayloadSize"] == str(len(body)) and msg["responsePayloadSize"] == str(len(answer))
    assert msg["requestPayloadCut"] == "false"


def test_a_content_length_that_did_not_give_the_body_length_is_left_as_sent():
    body = b'{"password": "x"}'
    req = (b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
           + hex(len(body))[2:].encode() + b"\r\n" + body + b"\r\n0\r\n\r\n")
    resp = b"HTTP/1.1 204 No Content\r\n\r\n"
    msg, _ = encode(recorded(req, resp), keys=["password"])
    assert json.loads(msg["requestPayload"]) == {"password": REDACTED}
    assert "content-length" not in lower(msg["requestHeaders"])


def test_form_bodies_redact_the_listed_fields_only():
    form = b"user=ann&password=hunter%32&Token=a+b&next=%2Fhome&pass%77ord=again"
    msg, counters = encode(http1(form, b"{}", ctype=b"application/x-www-form-urlencoded; charset=utf-8"),
                           keys=["password", "token"])
    assert msg["requestPayload"] == "user=ann&password=%3Credacted%3E&Token=%3Credacted%3E&next=%2Fhome" \
                                    "&pass%77ord=%3Credacted%3E"
    assert counters["redact.body_values"] == 3
    assert lower(msg["requestHeaders"])["content-length"] == str(len(msg["requestPayload"]))


def test_a_body_that_is_not_json_is_left_as_is_and_counted_only_when_it_could_hold_a_key():
    broken = b'{"password": "hunter2", oops}'
    msg, counters = encode(http1(broken, b"[1, 2"), keys=["password"])
    assert msg["requestPayload"] == broken.decode()
    assert msg["responsePayload"] == "[1, 2"  # no listed key in it: not even parsed
    assert counters["redact.body_not_json"] == 1
    html = b"<html>password</html>"
    msg, counters = encode(http1(html, b"{}", ctype=b"text/html"), keys=["password"])
    assert msg["requestPayload"] == html.decode() and not counters["redact.body_not_json"]
    # A key written with escapes is still found.
    escaped = b'{"pass\\u0077ord": "hunter2"}'
    msg, _ = encode(http1(escaped, b"{}"), keys=["password"])
    assert json.loads(msg["requestPayload"]) == {"password": REDACTED}


def test_a_cut_json_body_is_the_cut_marker_and_needs_no_redaction():
    body = json.dumps(LOGIN).encode()
    (ex,) = run(http1(body, b"{}"))[0]
    ex.request.body, ex.request.body_cut = body[:20], True
    counters: Counter = Counter()
    msg = json.loads(MessageEncoder(redactor=Redactor([], ["password"], counters)).encode(ex, META)[1])
    assert msg["requestPayload"].startswith("akto-collector: body cut") and not counters


def test_client_side_exchanges_are_redacted_the_same():
    body = b'{"token": "t"}'
    doc = http1(body, b"{}")
    for step in doc["steps"]:
        step["dir"] = {"recv": "send", "send": "recv"}[step["dir"]]
    doc["role_hint"] = ROLE_CLIENT
    msg, _ = encode(doc, headers=["authorization"], keys=["token"])
    assert msg["direction"] == "2"
    assert lower(msg["requestHeaders"])["authorization"] == REDACTED
    assert json.loads(msg["requestPayload"]) == {"token": REDACTED}


def test_http2_headers_and_bodies():
    t = Talk()
    body = b'{"user": "ann", "password": "hunter2"}'
    sid = t.request([(":method", "POST"), (":path", "/login"), (":scheme", "https"), (":authority", "api"),
                     ("authorization", "Bearer h2secret"), ("content-type", "application/json"),
                     ("content-length", str(len(body)))], body)
    t.respond(sid, ok(b'{"token": "t"}', extra=[("set-cookie", "sid=1")]), b'{"token": "t"}')
    (ex,) = run_h2(t.steps)[0]
    counters: Counter = Counter()
    enc = MessageEncoder(redactor=Redactor(["Authorization", "SET-COOKIE"], ["password", "token"], counters))
    msg = json.loads(enc.encode(ex, META)[1])
    assert msg["type"] == "HTTP/2.0"
    req, resp = json.loads(msg["requestHeaders"]), json.loads(msg["responseHeaders"])
    assert req["authorization"] == REDACTED and resp["set-cookie"] == REDACTED and req["host"] == "api"
    assert json.loads(msg["requestPayload"]) == {"user": "ann", "password": REDACTED}
    assert req["content-length"] == str(len(msg["requestPayload"]))
    assert json.loads(msg["responsePayload"]) == {"token": REDACTED}
    assert "h2secret" not in json.dumps(msg) and "hunter2" not in json.dumps(msg)


def test_grpc_metadata_is_redacted_its_protobuf_bodies_are_not_touched():
    t = Talk()
    sid = t.request(GRPC_REQ + [("authorization", "Bearer g")], frame(b"\x08\x01", 0))
    t.respond(sid, GRPC_RESP, frame(b"\x0a\x03abc", 0), trailers=TRAILERS)
    (ex,) = run_h2(t.steps)[0]
    plain = json.loads(MessageEncoder().encode(ex, META)[1])
    msg = json.loads(MessageEncoder(redactor=Redactor(["authorization"], ["token"], Counter())).encode(ex, META)[1])
    assert msg["type"] == "gRPC"
    assert json.loads(msg["requestHeaders"])["authorization"] == REDACTED
    assert (msg["requestPayload"], msg["responsePayload"]) == (plain["requestPayload"], plain["responsePayload"])


def test_redact_keys_is_iterative_and_counts():
    doc = current = {}
    for _ in range(5000):  # deeper than Python's recursion limit
        current["next"] = {}
        current = current["next"]
    current["token"] = "x"
    assert redact_keys(doc, frozenset({"token"})) == 1 and current["token"] == REDACTED
    assert redact_keys("scalar", frozenset({"token"})) == 0 and redact_keys(5, frozenset({"token"})) == 0
