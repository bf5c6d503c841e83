"""HTTP/2 over cleartext with prior knowledge (the h2 package), with reads small enough to split frames.

    python h2_prior.py serve PORT             prints "listening"; answers each request with SIZE-byte
                                              JSON ({"path": ..., "pad": "xx..."}), SIZE from the request's
                                              x-size header
    python h2_prior.py call PORT N SIZE       N POSTs of a SIZE-byte body on one connection, one at a
                                              time; prints "done" when every response has ended
"""

import json
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events

READ = 4096  # smaller than a DATA frame (16 KiB): frames arrive split across reads


def body_of(path: str, size: int) -> bytes:
    doc = {"path": path, "pad": ""}
    return json.dumps({**doc, "pad": "x" * max(0, size - len(json.dumps(doc)))}).encode()


def send_body(conn, sock, sid: int, body: bytes) -> None:
    for i in range(0, len(body), 16384):
        conn.send_data(sid, body[i:i + 16384], end_stream=i + 16384 >= len(body))
        sock.sendall(conn.data_to_send())


def serve_connection(sock: socket.socket) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    heads = {}
    while True:
        chunk = sock.recv(READ)
        if not chunk:
            return
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.RequestReceived):
                heads[ev.stream_id] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                h = heads.pop(ev.stream_id)
                path = h[b":path"].decode()
                body = body_of(path, int(h.get(b"x-size", b"100")))
                conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/json"),
                                                 ("content-length", str(len(body)))])
                send_body(conn, sock, ev.stream_id, body)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                return
        sock.sendall(conn.data_to_send())


def serve(port: int) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    print("listening", flush=True)
    while True:
        sock, _ = srv.accept()
        threading.Thread(target=serve_connection, args=(sock,), daemon=True).start()


def call(port: int, n: int, size: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    for i in range(n):
        sid = conn.get_next_available_stream_id()
        path = f"/prior/{i}"
        conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"),
                                (":authority", f"127.0.0.1:{port}"), ("content-type", "application/json"),
                                ("x-size", str(size)), ("x-request-id", f"prior-{i}")])
        send_body(conn, sock, sid, body_of(path, size))
        ended = False
        while not ended:
            chunk = sock.recv(READ)
            if not chunk:
                raise SystemExit("server closed")
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
            sock.sendall(conn.data_to_send())
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()
    print("done", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        call(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
