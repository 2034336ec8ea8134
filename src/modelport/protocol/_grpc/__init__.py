"""Stubs generated from ``proto/grpc_predict_v2.proto`` by ``scripts/gen_proto``; do not edit."""
