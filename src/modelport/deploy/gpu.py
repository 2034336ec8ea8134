"""What a bundle needs to run on NVIDIA GPUs (``modelport build --gpus N``, or a model whose
``modelport.yaml`` says ``device: cuda``).

- The image: the CUDA builds of the runtimes (``onnxruntime-gpu``; torch from PyTorch's CUDA
  index) whose wheels carry the CUDA libraries, NVML for ``/metrics``, and the NVIDIA
  container toolkit's variables. The driver comes from the host, as the toolkit mounts it.
- Kubernetes and KServe: ``nvidia.com/gpu`` in the container's limits (the device plugin
  allocates whole GPUs), a toleration for the taint GPU node pools carry, a node selector on
  the label NVIDIA's GPU feature discovery sets, and ``MODELPORT_DEVICE=cuda``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "CUDA_INDEX",
    "GPU_NODE_LABEL",
    "container_env",
    "docker_env",
    "gpu_requirements",
    "pod_spec",
    "resources",
]

CUDA_INDEX = "https://download.pytorch.org/whl/cu126"
"""Where the CUDA builds of torch are (the CPU ones carry ``+cpu`` and come from ``/whl/cpu``)."""
GPU_NODE_LABEL = "nvidia.com/gpu.present"
"""The label NVIDIA's GPU feature discovery (and the GPU operator) puts on GPU nodes."""
ONNXRUNTIME_GPU = "onnxruntime-gpu>=1.20"
"""Its releases trail onnxruntime's, so the CPU pin cannot be carried over; 1.20 is the first
that finds the CUDA libraries of the nvidia-* wheels."""
NVML = "nvidia-ml-py>=12"


def gpu_requirements(lines: Iterable[str]) -> list[str]:
    """The pinned requirement lines of a CPU image, turned into a GPU image's."""
    out: list[str] = []
    for line in lines:
        name = line.split("==")[0].strip().lower()
        if line.startswith("--extra-index-url") and "/whl/cpu" in line:
            continue
        if name == "onnxruntime":
            out.append(ONNXRUNTIME_GPU)
        elif name == "torch" and "+cpu" in line:
            out.append(line.replace("+cpu", ""))
        else:
            out.append(line)
    if any(line.split("==")[0].strip().lower() == "torch" for line in out):
        out.insert(0, f"--extra-index-url {CUDA_INDEX}")
    if not any(line.lower().startswith(("nvidia-ml-py", "pynvml")) for line in out):
        out.append(NVML)
    return out


def docker_env() -> dict[str, str]:
    """What the NVIDIA container toolkit reads: which GPUs and which driver libraries."""
    return {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}


def resources(gpus: int) -> dict[str, str]:
    """Extended resources for the container's limits (requests follow limits for them)."""
    return {"nvidia.com/gpu": str(gpus)}


def container_env() -> list[dict[str, str]]:
    return [{"name": "MODELPORT_DEVICE", "value": "cuda"}]


def pod_spec() -> dict[str, Any]:
    """Tolerations and node selector of a pod that needs a GPU."""
    return {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {GPU_NODE_LABEL: "true"},
    }
