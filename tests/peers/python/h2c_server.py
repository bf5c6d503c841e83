"""An HTTP/1.1 server that accepts `Upgrade: h2c` and answers on HTTP/2 (the h2 package).

    python h2c_server.py PORT    prints "listening"; answers each request with a JSON body naming its path
"""

import json
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def serve_connection(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    conn.initiate_upgrade_connection(headers.get("http2-settings", ""))
    sock.sendall(conn.data_to_send())
    path = lines[0].split(" ")[1]
    respond(conn, 1, path)
    sock.sendall(conn.data_to_send())
    pending = rest
    while True:
        if pending:
            events, pending = conn.receive_data(pending), b""
        else:
            chunk = sock.recv(65536)
            if not chunk:
                return
            events = conn.receive_data(chunk)
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                respond(conn, ev.stream_id, dict(ev.headers).get(b":path", b"/").decode())
            elif isinstance(ev, h2.events.ConnectionTerminated):
                sock.sendall(conn.data_to_send())
                return
        sock.sendall(conn.data_to_send())


def respond(conn, stream_id: int, path: str) -> None:
    body = json.dumps({"path": path, "h2c": True}).encode()
    conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/json"),
                                  ("content-length", str(len(body)))])
    conn.send_data(stream_id, body, end_stream=True)


def main() -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen()
    print("listening", flush=True)
    while True:
        sock, _ = srv.accept()
        threading.Thread(target=serve_connection, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
