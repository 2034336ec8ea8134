"""``examples/django_app``: the Django project answering ``POST /predict`` with the demo model,
driven by Django's own test client."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import django
import pytest

import modelport

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "examples" / "django_app"
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def prediction() -> Iterator[ModuleType]:
    """The example's settings in force (``testserver`` allowed); its ``prediction`` module."""
    from django.test.utils import setup_test_environment, teardown_test_environment

    sys.path.insert(0, str(SITE))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_SETTINGS_MODULE", "iris_site.settings")
        django.setup()
        setup_test_environment()
        try:
            import iris_site.prediction

            yield iris_site.prediction
        finally:
            teardown_test_environment()
            sys.path.remove(str(SITE))


def _post(client: Any, payload: Any) -> Any:
    return client.post("/predict", data=json.dumps(payload), content_type="application/json")


def test_the_readme_flower_is_setosa(prediction: ModuleType) -> None:
    from django.test import Client

    readme = (SITE / "README.md").read_text()
    flower = json.loads(re.findall(r"-d '(\{.*?\})'", readme)[0])
    assert flower == SETOSA
    client = Client(enforce_csrf_checks=True)  # the API needs no CSRF token
    response = _post(client, flower)
    assert response.status_code == 200, response.content
    (answer,) = response.json()["predictions"]
    assert answer["species"] == "setosa"
    assert answer["probabilities"]["setosa"] > 0.9
    both = _post(client, [SETOSA, [6.7, 3.0, 5.2, 2.3]]).json()["predictions"]
    assert [p["species"] for p in both] == ["setosa", "virginica"]
    health = client.get("/health").json()
    assert health == {"status": "ok", "model": "iris", "version": "1"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (json.dumps({"sepal_length": 5.1}), "row 0: missing ['sepal_width', 'petal_length'"),
        (json.dumps([[1.0, 2.0]]), "row 0: expected 4 numbers"),
        (json.dumps([["a", "b", "c", "d"]]), "expected numbers"),
        ("not json", "send a JSON body"),
        ("", "send a JSON body"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(
    prediction: ModuleType, body: str, says: str
) -> None:
    from django.test import Client

    client = Client()
    response = client.post("/predict", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response["content-type"] == "application/json"
    assert list(response.json()) == ["error"]
    assert says in response.json()["error"]
    assert _post(client, SETOSA).status_code == 200  # and the app keeps answering


def test_predict_takes_only_post(prediction: ModuleType) -> None:
    from django.test import Client

    assert Client().get("/predict").status_code == 405


def test_the_model_is_loaded_once_per_process(
    prediction: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.test import Client

    loads: list[str] = []
    real_load = modelport.load

    def counting_load(path: Any, **kwargs: Any) -> modelport.Model:
        loads.append(str(path))
        return real_load(path, **kwargs)

    monkeypatch.setattr(modelport, "load", counting_load)
    monkeypatch.setattr(prediction, "_model", None)  # a fresh process, as far as it knows

    def requests() -> None:
        client = Client()
        for _ in range(3):
            assert _post(client, SETOSA).status_code == 200

    threads = [threading.Thread(target=requests) for _ in range(6)]  # runserver is threaded
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    requests()
    assert loads == [str(ROOT / "demo" / "iris")]
    assert prediction.get_model() is prediction.get_model()


def test_the_wsgi_application_loads_the_model_at_start_up(
    prediction: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    monkeypatch.setattr(prediction, "_model", None)
    sys.modules.pop("iris_site.wsgi", None)
    wsgi = importlib.import_module("iris_site.wsgi")
    assert callable(wsgi.application)
    assert prediction._model is not None  # before any request


def test_manage_py_runs_from_anywhere(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, str(SITE / "manage.py"), "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
