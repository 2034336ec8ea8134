"""``build()``: one model (or repository) in, one deployable bundle directory out.

Every bundle is a Docker build context: ``Dockerfile``, ``.dockerignore``, the pinned
``requirements.txt``, a modelport wheel when it is a local checkout, and ``models/`` (unless
the model is mounted). Kubernetes adds ``k8s/``, KServe ``kserve/``, Lambda ``template.yaml``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import CONFIG_FILE, load_config
from ..errors import ConfigError
from ..loader import USER_MODULE
from ..model import Model
from ..runtime.repository import discover
from . import docker, gpu, kserve, kubernetes, sam
from .options import TARGETS, DeployOptions, Target
from .requirements import framework_extras, modelport_requirement, pinned

__all__ = ["Bundle", "build"]

_REQUIREMENTS = "requirements.txt"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".DS_Store")


@dataclass(frozen=True)
class Bundle:
    """What :func:`build` wrote, and the commands that deploy it."""

    target: Target
    directory: Path
    options: DeployOptions
    """The options with ``name`` and ``image`` resolved."""
    model_dir: str
    """The model's path inside the bundle (and the image's working directory)."""
    models: list[str]
    """The names the server answers to."""
    files: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What to know before running ``next_steps``: who may call the deployment, where the
    image is pulled from."""


def build(
    source: str | Path,
    target: Target,
    out: str | Path,
    options: DeployOptions | None = None,
    *,
    force: bool = False,
) -> Bundle:
    """Write the ``target`` bundle for the model at ``source`` into ``out``.

    ``out`` must be empty or absent unless ``force``. The model is resolved (its format
    detected, not its weights loaded) to choose the framework extras and the served names.
    """
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    opts = (options or DeployOptions()).checked()
    if target == "lambda" and opts.mount:
        raise ConfigError(
            "--mount is not available for lambda: the model is baked into the function's image"
        )
    if target == "lambda" and opts.gpus:
        raise ConfigError("--gpus is not available for lambda: AWS Lambda has no GPUs")
    src = Path(source)
    models = discover(src, trust=True if opts.trust else None)
    if not opts.gpus and target != "lambda" and any(_on_gpu(m) for m in models):
        opts = replace(opts, gpus=1)  # the model's own device: cuda asks for one
    folder = src.name if src.is_dir() else models[0].name
    names = sorted({m.name for m in models})
    opts = opts.resolved(names[0] if len(names) == 1 else folder, models[0].version)
    extras = sorted({e for m in models for e in framework_extras(m)})
    extras.append("lambda" if target == "lambda" else "serve")
    pins = pinned(extras, _model_requirements(src))  # may refuse: before anything is written
    if opts.gpus:
        pins = gpu.gpu_requirements(pins)

    directory = Path(out)
    _prepare(directory, force)
    model_dir = f"models/{folder}"
    writer = _Writer(directory)
    wheel_line = modelport_requirement(directory / "wheels")
    lines = [*pins, wheel_line]
    writer.text(_REQUIREMENTS, "\n".join(lines) + "\n")
    has_wheels = wheel_line.startswith("./wheels/")
    if has_wheels:
        writer.files.append(wheel_line[2:])
    if not opts.mount:
        _copy_model(src, directory / model_dir)
        writer.files.append(model_dir + "/")

    description = _describe(models, names)
    keep = [_REQUIREMENTS, *(["wheels"] if has_wheels else []), *([] if opts.mount else ["models"])]
    writer.text(".dockerignore", docker.dockerignore(keep))
    version = models[0].version
    if target == "lambda":
        writer.text(
            "Dockerfile",
            sam.lambda_dockerfile(
                model_dir=model_dir,
                has_wheels=has_wheels,
                description=description,
                trust=opts.trust,
            ),
        )
        writer.yaml(
            "template.yaml", sam.sam_template(opts, version=version, description=description)
        )
    else:
        writer.text(
            "Dockerfile",
            docker.dockerfile(
                model_dir=model_dir, options=opts, has_wheels=has_wheels, description=description
            ),
        )
    if target == "kubernetes":
        resources = kubernetes.manifests(opts, version, model_dir)
        for file, manifest in resources.items():
            writer.yaml(f"k8s/{file}", manifest)
        writer.yaml("k8s/kustomization.yaml", kubernetes.kustomization(opts, list(resources)))
        for file, content in kubernetes.monitoring(opts, version).items():
            if file.endswith(".json"):
                writer.text(f"k8s/monitoring/{file}", json.dumps(content, indent=2) + "\n")
            else:
                writer.yaml(f"k8s/monitoring/{file}", content)
    elif target == "kserve":
        writer.yaml("kserve/inferenceservice.yaml", kserve.inference_service(opts, version))

    return Bundle(
        target=target,
        directory=directory,
        options=opts,
        model_dir=model_dir,
        models=names,
        files=sorted(writer.files),
        next_steps=_next_steps(target, directory, opts, folder),
        notes=_notes(target, opts) + _gpu_notes(opts),
    )


class _Writer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: list[str] = []

    def text(self, relative: str, content: str) -> None:
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        self.files.append(relative)

    def yaml(self, relative: str, document: dict[str, Any]) -> None:
        import yaml

        self.text(relative, yaml.safe_dump(document, sort_keys=False, width=100))


