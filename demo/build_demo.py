"""Build the demo model: a scikit-learn classifier on the iris data set, exported to ONNX.

Run from the repository root (needs the ``sklearn`` and ``export`` extras)::

    python demo/build_demo.py            # writes demo/iris/ and demo/iris.csv

The training is deterministic (fixed seed), so rebuilding gives the same predictions.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CONFIG = """\
name: iris
version: "1"
description: Iris species (setosa, versicolor, virginica) from four flower measurements in cm.
batching: {max_batch_size: 64, max_queue_delay_ms: 2}
runtime: {intra_op_threads: 1}
"""


def build(out_dir: Path, sample_csv: Path | None = None) -> Path:
    """Train, export and write the model directory; return the ``model.onnx`` path."""
    try:
        from skl2onnx import to_onnx
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ModuleNotFoundError as exc:
        raise SystemExit(
            f"error: the demo build needs the sklearn and export extras ({exc.name} is not "
            'installed): pip install -e ".[sklearn,export]"'
        ) from None

    iris = load_iris()
    x, y = iris.data.astype(np.float32), iris.target
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    pipeline.fit(x, y)
    onx = to_onnx(
        pipeline,
        initial_types=[("input", _float_input())],
        options={LogisticRegression: {"zipmap": False}},
        target_opset=17,
    )
    onx.doc_string = "Iris species classifier built by demo/build_demo.py"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    (out_dir / "modelport.yaml").write_text(CONFIG)
    user_model = HERE / "iris" / "model.py"  # hand-written: class names and friendly JSON
    if (out_dir / "model.py").resolve() != user_model:
        (out_dir / "model.py").write_text(user_model.read_text())
    if sample_csv is not None:
        _write_sample(sample_csv, x)
    return path


def _float_input() -> object:
    from skl2onnx.common.data_types import FloatTensorType

    return FloatTensorType([None, len(FEATURES)])


def _write_sample(path: Path, x: np.ndarray) -> None:
    # Every fifth flower: 10 of each species, in data set order.
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FEATURES)
        writer.writerows([[f"{v:.1f}" for v in row] for row in x[::5]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "iris", help="model directory")
    parser.add_argument("--sample", type=Path, default=HERE / "iris.csv", help="sample input")
    args = parser.parse_args()
    path = build(args.out, args.sample)
    print(f"wrote {path}, {args.out / 'modelport.yaml'} and {args.sample}")


if __name__ == "__main__":
    main()
