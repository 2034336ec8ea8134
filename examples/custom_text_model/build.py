"""Train the example's text classifier and save it beside ``model.py`` as ``model.skops``.

Needs the ``sklearn`` extra (scikit-learn and skops). From the repository root::

    pip install -e ".[sklearn]"
    python examples/custom_text_model/build.py
    modelport info examples/custom_text_model
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from model import featurize  # the same featurizer the served model uses

try:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
except ModuleNotFoundError as exc:
    sys.exit(
        f"error: this example needs the sklearn extra ({exc.name} is not installed): "
        'pip install -e ".[sklearn]"'
    )

HERE = Path(__file__).resolve().parent

POSITIVE = [
    "I loved this film, what a wonderful story",
    "great acting and a brilliant script",
    "an excellent, touching and funny movie",
    "absolutely fantastic, I would watch it again",
    "the best meal I have had in years, delicious",
    "friendly staff and superb service",
    "a delightful read from start to finish",
    "works perfectly, I am very happy with it",
    "beautiful photography and a lovely soundtrack",
    "highly recommended, a real gem",
    "amazing value and great quality",
    "I enjoyed every minute, wonderful",
]
NEGATIVE = [
    "I hated this film, what a boring story",
    "terrible acting and an awful script",
    "a dull, tedious and painful movie",
    "absolutely dreadful, I want my money back",
    "the worst meal I have had in years, disgusting",
    "rude staff and horrible service",
    "a tiresome read, I gave up halfway",
    "broke after one day, I am very disappointed",
    "ugly photography and an annoying soundtrack",
    "not recommended, a total waste of time",
    "poor value and bad quality",
    "I regretted every minute, awful",
]


def build(out_dir: Path) -> Path:
    """Train deterministically and write ``model.skops`` (plus, elsewhere than here, copies of
    ``model.py`` and ``modelport.yaml``)."""
    texts = POSITIVE + NEGATIVE
    labels = ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE)
    classifier = LogisticRegression(C=10.0, max_iter=1000, random_state=0)
    classifier.fit(featurize(texts), labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    sio.dump(classifier, out_dir / "model.skops")
    if out_dir.resolve() != HERE:
        for name in ("model.py", "modelport.yaml"):
            shutil.copy(HERE / name, out_dir / name)
    return out_dir / "model.skops"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the example text classifier.")
    parser.add_argument("--out", type=Path, default=HERE, help="model directory")
    print(f"wrote {build(parser.parse_args().out)}")
