"""C2 for gRPC, the transport ceiling: the smallest gRPC server answering ``ModelInfer``.

``python -m bench.bare_grpc PORT RESPONSE_FILE``: a grpc.aio server (as modelport's gRPC front
door, on uvloop as modelport runs it) that answers every ``ModelInfer`` with the precomputed
serialized response, without parsing the request: what a Python gRPC server and the
harness's gRPC client reach together.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SERVICE = "inference.GRPCInferenceService"


async def serve(port: int, response: bytes) -> None:
    """Serve until cancelled or killed."""
    import grpc

    async def infer(request: bytes, context: Any) -> bytes:
        return response

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(infer)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("response", type=Path, help="file holding a serialized response")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, args.response.read_bytes()))


if __name__ == "__main__":
    main()
