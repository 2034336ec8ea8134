"""``modelport report`` and ``modelport feedback`` on a real log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelport.cli import main
from modelport.store import PredictionLog
from tests.store.pg import _free_port
from tests.store.test_report import fill_log


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_report_with_html_and_prometheus(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    fill_log(sqlite_url, tmp_path / "spool")
    np.savez(tmp_path / "ref.npz", x=np.random.default_rng(0).normal(size=(200, 2)))
    html, prom = tmp_path / "r.html", tmp_path / "r.prom"
    code, out, err = run(
        capsys,
        "report",
        "clf",
        "--log-db",
        sqlite_url,
        "--reference",
        str(tmp_path / "ref.npz"),
        "--html",
        str(html),
        "--prometheus",
        str(prom),
        "--window",
        "1h",
    )
    assert code == 0, err
    assert "requests: 36" in out and "errors: 4" in out and "accuracy 0.833" in out
    assert "x[0]" in out and "per 1h window" in out
    assert html.read_text().count("data:image/png;base64,") == 6
    assert 'modelport_report_requests{model="clf"} 36.0' in prom.read_text()


def test_report_of_an_unknown_model_says_so(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    fill_log(sqlite_url, tmp_path / "spool")
    code, out, _ = run(capsys, "report", "nope", "--log-db", sqlite_url)
    assert code == 0 and "nope: no logged predictions in this period" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: expected a duration (24h) or an ISO time"),
        (["--window", "0h"], "--window: expected a duration like 90s"),
        (["--task", "ranking"], "--task: expected auto, classification or regression"),
        (["--reference", "missing.npz"], "reference data set missing.npz does not exist"),
    ],
)
def test_report_bad_options(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, args: list[str], message: str
) -> None:
    code, _, err = run(capsys, "report", "clf", "--log-db", sqlite_url, *args)
    assert code == 1 and message in err


def test_feedback_command(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    fill_log(sqlite_url, tmp_path / "spool")
    code, out, err = run(capsys, "feedback", "--log-db", sqlite_url, "r5", "2")
    assert code == 0 and "feedback stored for clf request r5" in out, err
    code, _, _ = run(capsys, "feedback", "--log-db", sqlite_url, "r6", "setosa")
    assert code == 0
    code, _, err = run(capsys, "feedback", "--log-db", sqlite_url, "r404", "1")
    assert code == 1 and "error: no logged prediction with request id 'r404'" in err
    code, _, err = run(capsys, "feedback", "--log-db", sqlite_url, "r5", "NaN")
    assert code == 1 and "must be a finite number" in err
    code, _, err = run(capsys, "feedback", "--log-db", sqlite_url, "r5", '{"a": 1}')
    assert code == 1 and "got dict" in err
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "read") as log:
        stored = {r["request_id"]: r["feedback"] for r in log.predictions("clf")}
    assert (stored["r5"], stored["r6"]) == (2, "setosa")


def test_unreachable_database_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://modelport@127.0.0.1:{_free_port()}/postgres"
    code, _, err = run(capsys, "feedback", "--log-db", url, "r1", "1")
    assert code == 1 and "is unreachable" in err and err.count("\n") == 1
    code, _, err = run(capsys, "report", "clf", "--log-db", url)
    assert code == 1 and "is unreachable" in err
