"""Recognise an artifact's format from its name, its layout and, where the name is ambiguous,
a look inside."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..errors import ArtifactNotFoundError, ConfigError, CorruptArtifactError, UnknownFormatError

__all__ = ["EXTENSIONS", "detect_format", "find_artifact", "is_huggingface_dir"]

EXTENSIONS: dict[str, str] = {
    ".onnx": "onnx",
    ".pt2": "torch_export",
    ".safetensors": "torch_state_dict",
    ".keras": "keras",
    ".h5": "keras",
    ".skops": "sklearn",
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".ubj": "xgboost",
}
"""Extensions that name their format outright."""

_AMBIGUOUS = {".pt", ".pth", ".json", ".txt", ".lgb", ".model", ".bst"}
_NOT_ARTIFACTS = {
    "model.py",
    "modelport.yaml",
    "README.md",
    "requirements.txt",
    ".DS_Store",
    # A tokenizer's or image processor's files beside the weights (Hugging Face names).
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "preprocessor_config.json",
    "generation_config.json",
}
EXPECTED = (
    ".onnx, .pt/.pth (TorchScript or state_dict), .pt2 (torch.export), .safetensors, .keras/.h5, "
    "a SavedModel directory, a Hugging Face directory (config.json, weights and a tokenizer or "
    "image processor), .skops/.joblib/.pkl (scikit-learn), .json/.ubj (XGBoost), "
    ".txt (LightGBM), or a model.py"
)
_HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "model.onnx",
    "onnx/model.onnx",
)
_HF_PREPROCESSORS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "preprocessor_config.json",
)


def is_huggingface_dir(path: Path) -> bool:
    """A directory ``save_pretrained`` wrote (``config.json``, weights, sharded or not, or an
    exported ``model.onnx``, and a tokenizer or image processor), or a sentence-transformers
    directory (``modules.json``)."""
    if not path.is_dir():
        return False
    if (path / "modules.json").is_file():
        return True
    if not (path / "config.json").is_file():
        return False
    weights = any((path / name).is_file() for name in _HF_WEIGHTS) or any(
        path.glob("model-*-of-*.safetensors")
    )
    return weights and any((path / name).is_file() for name in _HF_PREPROCESSORS)


def detect_format(path: Path) -> str:
    """The format name (a key of ``RUNTIMES``) of the artifact at ``path``."""
    if not path.exists():
        raise ArtifactNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "tensorflow"
        if is_huggingface_dir(path):
            return "huggingface"
        raise UnknownFormatError(
            f"{path}: directory is neither a TensorFlow SavedModel nor a Hugging Face model "
            "(config.json, weights and a tokenizer or image processor, or modules.json)"
        )
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if path.name == "model.py":
        return "python"
    if suffix in _AMBIGUOUS:
        fmt = _look_inside(path, suffix)
        if fmt:
            return fmt
    raise UnknownFormatError(f"{path}: unrecognised model artifact; expected {EXPECTED}")


def _look_inside(path: Path, suffix: str) -> str | None:
    if suffix in {".pt", ".pth"}:
        if not zipfile.is_zipfile(path):
            if path.stat().st_size == 0:
                raise CorruptArtifactError(f"{path}: empty file; expected a PyTorch archive")
            # Legacy (pre-1.6) torch.save files are not zips; torch.load decides.
            return "torch_state_dict"
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CorruptArtifactError(f"{path}: unreadable PyTorch archive: {exc}") from None
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
            return "torch_export"
        return "torch_state_dict"
    head = _head(path)
    if suffix == ".json":
        try:
            doc = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            raise CorruptArtifactError(
                f"{path}: not valid JSON; expected an XGBoost model saved as .json"
            ) from None
        if isinstance(doc, dict) and "learner" in doc:
            return "xgboost"
        return None
    if head.startswith(b"tree\n") or head.startswith(b"tree\r\n"):
        return "lightgbm"
    if suffix == ".bst" or (suffix == ".model" and head[:1] in {b"{", b"b"}):
        return "xgboost"
    return None


def _head(path: Path, size: int = 64) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


def find_artifact(directory: Path, artifact: str | None = None) -> Path | None:
    """The artifact inside a model directory, or None when only ``model.py`` is there.

    ``artifact`` (from ``modelport.yaml``) names it explicitly; otherwise the directory must
    hold exactly one recognisable artifact, or be a SavedModel or a Hugging Face directory
    itself (then the directory is the artifact).
    """
    if artifact:
        target = directory / artifact
        if not target.exists():
            raise ConfigError(f"{directory / 'modelport.yaml'}: artifact {artifact!r} not found")
        return target
    if (directory / "saved_model.pb").is_file() or is_huggingface_dir(directory):
        return directory
    candidates = []
    for child in sorted(directory.iterdir()):
        if child.name in _NOT_ARTIFACTS or child.name.startswith(("_", ".")):
            continue
        if child.is_dir():
            if (child / "saved_model.pb").is_file():
                candidates.append(child)
            continue
        if child.suffix.lower() in EXTENSIONS or child.suffix.lower() in _AMBIGUOUS:
            candidates.append(child)
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise ConfigError(
            f"{directory}: several possible artifacts ({names}); "
            "name one with 'artifact:' in modelport.yaml"
        )
    if candidates:
        return candidates[0]
    if (directory / "model.py").is_file():
        return None
    raise UnknownFormatError(f"{directory}: no model artifact found; expected {EXPECTED}")
