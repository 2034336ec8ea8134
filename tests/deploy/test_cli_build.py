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
    (["--registry", "not a registry"], "--registry 'not a registry': not a registry"),
    (["--lambda-auth", "open", "-t", "lambda"], "--lambda-auth 'open': expected one of"),
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


def test_without_a_registry_nothing_is_pushed_to_docker_hub(
    capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "b"
    code, out, err = run(capsys, "build", str(iris_dir), "-t", "kubernetes", "-o", str(out_dir))
    assert code == 0, err
    assert "docker push" not in out  # iris-mlp:3 would go to docker.io/library/iris-mlp
    assert "Note: The image iris-mlp:3 names no registry" in out
    assert "docker.io/library/iris-mlp:3" in out
    assert "--registry registry.example.com/team" in out
    assert "registry.example.com/team/iris-mlp:3" in out
    steps = out.split("Next:\n", 1)[1].splitlines()
    assert [s.strip() for s in steps] == [
        f"docker build -t iris-mlp:3 {out_dir}",
        "kind load docker-image iris-mlp:3",
        f"kubectl apply -k {out_dir / 'k8s'}",
    ]
    assert out.index("Note:") < out.index("Next:")  # read before the commands


@pytest.mark.parametrize("how", ["flag", "env"])
def test_registry_names_the_image_and_the_push(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    iris_dir: Path,
    tmp_path: Path,
    how: str,
) -> None:
    out_dir = tmp_path / "b"
    args = ["build", str(iris_dir), "-t", "kubernetes", "-o", str(out_dir)]
    if how == "flag":
        args += ["--registry", "ghcr.io/acme/"]
    else:
        monkeypatch.setenv("MODELPORT_REGISTRY", "ghcr.io/acme")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert f"docker build -t ghcr.io/acme/iris-mlp:3 {out_dir}" in out
    assert "docker push ghcr.io/acme/iris-mlp:3" in out
    assert "Note:" not in out
    dep = yaml.safe_load((out_dir / "k8s" / "deployment.yaml").read_text())
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/iris-mlp:3"
    kustomization = yaml.safe_load((out_dir / "k8s" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "ghcr.io/acme/iris-mlp", "newTag": "3"}]


def test_image_wins_over_registry(
    capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path
) -> None:
    code, out, err = run(
        capsys, "build", str(iris_dir), "-t", "kserve", "-o", str(tmp_path / "b"),
        "--registry", "ghcr.io/acme", "--image", "registry.example.com/ml/iris:7",
    )  # fmt: skip
    assert code == 0, err
    assert "docker push registry.example.com/ml/iris:7" in out
    assert "ghcr.io" not in out


def test_kserve_on_kind_uses_a_name_knative_does_not_resolve(
    capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "build", str(iris_dir), "-t", "kserve", "-o", str(tmp_path / "a"))
    assert code == 0, err
    assert "--registry kind.local" in out and "docker push" not in out
    code, out, err = run(
        capsys, "build", str(iris_dir), "-t", "kserve", "-o", str(tmp_path / "b"),
        "--registry", "kind.local",
    )  # fmt: skip
    assert code == 0, err
    assert "kind load docker-image kind.local/iris-mlp:3" in out and "docker push" not in out


@pytest.mark.parametrize(
    ("auth", "says"),
    [
        ([], "accept only AWS SigV4-signed requests"),
        (["--lambda-auth", "token"], "asks for the AuthToken parameter"),
        (["--lambda-auth", "public"], "Note: WARNING: --lambda-auth public"),
    ],
)
def test_lambda_says_who_may_call_it(
    capsys: pytest.CaptureFixture[str], iris_dir: Path, tmp_path: Path, auth: list[str], says: str
) -> None:
    out_dir = tmp_path / "b"
    code, out, err = run(capsys, "build", str(iris_dir), "-t", "lambda", "-o", str(out_dir), *auth)
    assert code == 0, err
    assert says in out
    template = yaml.safe_load((out_dir / "template.yaml").read_text())
    has_iam = "Auth" in template["Resources"]["ModelApi"]["Properties"]
    assert has_iam == (not auth)
