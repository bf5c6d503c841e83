"""A gRPC server and client on cleartext, with generic handlers (no generated code).

    python grpc_peer.py serve PORT       prints "listening"; methods /demo.Echo/Unary and /demo.Echo/Stream
    python grpc_peer.py call PORT N      one unary call, one server-streaming call of N messages
"""

import sys
import time
from concurrent import futures

import grpc


def unary(request: bytes, context) -> bytes:
    return b"echo:" + request


def stream(request: bytes, context):
    n = int(request.decode() or "3")
    for i in range(n):
        yield b"part-%d" % i


def serve(port: int) -> None:
    handlers = grpc.method_handlers_generic_handler("demo.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


def call(port: int, n: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary_call = channel.unary_unary("/demo.Echo/Unary")
        stream_call = channel.unary_stream("/demo.Echo/Stream")
        print(unary_call(b"hello-grpc", timeout=10))
        print(list(stream_call(str(n).encode(), timeout=10)))
        time.sleep(0.2)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        call(int(sys.argv[2]), int(sys.argv[3]))
