"""A small HTTP/1.1 test application, plain or TLS: python app_server.py PORT [CERT KEY]."""

import gzip
import http.server
import json
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code, body=b"", ctype="application/json", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        if code not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code not in (204, 304):
            self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/gzip":
            self._send(200, gzip.compress(b'{"compressed": true}'), extra=[("Content-Encoding", "gzip")])
        elif path == "/empty":
            self._send(204)
        elif path == "/document":
            # A JSON document of about n bytes, written (after the head) in one call.
            n = int(self.path.split("n=")[1])
            self._send(200, json.dumps({"items": ["%08d" % i for i in range(n // 11)]}).encode())
        elif path.startswith("/big"):
            n = int(self.path.split("n=")[1]) if "n=" in self.path else 5_000_000
            self._send(200, b"x" * n, ctype="text/plain")
        else:
            self._send(200, json.dumps({"path": self.path, "ok": True}).encode())

    do_HEAD = do_GET

    def do_POST(self):
        body = self._body()
        self._send(201, json.dumps({"received": len(body), "echo": body.decode("utf-8", "replace")[:100]}).encode())

    do_PUT = do_POST


def main():
    port = int(sys.argv[1])
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if len(sys.argv) > 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
