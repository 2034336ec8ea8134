"""DeployOptions: every bad value is refused with a message that names it."""

from __future__ import annotations

import pytest

from modelport.deploy import DeployOptions
from modelport.deploy.options import dns_name
from modelport.errors import ConfigError

BAD = [
    ({"name": "Iris_Model"}, "--name 'Iris_Model': must be a DNS-1035 label"),
    ({"name": "9lives"}, "--name '9lives'"),
    ({"namespace": "Prod"}, "--namespace 'Prod'"),
    ({"image": "Registry/UPPER:1"}, "--image 'Registry/UPPER:1': not a container image"),
    ({"image": "iris:"}, "--image 'iris:'"),
    ({"replicas": 0}, "--replicas 0: must be at least 1"),
    ({"replicas": 4, "max_replicas": 3}, "--max-replicas 3: must be at least --replicas (4)"),
    ({"target_cpu_percent": 0}, "--target-cpu 0"),
    ({"queue_target": 0.0}, "--queue-target 0.0: must be above 0"),
    ({"cpu": "lots"}, "--cpu 'lots'"),
    ({"cpu": "0m"}, "--cpu '0m'"),
    ({"memory": "1GB"}, "--memory '1GB'"),
    ({"http_port": 8081}, "must be two different ports"),
    ({"grpc_port": 70000}, "must be two different ports in 1..65535"),
    ({"drain_seconds": -1}, "must not be negative"),
    ({"labels": {"bad key!": "x"}}, "--label bad key!=x"),
    ({"labels": {"team": "a b"}}, "--label team=a b"),
    ({"lambda_memory_mb": 64}, "Lambda memory 64 MB"),
    ({"lambda_timeout_s": 901}, "Lambda timeout 901 s"),
]


@pytest.mark.parametrize(("fields", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_options_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        DeployOptions(**fields).checked()  # type: ignore[arg-type]
    assert message in str(info.value)


def test_good_options_pass_unchanged() -> None:
    options = DeployOptions(
        name="iris",
        image="registry.example.com:5000/team/iris:1.2.3",
        namespace="ml",
        cpu="2500m",
        memory="512Mi",
        labels={"example.com/team": "search"},
    )
    assert options.checked() is options
    assert options.threads == 2


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("My_Model.v2", "my-model-v2"),
        ("resnet50", "resnet50"),
        ("2fast", "model-2fast"),
        ("__", "model"),
    ],
)
def test_dns_name(text: str, name: str) -> None:
    assert dns_name(text) == name


def test_resolved_fills_name_and_image_from_the_model() -> None:
    options = DeployOptions().resolved("Fraud_Detector", "2024.1")
    assert (options.name, options.image) == ("fraud-detector", "fraud-detector:2024.1")
    assert DeployOptions(name="fd").resolved("x", "1").image == "fd:1"
    assert DeployOptions().resolved("x", ".hidden").image == "x:v.hidden"


def test_grace_period_covers_pre_stop_and_drain() -> None:
    options = DeployOptions(pre_stop_seconds=10, drain_seconds=60)
    assert options.termination_grace_seconds > 70
