"""A KServe ``InferenceService`` (``serving.kserve.io/v1beta1``) running the modelport image.

The image is a *custom predictor*: KServe reads its protocol from the container's ``PROTOCOL``
variable (``v2``), and routes ``/v2/...`` to it. A mounted model comes through KServe's
storage initializer, which fetches ``STORAGE_URI`` into ``/mnt/models`` before the server
starts.
"""

from __future__ import annotations

from typing import Any

from . import gpu
from .docker import UID, serve_command
from .kubernetes import labels
from .options import DeployOptions

__all__ = ["KSERVE_MODEL_DIR", "inference_service"]

KSERVE_MODEL_DIR = "/mnt/models"
"""Where KServe's storage initializer puts what ``STORAGE_URI`` names."""
_CONTAINER = "kserve-container"  # the name KServe looks for in a custom predictor


def inference_service(
    options: DeployOptions, version: str, *, storage_uri: str | None = None
) -> dict[str, Any]:
    """The InferenceService; ``storage_uri`` (e.g. ``pvc://iris-model/``, ``s3://...``) when
    the model is not baked into the image."""
    env = [
        {"name": "PROTOCOL", "value": "v2"},
        {"name": "MODELPORT_THREADS", "value": str(options.threads)},
    ]
    if options.mount:
        env.append({"name": "STORAGE_URI", "value": storage_uri or f"pvc://{options.name}-model/"})
    resources = {"cpu": options.cpu, "memory": options.memory}
    container: dict[str, Any] = {
        "name": _CONTAINER,
        "image": options.image,
        "env": env,
        # Knative allows one port per container; gRPC is in docs/deploy-kserve.md.
        "ports": [{"name": "http1", "containerPort": options.http_port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": options.http_port},
            "periodSeconds": 5,
        },
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if options.gpus:
        container["resources"]["limits"].update(gpu.resources(options.gpus))
        env += gpu.container_env()
    if options.mount:
        # The image's entrypoint names /models/<name>; KServe delivers to /mnt/models.
        container["command"] = serve_command(KSERVE_MODEL_DIR, options)
    metadata: dict[str, Any] = {"name": options.name, "labels": labels(options, version)}
    if options.namespace:
        metadata["namespace"] = options.namespace
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "minReplicas": options.replicas,
                "maxReplicas": options.max_replicas,
                "scaleMetric": "cpu",
                "scaleTarget": options.target_cpu_percent,
                "terminationGracePeriodSeconds": options.termination_grace_seconds,
                "containers": [container],
                **(gpu.pod_spec() if options.gpus else {}),
            }
        },
    }
