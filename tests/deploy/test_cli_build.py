"""``modelport build``: one command per target, what to run next, and clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelport.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_kubernetes_bundle_and_next_steps(
    capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "k8s-bundle"
    code, out, err = run(
        capsys,
        "build",
        str(iris_dir),
        "--target",
        "kubernetes",
        "-o",
        str(out_dir),
        "--image",
        "ghcr.io/acme/iris:3",
        "--name",
        "iris",
        "--replicas",
        "4",
        "--max-replicas",
        "20",
        "--cpu",
        "2",
        "--label",
        "team=search",
    )
    assert code == 0, err
    assert f"Wrote the kubernetes bundle for iris_mlp to {out_dir}" in out
    assert f"docker build -t ghcr.io/acme/iris:3 {out_dir}" in out
    assert "docker push ghcr.io/acme/iris:3" in out
    assert f"kubectl apply -k {out_dir / 'k8s'}" in out
    hpa = yaml.safe_load((out_dir / "k8s" / "hpa.yaml").read_text())
    assert (hpa["metadata"]["name"], hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (
        "iris",
        4,
        20,
    )
    dep = yaml.safe_load((out_dir / "k8s" / "deployment.yaml").read_text())
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/acme/iris:3"
    assert container["resources"]["limits"]["cpu"] == "2"
    assert dep["metadata"]["labels"]["team"] == "search"


@pytest.mark.parametrize(
    ("target", "says"),
    [("lambda", "sam deploy --guided"), ("kserve", "kubectl apply -f"), ("docker", "docker run")],
)
def test_each_target_prints_how_to_deploy(
    capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path, target: str, says: str
) -> None:
    code, out, err = run(capsys, "build", str(iris_dir), "-t", target, "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert says in out
    assert (tmp_path / "b" / "Dockerfile").is_file()


BAD = [
    (["--name", "Bad_Name"], "--name 'Bad_Name': must be a DNS-1035 label"),
    (["--label", "novalue"], "--label 'novalue': expected KEY=VALUE"),
    (["--cpu", "many"], "--cpu 'many'"),
    (["--mount", "-t", "lambda"], "--mount is not available for lambda"),
]


@pytest.mark.parametrize(("extra", "says"), BAD, ids=[s for _, s in BAD])
def test_bad_options_are_one_clear_line(
    capsys: pytest.CaptureFixture[str],
    iris_dir: Path,
    tmp_path: Path,
    extra: list[str],
    says: str,
) -> None:
    args = ["build", str(iris_dir), "-o", str(tmp_path / "b"), *extra]
    if "-t" not in extra:
        args += ["-t", "docker"]
    code, _, err = run(capsys, *args)
    assert code == 1
    assert err.startswith("error: ") and says in err
    assert not (tmp_path / "b" / "Dockerfile").exists()


def test_missing_model_and_unknown_target(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, iris_dir: Path
) -> None:
    code, _, err = run(capsys, "build", str(tmp_path / "nope"), "-t", "docker", "-o", "x")
    assert code == 1 and "no such file or directory" in err
    code, _, err = run(capsys, "build", str(iris_dir), "-t", "heroku", "-o", str(tmp_path / "b"))
    assert code == 2 and "heroku" in err


def test_console_script(iris_dir: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "modelport"
    proc = subprocess.run(
        [str(script), "build", str(iris_dir), "-t", "docker", "-o", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "docker build -t iris-mlp:3" in proc.stdout
    again = subprocess.run(
        [str(script), "build", str(iris_dir), "-t", "docker", "-o", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 1
    assert "is not empty; pass --force" in again.stderr
