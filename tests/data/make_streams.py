"""Writes the recorded HTTP/1.x streams in tests/data/streams/ (run once; the files are the fixtures).

Each stream is a JSON file: ``steps`` in kernel order, each one write or read
of the traced process (``dir`` "send"/"recv", bytes as ``text`` or ``b64``),
or ``{"close": true}``; ``role_hint``; and ``expect``: the pairs it must give,
summarised. Binary bodies (gzip, deflate, br, noise) are built here so the
fixtures can be re-made and reviewed: ``python tests/data/make_streams.py``.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import zlib

import brotli

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "streams")
SERVER, CLIENT = 1, 2


def step(direction: str, data: bytes | str) -> dict:
    if isinstance(data, str):
        data = data.encode()
    try:
        text = data.decode("utf-8")
        if "\x00" not in text:
            return {"dir": direction, "text": text}
    except UnicodeDecodeError:
        pass
    return {"dir": direction, "b64": base64.b64encode(data).decode()}


def pair(method, target, status, req_body="", resp_body="", **kw) -> dict:
    d = {"method": method, "target": target, "status": status, "request_body": req_body, "response_body": resp_body}
    d.update(kw)
    return d


def write(name: str, description: str, steps: list, expect: list, role_hint: int = 0, **extra) -> None:
    doc = {"description": description, "role_hint": role_hint, "steps": steps, "expect": expect}
    doc.update(extra)
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main() -> None:
    os.makedirs(HERE, exist_ok=True)
    body = '{"id":1,"name":"alice"}'

    write("plain", "One GET answered with a JSON body (server side).", [
        step("recv", "GET /api/users?id=1 HTTP/1.1\r\nHost: svc:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"),
        step("send", f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"),
    ], [pair("GET", "/api/users?id=1", 200, "", body)], role_hint=SERVER)

    post = '{"name":"bob","tags":["a","b"]}'
    write("keepalive", "Three exchanges on one keep-alive connection, role from the bytes.", [
        step("recv", "GET /a HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        step("recv", f"POST /b HTTP/1.1\r\nHost: svc\r\nContent-Type: application/json\r\nContent-Length: {len(post)}\r\n\r\n{post}"),
        step("send", "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        step("recv", "DELETE /c/1 HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found"),
    ], [pair("GET", "/a", 200, "", "ok"), pair("POST", "/b", 201, post, ""), pair("DELETE", "/c/1", 404, "", "not found")])

    write("pipelined", "A client pipelines three requests; responses in order (client side).", [
        step("send", "GET /1 HTTP/1.1\r\nHost: up\r\n\r\nGET /2 HTTP/1.1\r\nHost: up\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: up\r\n\r\n"),
        step("recv", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"
             "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"),
    ], [pair("GET", "/1", 200, "", "one"), pair("GET", "/2", 200, "", "two"), pair("HEAD", "/3", 200, "", "")],
        role_hint=CLIENT)

    write("chunked_trailers", "Chunked response with chunk extensions and a trailer field.", [
        step("recv", "GET /stream HTTP/1.1\r\nHost: svc\r\nTE: trailers\r\n\r\n"),
        step("send", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
             "5;name=value\r\nhello\r\n1;ext\r\n \r\n6\r\nworld!\r\n0\r\nX-Checksum: abc123\r\n\r\n"),
    ], [pair("GET", "/stream", 200, "", "hello world!", response_trailer=["X-Checksum", "abc123"])], role_hint=SERVER)

    data = json.dumps({"items": [{"id": i, "name": f"n{i}"} for i in range(40)]})
    gz = gzip.compress(data.encode())
    write("gzip", "gzip response with Content-Length.", [
        step("recv", "GET /items HTTP/1.1\r\nHost: svc\r\nAccept-Encoding: gzip\r\n\r\n"),
        step("send", f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(gz)}\r\n\r\n".encode() + gz),
    ], [pair("GET", "/items", 200, "", data)], role_hint=SERVER)

    zl = zlib.compress(data.encode())
    co = zlib.compressobj(wbits=-15)
    raw = co.compress(data.encode()) + co.flush()
    write("deflate", "deflate responses: zlib-wrapped (as the RFC says) and raw (as some servers send).", [
        step("recv", "GET /z HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", f"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: {len(zl)}\r\n\r\n".encode() + zl),
        step("recv", "GET /raw HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", f"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: {len(raw)}\r\n\r\n".encode() + raw),
    ], [pair("GET", "/z", 200, "", data), pair("GET", "/raw", 200, "", data)], role_hint=SERVER)

    br = brotli.compress(data.encode())
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(br[i:i + 50]), br[i:i + 50]) for i in range(0, len(br), 50)) + b"0\r\n\r\n"
    write("brotli_chunked", "br-encoded chunked response.", [
        step("recv", "GET /br HTTP/1.1\r\nHost: svc\r\nAccept-Encoding: br\r\n\r\n"),
        step("send", b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks),
    ], [pair("GET", "/br", 200, "", data)], role_hint=SERVER)

    write("head", "HEAD answered with Content-Length but no body, then a GET on the same connection.", [
        step("recv", "HEAD /file HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: application/octet-stream\r\n\r\n"),
        step("recv", "GET /after HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"),
    ], [pair("HEAD", "/file", 200), pair("GET", "/after", 200, "", "done")], role_hint=SERVER)

    write("no_body_statuses", "204 and 304 carry no body even with framing headers.", [
        step("recv", "PUT /x HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc"),
        step("send", "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
        step("recv", "GET /y HTTP/1.1\r\nHost: svc\r\nIf-None-Match: \"v1\"\r\n\r\n"),
        step("send", "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nTransfer-Encoding: chunked\r\n\r\n"),
        step("recv", "GET /z HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"),
    ], [pair("PUT", "/x", 204, "abc", ""), pair("GET", "/y", 304), pair("GET", "/z", 200, "", "z")], role_hint=SERVER)

    write("continue_100", "Expect: 100-continue: the interim 100 is not a pair; the final response is.", [
        step("recv", "POST /upload HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"),
        step("send", "HTTP/1.1 100 Continue\r\n\r\n"),
        step("recv", "hello world"),
        step("send", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ], [pair("POST", "/upload", 200, "hello world", "ok")], role_hint=SERVER)

    write("close_delimited", "HTTP/1.0 response without Content-Length ends at close.", [
        step("send", "GET /legacy HTTP/1.0\r\nHost: old\r\n\r\n"),
        step("recv", "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>"),
        step("recv", "body</html>\n"),
        {"close": True},
    ], [pair("GET", "/legacy", 200, "", "<html>body</html>\n")])

    frame = bytes([0x81, 0x85, 1, 2, 3, 4]) + bytes(c ^ k for c, k in zip(b"hello", b"\x01\x02\x03\x04\x01"))
    write("websocket_upgrade", "WebSocket upgrade: the 101 pair is emitted, then HTTP parsing ends.", [
        step("recv", "GET /ws HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
        step("send", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
        step("recv", frame),
        step("send", bytes([0x81, 0x05]) + b"hello"),
    ], [pair("GET", "/ws", 101)], role_hint=SERVER, finished=True)

    write("truncated", "The response stops in its body and the connection closes: no pair, counted.", [
        step("recv", "GET /big HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"),
        {"close": True},
    ], [], role_hint=SERVER)

    rnd = random.Random(7)
    noise = bytes(rnd.randrange(256) for _ in range(700))
    write("binary_noise", "Binary noise both ways, then a real exchange: only the exchange comes out.", [
        step("recv", noise[:300]),
        step("send", noise[300:]),
        step("recv", b"\x00\x01garbage\r\nGET /real HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal"),
    ], [pair("GET", "/real", 200, "", "real")], role_hint=SERVER)

    write("joined_mid_body", "Capture starts inside a request body and its response body (role unknown).", [
        step("recv", 'ng","more":"data"}'),
        step("send", "b4ed HTTP/1.1 in the middle of a body\r\nand more body bytes}"),
        step("recv", "GET /next HTTP/1.1\r\nHost: svc\r\n\r\n"),
        step("send", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"),
    ], [pair("GET", "/next", 200, "", "next")])

    odd = "PURGE /caf\u00e9/\u00fcber?q=\u2713 HTTP/1.1\r\nHost: cache\r\nX-Obs: caf\xe9\r\nContent-Length: 999\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nbody\r\n0\r\n\r\n"
    write("lenient", "Custom method, raw UTF-8 target, obs-text header, both CL and TE (chunked wins).", [
        step("recv", odd.encode("utf-8")),
        step("send", "HTTP/1.1 200 Purged\r\nContent-Length: 0\r\n\r\n"),
    ], [pair("PURGE", "/caf\u00e9/\u00fcber?q=\u2713", 200, "body", "")], role_hint=SERVER)

    write("connect", "CONNECT answered 2xx: the pair is emitted, then the tunnel (TLS) is not parsed.", [
        step("send", "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n"),
        step("recv", "HTTP/1.1 200 Connection established\r\n\r\n"),
        step("send", bytes([0x16, 0x03, 0x01, 0x00, 0x05]) + b"hello"),
    ], [pair("CONNECT", "api.example.com:443", 200)], role_hint=CLIENT, finished=True)

    write("headers_repeated", "Repeated headers, Set-Cookie, Cookie, absolute-form target without Host.", [
        step("send", "GET http://origin.example:8080/p?x=1 HTTP/1.1\r\nAccept: text/html\r\naccept: application/json\r\n"
             "Cookie: a=1\r\nCookie: b=2\r\n\r\n"),
        step("recv", "HTTP/1.1 200 OK\r\nSet-Cookie: s=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT\r\nSet-Cookie: t=2; Path=/\r\n"
             "Vary: Accept\r\nVary: Cookie\r\nContent-Length: 2\r\n\r\n{}"),
    ], [pair("GET", "http://origin.example:8080/p?x=1", 200, "", "{}")], role_hint=CLIENT)

    write("obs_text", "A header value with a Latin-1 byte (obs-text): the head decodes as Latin-1.", [
        step("recv", b"GET /o HTTP/1.1\r\nHost: svc\r\nX-Name: Jos\xe9\r\n\r\n"),
        step("send", b"HTTP/1.1 200 OK\r\nX-Reply: \xa9 2025\r\nContent-Length: 2\r\n\r\nok"),
    ], [pair("GET", "/o", 200, "", "ok", request_header=["X-Name", "Jos\u00e9"])], role_hint=SERVER)

    write("bare_lf", "Heads with bare LF line ends and no reason phrase.", [
        step("recv", "GET /lf HTTP/1.1\nHost: svc\n\n"),
        step("send", "HTTP/1.1 200\nContent-Length: 2\n\nok"),
    ], [pair("GET", "/lf", 200, "", "ok")], role_hint=SERVER)


if __name__ == "__main__":
    main()