def _prepare(directory: Path, force: bool) -> None:
    if directory.is_file():
        raise ConfigError(f"-o {directory}: is a file; expected a directory")
    if directory.is_dir() and any(directory.iterdir()):
        if not force:
            raise ConfigError(f"-o {directory}: is not empty; pass --force to write over it")
        for generated in ("models", "wheels", "k8s", "kserve"):
            shutil.rmtree(directory / generated, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def _copy_model(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest, ignore=_IGNORE)
        return
    dest.mkdir(parents=True)
    shutil.copy2(src, dest / src.name)
    for companion in (USER_MODULE, _REQUIREMENTS, CONFIG_FILE):
        path = src.parent / companion
        if not path.is_file():
            continue
        # A modelport.yaml that names another artifact does not apply to this one.
        if companion == CONFIG_FILE and load_config(path).artifact not in (None, src.name):
            continue
        shutil.copy2(path, dest / companion)


def _model_requirements(src: Path) -> list[str]:
    files = sorted(src.rglob(_REQUIREMENTS)) if src.is_dir() else [src.parent / _REQUIREMENTS]
    lines: list[str] = []
    for file in files:
        if not file.is_file():
            continue
        for number, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("-"):
                raise ConfigError(
                    f"{file}:{number}: {line!r}: pip options are not supported here; "
                    "list one requirement per line"
                )
            lines.append(line)
    return lines


def _describe(models: list[Model], names: list[str]) -> str:
    kinds = sorted({m.framework for m in models})
    versions = sorted({m.version for m in models})
    what = names[0] if len(names) == 1 else f"{len(names)} models ({', '.join(names)})"
    return f"{what} v{', '.join(versions)} ({', '.join(kinds)}), served by modelport {__version__}"


def _next_steps(target: Target, directory: Path, opts: DeployOptions, folder: str) -> list[str]:
    image = str(opts.image)
    build = f"docker build -t {image} {directory}"
    if target == "docker":
        mount = f" -v /path/to/{folder}:{docker.MOUNT_ROOT}/{folder}:ro" if opts.mount else ""
        ports = f"-p {opts.http_port}:{opts.http_port} -p {opts.grpc_port}:{opts.grpc_port}"
        return [build, f"docker run --rm {ports}{mount} {image}"]
    # Without a registry the image goes into a local cluster, never to Docker Hub's library/.
    ship = f"kind load docker-image {image}" if _local(opts) else f"docker push {image}"
    if target == "kubernetes":
        return [build, ship, f"kubectl apply -k {directory / 'k8s'}"]
    if target == "kserve":
        manifest = directory / "kserve" / "inferenceservice.yaml"
        return [build, ship, f"kubectl apply -f {manifest}"]
    return [f"cd {directory}", "sam build", "sam deploy --guided --resolve-image-repos"]


_LOCAL_REGISTRIES = ("kind.local", "ko.local", "dev.local")
"""Names Knative (KServe's serverless mode) does not resolve through a registry, by default."""


def _local(opts: DeployOptions) -> bool:
    """Whether the image is meant to be loaded into a local cluster rather than pushed."""
    image = str(opts.image)
    return not opts.image_has_registry or image.split("/", 1)[0] in _LOCAL_REGISTRIES


def _gpu_notes(opts: DeployOptions) -> list[str]:
    if not opts.gpus:
        return []
    return [
        f"The image runs on NVIDIA GPUs ({opts.gpus} per replica): the nodes need the NVIDIA "
        "driver and the device plugin (or the GPU operator); docker run needs --gpus all. "
        f"Pods tolerate the nvidia.com/gpu taint and select {gpu.GPU_NODE_LABEL}=true."
    ]


def _on_gpu(model: Model) -> bool:
    device = str(model.options.get("device") or "")
    return device.startswith(("cuda", "gpu"))


def _notes(target: Target, opts: DeployOptions) -> list[str]:
    image = str(opts.image)
    if target in ("kubernetes", "kserve") and not opts.image_has_registry:
        example = f"registry.example.com/team/{image}"
        notes = [
            f"The image {image} names no registry, so a cluster would pull "
            f"docker.io/library/{image} from Docker Hub. The steps below load it into a local "
            f"kind cluster instead (minikube: minikube image load {image}). For any other "
            "cluster, build for your registry: --registry registry.example.com/team "
            f"(or MODELPORT_REGISTRY) makes the image {example}; --image names it whole."
        ]
        if target == "kserve":
            notes.append(
                "KServe's serverless mode (Knative) looks every tag up in its registry, which "
                "fails for a loaded image: on kind, add --registry kind.local (Knative skips "
                "kind.local, ko.local and dev.local)."
            )
        return notes
    if target != "lambda":
        return []
    if opts.lambda_auth == "iam":
        return [
            "The HTTP API and the Function URL accept only AWS SigV4-signed requests from "
            "principals allowed execute-api:Invoke (lambda:InvokeFunctionUrl for the URL). "
            "--lambda-auth token requires a bearer token instead; --lambda-auth public opens "
            "the API to anyone."
        ]
    if opts.lambda_auth == "token":
        return [
            "sam deploy asks for the AuthToken parameter (16 characters or more); callers send "
            "'Authorization: Bearer TOKEN' (health routes stay open). The Function URL still "
            "needs IAM auth."
        ]
    return [
        "WARNING: --lambda-auth public: the HTTP API has no authorization; anyone who finds "
        "its URL can call the model, and each call is billed to you. The Function URL still "
        "needs IAM auth."
    ]
