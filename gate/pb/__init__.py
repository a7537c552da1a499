"""Generated gRPC stubs of the ``epochgate.v1`` wire contract (``scripts/gen-protos``; do not edit).

Import ``gate.pb.epochgate.v1.epochgate_pb2`` / ``epochgate_pb2_grpc``; the source is
``gate/proto/epochgate/v1/epochgate.proto``.
"""
