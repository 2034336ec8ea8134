"""The Dockerfile and .dockerignore: hadolint-clean, and built the way production wants."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from modelport.deploy import Bundle, DeployOptions, build
from modelport.deploy.docker import python_version

from .conftest import tool


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_hadolint_passes_on_every_generated_dockerfile(
    docker_bundle: Bundle, lambda_bundle: Bundle
) -> None:
    for bundle in (docker_bundle, lambda_bundle):
        result = hadolint(bundle.directory / "Dockerfile")
        assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(docker_bundle: Bundle, tmp_path: Path) -> None:
    # A negative control: the same file with an unpinned apt install must be flagged.
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        (docker_bundle.directory / "Dockerfile").read_text()
        + "USER root\nRUN apt-get update && apt-get install -y curl\n"
    )
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3008" in result.stdout


def test_dockerfile_shape(docker_bundle: Bundle) -> None:
    steps = instructions(docker_bundle.directory / "Dockerfile")
    froms = [args for kw, args in steps if kw == "FROM"]
    assert froms == [f"python:{python_version()}-slim AS build", f"python:{python_version()}-slim"]
    runtime = steps[[i for i, (kw, _) in enumerate(steps) if kw == "FROM"][1] :]
    assert ("USER", "10001:10001") in runtime
    assert ("EXPOSE", "8080 8081") in runtime
    assert any(kw == "COPY" and args.startswith("--from=build /opt/venv") for kw, args in runtime)
    health = next(args for kw, args in runtime if kw == "HEALTHCHECK")
    assert "/v2/health/live" in health and " CMD [" in health
    entrypoint = json.loads(next(args for kw, args in runtime if kw == "ENTRYPOINT"))
    assert entrypoint == [
        "modelport",
        "serve",
        "models/iris_mlp",
        "--host",
        "0.0.0.0",
        "--shutdown-timeout",
        "30",
    ]
    assert steps[-1][0] == "ENTRYPOINT"


def test_dockerignore_sends_only_what_the_image_needs(docker_bundle: Bundle) -> None:
    lines = (docker_bundle.directory / ".dockerignore").read_text().splitlines()
    assert lines[1] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {"requirements.txt", "wheels", "models"}
    # Everything the Dockerfile copies from the context is allowed through.
    copied = [
        args.split()[0].rstrip("/")
        for kw, args in instructions(docker_bundle.directory / "Dockerfile")
        if kw == "COPY" and not args.startswith("--from")
    ]
    assert copied and all(path.split("/")[0] in allowed for path in copied)
    for path in copied:
        assert (docker_bundle.directory / path).exists()


def test_model_is_baked_in_with_its_config(docker_bundle: Bundle, iris_dir: Path) -> None:
    baked = docker_bundle.directory / docker_bundle.model_dir
    assert sorted(p.name for p in baked.iterdir()) == sorted(p.name for p in iris_dir.iterdir())
    assert (baked / "model.onnx").read_bytes() == (iris_dir / "model.onnx").read_bytes()
    assert docker_bundle.models == ["iris_mlp"]
    assert docker_bundle.options.name == "iris-mlp"
    assert docker_bundle.options.image == "iris-mlp:3"


def test_mounted_model_is_left_out_of_the_image(iris_dir: Path, tmp_path: Path) -> None:
    bundle = build(iris_dir, "docker", tmp_path / "b", DeployOptions(mount=True, trust=True))
    steps = instructions(bundle.directory / "Dockerfile")
    assert not (bundle.directory / "models").exists()
    assert not any(kw == "COPY" and "models" in args for kw, args in steps)
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    assert entrypoint[2] == "/models/iris_mlp" and entrypoint[-1] == "--trust"
    assert "!models" not in (bundle.directory / ".dockerignore").read_text()
    assert any("-v /path/to/iris_mlp:/models/iris_mlp:ro" in step for step in bundle.next_steps)
    assert hadolint(bundle.directory / "Dockerfile").returncode == 0


def test_custom_ports_reach_expose_healthcheck_and_command(iris_dir: Path, tmp_path: Path) -> None:
    bundle = build(
        iris_dir, "docker", tmp_path / "b", DeployOptions(http_port=9000, grpc_port=9001)
    )
    steps = dict(instructions(bundle.directory / "Dockerfile"))
    assert steps["EXPOSE"] == "9000 9001"
    assert "127.0.0.1:9000/v2/health/live" in steps["HEALTHCHECK"]
    assert json.loads(steps["ENTRYPOINT"])[-4:] == ["--http-port", "9000", "--grpc-port", "9001"]


def test_single_artifact_file_takes_its_companions(tmp_path: Path, tiny_onnx: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "tiny.onnx").write_bytes(tiny_onnx.read_bytes())
    (source / "modelport.yaml").write_text("artifact: other.onnx\n")  # not this artifact's
    bundle = build(source / "tiny.onnx", "docker", tmp_path / "b")
    assert bundle.model_dir == "models/tiny"
    assert sorted(p.name for p in (bundle.directory / "models/tiny").iterdir()) == ["tiny.onnx"]


def test_refuses_a_non_empty_output_unless_forced(iris_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty; pass --force"):
        build(iris_dir, "docker", out)
    bundle = build(iris_dir, "docker", out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (bundle.directory / "Dockerfile").is_file()


def test_model_repository_is_baked_in_whole(tiny_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "zoo"
    (repo / "alpha" / "1").mkdir(parents=True)
    (repo / "alpha" / "2").mkdir()
    (repo / "beta").mkdir()
    for folder in ("alpha/1", "alpha/2", "beta"):
        (repo / folder / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    bundle = build(repo, "docker", tmp_path / "b")
    assert bundle.models == ["alpha", "beta"]
    assert (bundle.options.name, bundle.model_dir) == ("zoo", "models/zoo")
    assert (bundle.directory / "models/zoo/alpha/2/model.onnx").is_file()
    entrypoint = json.loads(dict(instructions(bundle.directory / "Dockerfile"))["ENTRYPOINT"])
    assert entrypoint[:3] == ["modelport", "serve", "models/zoo"]
