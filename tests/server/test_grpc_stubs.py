"""The committed gRPC stubs match the vendored proto (rerun scripts/gen_proto if this fails)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from modelport.protocol._grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

PROTO = Path(__file__).resolve().parents[2] / "proto" / "grpc_predict_v2.proto"


def test_stubs_are_generated_from_the_vendored_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is in the test extra")
    out = tmp_path / "v2.pb"
    rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", str(PROTO)])
    assert rc == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    _strip_json_names(fresh.message_type)  # protoc adds them; Python gencode leaves them out
    committed = descriptor_pb2.FileDescriptorProto()
    grpc_predict_v2_pb2.DESCRIPTOR.CopyToProto(committed)
    assert committed == fresh


def _strip_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _strip_json_names(message.nested_type)


def test_service_keeps_the_v2_package_and_methods() -> None:
    service = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == [
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    ]  # fmt: skip
    assert hasattr(grpc_predict_v2_pb2_grpc, "add_GRPCInferenceServiceServicer_to_server")
