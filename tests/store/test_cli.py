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


def test_feedback_from_a_file(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    fill_log(sqlite_url, tmp_path / "spool")  # requests r0..r35 of model clf
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "request_id,value,note\n"
        + "".join(f"r{i},{i % 3},ok\n" for i in range(20))
        + "r404,1,unknown id\n"  # line 22
        + "r20,NaN,bad value\n"  # line 23
        + "r21,setosa,a label\n"
        + ",1,no id\n"  # line 25
    )
    code, out, err = run(capsys, "feedback", "--log-db", sqlite_url, "--file", str(labels))
    assert code == 1  # something was refused; the good rows are stored all the same
    assert "labels.csv: feedback stored for 21 request(s), 3 refused" in out
    assert "line 22: request id 'r404': no logged prediction with request id 'r404'" in err
    assert "line 23: request id 'r20':" in err and "must be a finite number" in err
    assert "line 25: request id '':" in err
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(
        '{"request_id": "r30", "value": [1]}\nnot json\n\n{"request_id": "r31", "value": 2}\n'
    )
    code, out, err = run(capsys, "feedback", "--log-db", sqlite_url, "-f", str(jsonl))
    assert code == 1 and "stored for 2 request(s), 1 refused" in out and "line 2: " in err
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "read") as log:
        stored = {r["request_id"]: r["feedback"] for r in log.predictions("clf")}
    assert [stored[f"r{i}"] for i in range(20)] == [i % 3 for i in range(20)]
    assert (stored["r20"], stored["r21"], stored["r30"], stored["r31"]) == (None, "setosa", [1], 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["r1"], "give REQUEST_ID VALUE, or --file FILE"),
        (["r1", "2", "--file", "x.csv"], "give REQUEST_ID VALUE, or --file FILE"),
        (["--file", "missing.csv"], "cannot read"),
        (["--file", "labels.txt"], "use a .csv, .tsv or .jsonl file"),
        (["--file", "bad.csv"], "needs the columns request_id and value; its header has ['id'"),
    ],
)
def test_feedback_file_mistakes(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path, argv: list[str],
    message: str,
) -> None:
    (tmp_path / "labels.txt").write_text("r1 1\n")
    (tmp_path / "bad.csv").write_text("id,y\nr1,1\n")
    argv = [str(tmp_path / a) if a.endswith((".csv", ".txt")) else a for a in argv]
    code, _, err = run(capsys, "feedback", "--log-db", sqlite_url, *argv)
    assert code == 1 and message in err, err


def test_report_names_features_from_the_reference_header(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    fill_log(sqlite_url, tmp_path / "spool")  # input x, two columns
    rows = np.random.default_rng(0).normal(size=(100, 2))
    reference = tmp_path / "train.csv"
    reference.write_text("petal_length,petal_width\n" + "".join(f"{a},{b}\n" for a, b in rows))
    code, out, err = run(
        capsys, "report", "clf", "--log-db", sqlite_url,
        "--reference", str(reference), "--reference-input", "x",
    )  # fmt: skip
    assert code == 0, err
    assert "petal_length (x[0])" in out and "petal_width (x[1])" in out
