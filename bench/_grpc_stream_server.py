"""The streaming upstream of bench_grpc_stream.py: a grpcio server whose one method answers each call
with ``count`` messages of ``size`` bytes (grpcio writes each message as its own DATA frame).

    python bench/_grpc_stream_server.py PORT COUNT SIZE

Method ``/bench.Stream/Many`` (server streaming), raw bytes in and out (no protobuf: the bench's
load generator is h2load, which sends a fixed length-prefixed message).
"""

import sys
from concurrent import futures

import grpc


def main() -> None:
    port, count, size = (int(x) for x in sys.argv[1:4])
    msg = b"s" * size

    def many(request: bytes, context: grpc.ServicerContext):
        for _ in range(count):
            yield msg

    handler = grpc.method_handlers_generic_handler("bench.Stream", {"Many": grpc.unary_stream_rpc_method_handler(many)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), handlers=(handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
