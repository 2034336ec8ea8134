"""What a deployment bundle is built with: one dataclass, checked once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from ..errors import ConfigError

__all__ = ["LAMBDA_AUTH", "TARGETS", "DeployOptions", "LambdaAuth", "Target", "dns_name"]

Target = Literal["docker", "kubernetes", "kserve", "lambda"]
TARGETS: tuple[Target, ...] = ("docker", "kubernetes", "kserve", "lambda")
LambdaAuth = Literal["iam", "token", "public"]
LAMBDA_AUTH: tuple[LambdaAuth, ...] = ("iam", "token", "public")
"""Who may call the Lambda bundle's HTTP API: AWS_IAM-signed requests, callers with the bearer
token given at deploy time, or (only when asked for) anyone."""

# DNS-1035 label: what Kubernetes requires of Service names (and so of everything named here).
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_REGISTRY = re.compile(rf"^[A-Za-z0-9.-]+(?::[0-9]+)?(?:/{_COMPONENT})*$")
_CPU = re.compile(r"^(?:[0-9]+m|[0-9]+(?:\.[0-9]+)?)$")
_MEMORY = re.compile(r"^[0-9]+(?:\.[0-9]+)?(?:k|Ki|M|Mi|G|Gi|T|Ti)?$")
_LABEL_KEY = re.compile(r"^(?:[a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class DeployOptions:
    """Knobs of a deployment bundle; every field has a production-minded default.

    ``name`` defaults to the model's name made DNS-safe, ``image`` to
    ``<registry>/<name>:<version>`` (``<name>:<version>`` without a registry, an image only a
    local cluster that has loaded it can run). ``mount`` leaves the model out of the image: it
    is mounted at run time instead.
    """

    name: str | None = None
    image: str | None = None
    registry: str | None = None
    """Where the image is pushed when ``image`` is not given: ``ghcr.io/acme`` makes
    ``ghcr.io/acme/<name>:<version>``."""
    namespace: str | None = None
    replicas: int = 2
    max_replicas: int = 10
    target_cpu_percent: int = 70
    queue_target: float | None = None
    """Also scale on ``modelport_queue_depth``: average waiting requests per pod (needs a
    custom-metrics adapter)."""
    cpu: str = "1"
    memory: str = "1Gi"
    http_port: int = 8080
    grpc_port: int = 8081
    drain_seconds: int = 30
    """How long the server may take to finish in-flight requests after SIGTERM."""
    pre_stop_seconds: int = 5
    """How long a pod keeps serving after it is told to stop, while endpoints update."""
    mount: bool = False
    gpus: int = 0
    """NVIDIA GPUs per replica: a CUDA image and ``nvidia.com/gpu`` in the limits (see
    :mod:`modelport.deploy.gpu`); 0, the CPU."""
    trust: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    lambda_memory_mb: int = 2048
    lambda_timeout_s: int = 30
    lambda_auth: LambdaAuth = "iam"
    """Who may call the Lambda function's HTTP API; see :data:`LAMBDA_AUTH`."""

    def checked(self) -> DeployOptions:
        """``self`` if every field is valid; otherwise a :class:`ConfigError` naming it."""
        if self.name is not None and not _DNS_1035.match(self.name):
            raise ConfigError(
                f"--name {self.name!r}: must be a DNS-1035 label (lower-case letters, digits "
                "and '-', starting with a letter, at most 63 characters)"
            )
        if self.namespace is not None and not _DNS_1035.match(self.namespace):
            raise ConfigError(f"--namespace {self.namespace!r}: must be a DNS-1035 label")
        if self.image is not None and not _IMAGE.match(self.image):
            raise ConfigError(
                f"--image {self.image!r}: not a container image reference "
                "(e.g. registry.example.com/team/iris:1)"
            )
        if self.registry is not None and not _REGISTRY.match(self.registry.rstrip("/")):
            raise ConfigError(
                f"--registry {self.registry!r}: not a registry and path for images "
                "(e.g. registry.example.com/team, ghcr.io/acme, "
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com)"
            )
        if self.replicas < 1:
            raise ConfigError(f"--replicas {self.replicas}: must be at least 1")
        if self.max_replicas < self.replicas:
            raise ConfigError(
                f"--max-replicas {self.max_replicas}: must be at least --replicas ({self.replicas})"
            )
        if not 1 <= self.target_cpu_percent <= 100:
            raise ConfigError(f"--target-cpu {self.target_cpu_percent}: must be 1 to 100")
        if self.queue_target is not None and self.queue_target <= 0:
            raise ConfigError(f"--queue-target {self.queue_target}: must be above 0")
        if not _CPU.match(self.cpu) or _cores(self.cpu) <= 0:
            raise ConfigError(f"--cpu {self.cpu!r}: expected cores, such as 500m, 1 or 2.5")
        if not _MEMORY.match(self.memory):
            raise ConfigError(f"--memory {self.memory!r}: expected a quantity such as 512Mi or 2Gi")
        ports = (self.http_port, self.grpc_port)
        if not all(1 <= p <= 65535 for p in ports) or ports[0] == ports[1]:
            raise ConfigError(f"ports {ports}: must be two different ports in 1..65535")
        if not 0 <= self.gpus <= 16:
            raise ConfigError(f"--gpus {self.gpus}: must be 0 to 16 GPUs per replica")
        if self.drain_seconds < 0 or self.pre_stop_seconds < 0:
            raise ConfigError("drain and pre-stop seconds must not be negative")
        for key, value in self.labels.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise ConfigError(f"--label {key}={value}: not a valid Kubernetes label")
        if not 128 <= self.lambda_memory_mb <= 10240:
            raise ConfigError(f"Lambda memory {self.lambda_memory_mb} MB: must be 128 to 10240")
        if not 1 <= self.lambda_timeout_s <= 900:
            raise ConfigError(f"Lambda timeout {self.lambda_timeout_s} s: must be 1 to 900")
        if self.lambda_auth not in LAMBDA_AUTH:
            raise ConfigError(
                f"--lambda-auth {self.lambda_auth!r}: expected one of {', '.join(LAMBDA_AUTH)}"
            )
        return self

    def resolved(self, model_name: str, model_version: str) -> DeployOptions:
        """A copy with ``name`` and ``image`` filled in from the model."""
        name = self.name or dns_name(model_name)
        repository = f"{self.registry.rstrip('/')}/{name}" if self.registry else name
        image = self.image or f"{repository}:{_tag(model_version)}"
        return replace(self, name=name, image=image).checked()

    @property
    def image_has_registry(self) -> bool:
        """Whether ``image`` names where it is pulled from (anything before a ``/``).

        ``iris:1`` does not: a cluster would look for ``docker.io/library/iris:1``.
        """
        return "/" in str(self.image).split("@")[0]

    @property
    def threads(self) -> int:
        """Intra-op threads that fit the CPU limit (at least one): more would only contend."""
        return max(1, int(_cores(self.cpu)))

    @property
    def termination_grace_seconds(self) -> int:
        """Pre-stop pause plus the server's drain, plus a margin for the process to exit."""
        return self.pre_stop_seconds + self.drain_seconds + 5


def dns_name(text: str) -> str:
    """``text`` made into a DNS-1035 label (``My_Model.v2`` → ``my-model-v2``)."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"model-{name}".rstrip("-")
    return name[:63].rstrip("-")


def _cores(cpu: str) -> float:
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def _tag(version: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", version)
    return tag if tag and tag[0] not in ".-" else f"v{tag}"
