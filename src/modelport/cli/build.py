"""``modelport build MODEL --target docker|kubernetes|kserve|lambda -o DIR``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..errors import ConfigError
from ._options import MODEL, TRUST


class _Target(str, Enum):
    docker = "docker"
    kubernetes = "kubernetes"
    kserve = "kserve"
    aws_lambda = "lambda"


def register(app: typer.Typer) -> None:
    app.command()(build)


def build(
    model: Path = MODEL,
    target: _Target = typer.Option(..., "--target", "-t", help="What to deploy to."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the bundle to."),
    image: str | None = typer.Option(
        None, help="Image reference to build and deploy.  [default: REGISTRY/NAME:VERSION]"
    ),
    registry: str | None = typer.Option(
        None,
        envvar="MODELPORT_REGISTRY",
        help="Registry (and path) the image is pushed to, e.g. registry.example.com/team. "
        "Without it (or --image) the image is NAME:VERSION, for a local cluster only.",
    ),
    name: str | None = typer.Option(
        None, help="Name of the Kubernetes objects / service.  [default: the model's name]"
    ),
    namespace: str | None = typer.Option(None, help="Kubernetes namespace."),
    replicas: int = typer.Option(2, help="Minimum replicas (the autoscaler's floor)."),
    max_replicas: int = typer.Option(10, help="Maximum replicas the autoscaler may reach."),
    target_cpu: int = typer.Option(70, help="Average CPU utilisation (%) the autoscaler aims at."),
    queue_target: float | None = typer.Option(
        None,
        help="Also scale on the server's queue depth: average waiting requests per pod "
        "(Kubernetes; needs a custom-metrics adapter).",
    ),
    cpu: str = typer.Option("1", help="CPU per replica (requests = limits)."),
    memory: str = typer.Option("1Gi", help="Memory per replica (requests = limits)."),
    http_port: int = typer.Option(8080, help="HTTP port of the server."),
    grpc_port: int = typer.Option(8081, help="gRPC port of the server."),
    drain_seconds: int = typer.Option(
        30, help="Seconds the server may take to finish requests after SIGTERM."
    ),
    mount: bool = typer.Option(
        False, "--mount", help="Leave the model out of the image; mount it at run time instead."
    ),
    gpus: int = typer.Option(
        0,
        "--gpus",
        help="NVIDIA GPUs per replica: a CUDA image and nvidia.com/gpu limits. "
        "[default: 1 for a model whose modelport.yaml says device: cuda, else 0]",
        show_default=False,
    ),
    label: list[str] = typer.Option(
        [], "--label", "-l", help="Extra KEY=VALUE label on every object (repeatable)."
    ),
    lambda_memory: int = typer.Option(2048, help="Lambda memory in MB."),
    lambda_timeout: int = typer.Option(30, help="Lambda timeout in seconds."),
    lambda_auth: str = typer.Option(
        "iam",
        help="Who may call the Lambda HTTP API: iam (SigV4-signed requests), token (a bearer "
        "token given at deploy time) or public (anyone: say so explicitly).",
    ),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty directory."),
    trust: bool = TRUST,
) -> None:
    """Write a deployable bundle for a model, then print the commands that deploy it."""
    from ..deploy import DeployOptions
    from ..deploy import build as build_bundle

    options = DeployOptions(
        name=name,
        image=image,
        registry=registry,
        namespace=namespace,
        replicas=replicas,
        max_replicas=max_replicas,
        target_cpu_percent=target_cpu,
        queue_target=queue_target,
        cpu=cpu,
        memory=memory,
        http_port=http_port,
        grpc_port=grpc_port,
        drain_seconds=drain_seconds,
        mount=mount,
        gpus=gpus,
        trust=trust,
        labels=_labels(label),
        lambda_memory_mb=lambda_memory,
        lambda_timeout_s=lambda_timeout,
        lambda_auth=lambda_auth,  # type: ignore[arg-type]  # checked by DeployOptions
    )
    bundle = build_bundle(model, target.value, output, options, force=force)
    served = ", ".join(bundle.models)
    print(f"Wrote the {bundle.target} bundle for {served} to {bundle.directory}:")
    for file in bundle.files:
        print(f"  {file}")
    for note in bundle.notes:
        print(f"Note: {note}")
    print("Next:")
    for step in bundle.next_steps:
        print(f"  {step}")


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label {pair!r}: expected KEY=VALUE")
        labels[key] = value
    return labels
