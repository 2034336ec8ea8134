"""Hugging Face models without code: a directory ``save_pretrained`` wrote, or a
sentence-transformers one, served for its task.

The task comes from ``task:`` in ``modelport.yaml``, else from the directory: a
sentence-transformers ``modules.json`` means sentence embeddings; otherwise the architecture in
``config.json`` (``…ForSequenceClassification``, ``…ForTokenClassification``,
``…ForImageClassification``, or a bare encoder such as ``BertModel`` for embeddings).

Each task is the contract's three batch steps: :meth:`~HuggingFaceModel.preprocess_batch`
tokenises the texts of a whole batch (padded once, to its longest row) or decodes its images
with the directory's image processor; :meth:`~HuggingFaceModel.predict` runs the network
(PyTorch under ``torch.inference_mode``, or ONNX Runtime when the directory holds an exported
``model.onnx``); :meth:`~HuggingFaceModel.postprocess_batch` pools and normalises embeddings as
the sentence-transformers configuration says, or turns logits into labels, scores and entities
as the ``transformers`` pipelines do.

Request signatures (what callers send and get, V2 and the OpenAI embeddings API alike):

- ``feature-extraction``: ``text`` BYTES ``[-1]`` → ``embedding`` FP32 ``[-1, D]`` and
  ``tokens`` INT64 ``[-1]`` (each text's token count after truncation);
- ``text-classification``, ``image-classification``: ``text`` (or ``image``: PNG/JPEG bytes)
  → ``label`` BYTES, ``score`` FP32 and ``scores`` FP32 ``[-1, labels]``;
- ``token-classification``: ``text`` → ``entities`` BYTES, one JSON list per text.

Options (``runtime:`` in ``modelport.yaml``): ``backend`` (``auto``, ``pytorch``, ``onnx``),
``intra_op_threads``, ``max_length``, ``pooling``, ``normalize``, ``matryoshka_dims``,
``function_to_apply``, ``aggregation_strategy``, ``ignore_labels`` (see docs/huggingface.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._deps import require
from ..config import ModelConfig
from ..cpus import threads_option
from ..errors import ConfigError, CorruptArtifactError, InvalidInputError, PredictionError
from ..model import Inputs, Model, Outputs, as_input_dict
from ..signature import Signature, TensorSpec

__all__ = ["TASKS", "HuggingFaceModel", "SentenceConfig", "read_sentence_config", "task_of"]

log = logging.getLogger("modelport.runtime")

FEATURES, TEXT_CLASS, TOKEN_CLASS, IMAGE_CLASS = (
    "feature-extraction",
    "text-classification",
    "token-classification",
    "image-classification",
)
TASKS = (FEATURES, TEXT_CLASS, TOKEN_CLASS, IMAGE_CLASS)
"""The tasks served."""
_ALIASES = {
    "sentence-similarity": FEATURES,
    "sentence-embeddings": FEATURES,
    "embeddings": FEATURES,
    "sentiment-analysis": TEXT_CLASS,
    "ner": TOKEN_CLASS,
}
_AUTO_CLASSES = {
    FEATURES: "AutoModel",
    TEXT_CLASS: "AutoModelForSequenceClassification",
    TOKEN_CLASS: "AutoModelForTokenClassification",
    IMAGE_CLASS: "AutoModelForImageClassification",
}
_HEADS = {  # an architecture's name ends with one of these
    "ForSequenceClassification": TEXT_CLASS,
    "ForTokenClassification": TOKEN_CLASS,
    "ForImageClassification": IMAGE_CLASS,
}
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
AGGREGATIONS = ("none", "simple", "first", "average", "max")
FUNCTIONS = ("softmax", "sigmoid", "none")
BACKENDS = ("auto", "pytorch", "onnx")
_ONNX_FILES = ("model.onnx", "onnx/model.onnx")
_NO_LIMIT = 1_000_000
"""A tokenizer's ``model_max_length`` at or above this means none was declared."""
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "ibert"}

SAMPLE_TEXTS = (
    "Hello.",
    "The model answers every request.",
    "Texts of very different lengths join one batch, and the batch is padded once to its "
    "longest text; short ones cost little.",
    "A longer passage: " + " ".join(["the quick brown fox jumps over the lazy dog"] * 80),
)
"""Real texts of several lengths (the last one past any model's limit, so truncated), for
warm-up and for the parity check of an export."""


# -- what the directory says --------------------------------------------------------------------


@dataclass
class Dense:
    """A sentence-transformers ``Dense`` module: ``activation(x @ weight.T + bias)``."""

    weight: np.ndarray
    bias: np.ndarray | None
    activation: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return _ACTIVATIONS[self.activation](y).astype(np.float32, copy=False)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, 0),
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
}


@dataclass
class SentenceConfig:
    """What a sentence-transformers directory's modules say, in the order they run."""

    transformer: Path
    """The directory of the ``Transformer`` module (``config.json``, weights, tokenizer)."""
    steps: list[tuple[str, Any]] = field(default_factory=list)
    """After the transformer: ``("pool", modes)``, ``("dense", Dense)``, ``("normalize", None)``."""
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompt: str = ""
    """The default prompt, put before every text."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CorruptArtifactError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise CorruptArtifactError(f"{path}: not valid JSON: {exc}") from None


def read_sentence_config(directory: Path) -> SentenceConfig:
    """Parse ``modules.json`` and each module's configuration."""
    modules = _read_json(directory / "modules.json")
    if not isinstance(modules, list) or not modules:
        raise CorruptArtifactError(f"{directory / 'modules.json'}: expected a list of modules")
    config: SentenceConfig | None = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = directory / str(module.get("path", ""))
        if kind == "Transformer":
            own = (
                _read_json(where / "sentence_bert_config.json")
                if (where / "sentence_bert_config.json").is_file()
                else {}
            )
            task = own.get("transformer_task", FEATURES)
            if task != FEATURES:
                raise ConfigError(
                    f"{directory}: the Transformer module's task is {task!r}; modelport serves "
                    "sentence-transformers models whose transformer extracts features"
                )
            config = SentenceConfig(
                where,
                max_seq_length=own.get("max_seq_length"),
                do_lower_case=bool(own.get("do_lower_case", False)),
            )
            continue
        if config is None:
            raise ConfigError(
                f"{directory}: the first sentence-transformers module must be a Transformer, "
                f"got {kind}"
            )
        if kind == "Pooling":
            config.steps.append(("pool", _pooling_modes(_read_json(where / "config.json"), where)))
        elif kind == "Normalize":
            config.steps.append(("normalize", None))
        elif kind == "Dense":
            config.steps.append(("dense", _dense(where)))
        else:
            raise ConfigError(
                f"{directory}: sentence-transformers module {module.get('type')!r} is not "
                "supported; modelport runs Transformer, Pooling, Dense and Normalize modules"
            )
    if config is None:
        raise ConfigError(f"{directory / 'modules.json'}: no Transformer module")
    settings = directory / "config_sentence_transformers.json"
    if settings.is_file():
        doc = _read_json(settings)
        name = doc.get("default_prompt_name")
        if name:
            config.prompt = str((doc.get("prompts") or {}).get(name, ""))
    return config


def _pooling_modes(doc: Mapping[str, Any], where: Path) -> tuple[str, ...]:
    if not doc.get("include_prompt", True):
        raise ConfigError(
            f"{where}: pooling that leaves the prompt out (include_prompt: false) is not supported"
        )
    mode = doc.get("pooling_mode")
    if mode is None:  # sentence-transformers before 6: one flag per mode
        legacy = [m for m in POOLING_MODES if doc.get(f"pooling_mode_{m}_tokens")]
        legacy += ["cls"] if doc.get("pooling_mode_cls_token") else []
        legacy += ["lasttoken"] if doc.get("pooling_mode_lasttoken") else []
        order = {m: i for i, m in enumerate(("cls", "max", "mean", "mean_sqrt_len_tokens",
                                             "weightedmean", "lasttoken"))}  # fmt: skip
        modes = tuple(sorted(set(legacy), key=order.__getitem__)) or ("mean",)
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    return _check_modes(modes, str(where))


def _check_modes(modes: Sequence[str], where: str) -> tuple[str, ...]:
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad or not modes:
        raise ConfigError(f"{where}: pooling {list(modes)}; expected some of {POOLING_MODES}")
    return tuple(modes)


def _dense(where: Path) -> Dense:
    doc = _read_json(where / "config.json")
    activation = str(doc.get("activation_function", "Identity")).rsplit(".", 1)[-1]
    if activation not in _ACTIVATIONS:
        raise ConfigError(
            f"{where}: Dense activation {activation!r} is not supported "
            f"({', '.join(_ACTIVATIONS)} are)"
        )
    if (where / "model.safetensors").is_file():
        st = require("safetensors.numpy", extra="hf")
        weights = st.load_file(str(where / "model.safetensors"))
    elif (where / "pytorch_model.bin").is_file():
        torch = require("torch", extra="hf")
        loaded = torch.load(str(where / "pytorch_model.bin"), map_location="cpu", weights_only=True)
        weights = {k: v.float().numpy() for k, v in loaded.items()}
    else:
        raise CorruptArtifactError(f"{where}: a Dense module without its weights")
    bias = weights.get("linear.bias")
    return Dense(
        np.asarray(weights["linear.weight"], np.float32),
        None if bias is None else np.asarray(bias, np.float32),
        activation,
    )


def task_of(directory: Path, hf_config: Mapping[str, Any], sentence: bool) -> str:
    """The task a directory is for, from what it holds."""
    if sentence:
        return FEATURES
    architectures = [str(a) for a in hf_config.get("architectures") or []]
    for architecture in architectures:
        for head, task in _HEADS.items():
            if architecture.endswith(head):
                return task
    bare = [a for a in architectures if a.endswith("Model") and "For" not in a]
    if bare or (not architectures and not (directory / "preprocessor_config.json").is_file()):
        return FEATURES
    raise ConfigError(
        f"{directory}: cannot tell the task of architecture {architectures or 'unknown'}; "
        f"set 'task:' in modelport.yaml to one of {', '.join(TASKS)}"
    )


def _normalise_task(task: str) -> str:
    name = _ALIASES.get(task, task)
    if name not in TASKS:
        raise ConfigError(
            f"task {task!r} is not served; modelport serves {', '.join(TASKS)} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
        )
    return name


def _hidden_size(hf_config: Mapping[str, Any]) -> int:
    for key in ("hidden_size", "d_model", "dim", "n_embd"):
        value = hf_config.get(key)
        if isinstance(value, int):
            return value
    return -1


# -- the runtime ----------------------------------------------------------------------------


class HuggingFaceModel(Model):
    """A Hugging Face directory served for its task, in PyTorch or ONNX Runtime."""

    framework: ClassVar[str] = "huggingface"
    format_description: ClassVar[str] = (
        "a Hugging Face model directory (config.json, weights, tokenizer or image processor)"
    )
    bucket_size = 8
    """Texts of a batch run sorted by length, in groups of at least 8 that each pad to their
    own longest text (``batching.bucket_size`` overrides it; images run whole)."""
    preferred_batch_size = 64
    """Up to 64 rows a call unless ``batching:`` says otherwise: timed at start, a 20 ms text
    would get 1-2 rows, which loses about 15 % of throughput under load."""

    def __init__(
        self, path: str | Path | None = None, *, config: ModelConfig | None = None, **options: Any
    ) -> None:
        super().__init__(path, config=config, **options)
        if self.path is None:
            raise ConfigError("a Hugging Face model needs the path of its directory")
        self.directory = self.path if self.path.is_dir() else self.path.parent
        self.sentence: SentenceConfig | None = None
        if (self.directory / "modules.json").is_file():
            self.sentence = read_sentence_config(self.directory)
        self.model_dir = self.sentence.transformer if self.sentence else self.directory
        self.hf_config: dict[str, Any] = _read_json(self.model_dir / "config.json")
        chosen = self.config.task
        self.task = (
            _normalise_task(chosen)
            if chosen
            else task_of(self.model_dir, self.hf_config, self.sentence is not None)
        )
        self.output_name = "last_hidden_state" if self.task == FEATURES else "logits"
        self.input_name = "image" if self.task == IMAGE_CLASS else "text"
        if self.task == IMAGE_CLASS and self.batching.bucket_size is None:
            self.bucket_size = 0  # images are resized to one shape: nothing to pad
        self.class_names: list[str] = []
        if self.task in (TEXT_CLASS, TOKEN_CLASS, IMAGE_CLASS):
            self.class_names = self._class_names()
        self.steps = self._embedding_steps() if self.task == FEATURES else []
        self.normalized = bool(self.steps) and self.steps[-1][0] == "normalize"
        """Whether embeddings come out with unit length (the last step normalises)."""
        self.embedding_dim = self._embedding_dim() if self.task == FEATURES else 0
        self.matryoshka_dims: tuple[int, ...] = tuple(
            int(d) for d in self.options.get("matryoshka_dims") or ()
        )
        """Shorter sizes the embeddings may be cut to (OpenAI's ``dimensions``), as the model
        was trained for (Matryoshka); empty: only the full size."""
        self.function = self._function()
        aggregation = str(self.options.get("aggregation_strategy", "simple")).lower()
        if aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"aggregation_strategy {aggregation!r}; expected one of {AGGREGATIONS}"
            )
        self.aggregation = aggregation
        self.ignore_labels = list(self.options.get("ignore_labels") or ["O"])
        backend = str(self.options.get("backend", "auto")).lower()
        if backend not in BACKENDS:
            raise ConfigError(f"backend {backend!r}; expected one of {BACKENDS}")
        self.backend = backend
        if self.config.request_signature is None:
            self.request_signature = self._request_signature()
        self.tokenizer: Any = None
        self.image_processor: Any = None
        self.module: Any = None
        self.device: Any = None
        """The ``torch.device`` the network runs on (``device`` option; PyTorch only)."""
        self.onnx: Any = None
        self.max_length: int | None = None
        self._subword_prefix = False

    # -- what the directory declares ----------------------------------------------------------

    def _class_names(self) -> list[str]:
        id2label = self.hf_config.get("id2label") or {}
        count = int(self.hf_config.get("num_labels") or len(id2label) or 0)
        if not id2label and not count:
            raise ConfigError(f"{self.model_dir / 'config.json'}: no id2label for the classes")
        names = {int(k): str(v) for k, v in id2label.items()}
        return [names.get(i, f"LABEL_{i}") for i in range(max(count, len(names)))]

    def _embedding_steps(self) -> list[tuple[str, Any]]:
        steps: list[tuple[str, Any]] = (
            list(self.sentence.steps) if self.sentence else [("pool", ("mean",))]
        )
        pooling = self.options.get("pooling")
        if pooling is not None:
            modes = [pooling] if isinstance(pooling, str) else list(pooling)
            modes_ = _check_modes(modes, "runtime option pooling")
            steps = [("pool", modes_) if s[0] == "pool" else s for s in steps]
        normalize = self.options.get("normalize")
        if normalize is not None:
            steps = [s for s in steps if s[0] != "normalize"]
            if normalize:
                steps.append(("normalize", None))
        if not any(s[0] == "pool" for s in steps):
            raise ConfigError(f"{self.directory}: no Pooling module to make one vector of a text")
        return steps

    def _embedding_dim(self) -> int:
        dim = _hidden_size(self.hf_config)
        for kind, step in self.steps:
            if kind == "pool" and dim > 0:
                dim *= len(step)
            elif kind == "dense":
                dim = int(step.weight.shape[0])
        return dim

    def _function(self) -> str:
        given = self.options.get("function_to_apply")
        if given is not None:
            name = str(given).lower()
            if name not in FUNCTIONS:
                raise ConfigError(f"function_to_apply {given!r}; expected one of {FUNCTIONS}")
            return name
        problem = self.hf_config.get("problem_type")
        if problem == "regression":
            return "none"
        if problem == "multi_label_classification" or len(self.class_names) == 1:
            return "sigmoid"
        return "softmax" if len(self.class_names) > 1 else "none"

    def _request_signature(self) -> Signature:
        source = TensorSpec(self.input_name, "BYTES", (-1,))
        outputs: tuple[TensorSpec, ...]
        if self.task == FEATURES:
            outputs = (
                TensorSpec("embedding", "FP32", (-1, self.embedding_dim)),
                TensorSpec("tokens", "INT64", (-1,)),
            )
        elif self.task == TOKEN_CLASS:
            outputs = (TensorSpec("entities", "BYTES", (-1,)),)
        else:
            outputs = (
                TensorSpec("label", "BYTES", (-1,)),
                TensorSpec("score", "FP32", (-1,)),
                TensorSpec("scores", "FP32", (-1, len(self.class_names))),
            )
        return Signature(inputs=(source,), outputs=outputs)

    def onnx_file(self) -> Path | None:
        """The exported ``model.onnx`` beside the weights, if there is one."""
        return next(
            (self.model_dir / f for f in _ONNX_FILES if (self.model_dir / f).is_file()), None
        )

    # -- load ---------------------------------------------------------------------------------

    def load(self) -> None:
        require("transformers", extra="hf")
        onnx_file = self.onnx_file()
        backend = self.backend
        if backend == "auto":
            backend = "onnx" if onnx_file is not None else "pytorch"
        if backend == "onnx" and onnx_file is None:
            raise ConfigError(
                f"{self.model_dir}: backend onnx, but there is no model.onnx; export one with "
                f"`modelport export onnx {self.directory}`"
            )
        with _quiet_transformers():
            self._load_preprocessor()
            if backend == "onnx":
                assert onnx_file is not None
                self._load_onnx(onnx_file)
            else:
                self._load_torch()
        self.backend = backend
        log.info(
            "hugging face model loaded",
            extra={"model": self.name, "task": self.task, "backend": backend},
        )

    def _load_preprocessor(self) -> None:
        import transformers

        if self.task == IMAGE_CLASS:
            require("PIL", extra="hf")
            self.image_processor = transformers.AutoImageProcessor.from_pretrained(
                str(self.model_dir), local_files_only=True
            )
            return
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(self.model_dir), local_files_only=True
        )
        if not getattr(tokenizer, "is_fast", False) and self.task == TOKEN_CLASS:
            raise ConfigError(
                f"{self.model_dir}: token classification needs a fast tokenizer (tokenizer.json) "
                "for the entities' offsets"
            )
        self.max_length = self._max_length(int(tokenizer.model_max_length or 0))
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._subword_prefix = bool(
            backend is not None and getattr(backend.model, "continuing_subword_prefix", None)
        )
        self.tokenizer = tokenizer

    def _max_length(self, declared: int) -> int | None:
        """Tokens a text is cut to: the ``max_length`` option, else sentence-transformers'
        ``max_seq_length``, else the tokenizer's limit within the model's positions."""
        if self.options.get("max_length") is not None:
            return int(self.options["max_length"])
        if self.sentence is not None and self.sentence.max_seq_length:
            return int(self.sentence.max_seq_length)
        limit = declared if 0 < declared < _NO_LIMIT else 0
        positions = self.hf_config.get("max_position_embeddings")
        if isinstance(positions, int) and positions > 0:
            if self.hf_config.get("model_type") in _OFFSET_POSITIONS:
                # RoBERTa's kin number positions from the padding id + 1.
                positions -= int(self.hf_config.get("pad_token_id") or 0) + 1
            limit = min(limit, positions) if limit else positions
        return limit or None

    def _load_onnx(self, onnx_file: Path) -> None:
        from .onnx import OnnxModel

        onnx = OnnxModel(onnx_file, config=ModelConfig(name=self.name), **self.options)
        onnx.load()
        self.onnx = onnx
        assert onnx.signature is not None
        if self.config.signature is None:
            self.signature = onnx.signature
        if self.output_name not in onnx.signature.output_names:
            self.output_name = onnx.signature.output_names[0]

    def _load_torch(self) -> None:
        torch = require("torch", extra="hf")
        import inspect

        import transformers

        from ..devices import torch_device

        self.device = torch_device(self.options, torch, self.name)
        auto = getattr(transformers, _AUTO_CLASSES[self.task])
        module = auto.from_pretrained(str(self.model_dir), local_files_only=True)
        module.to(self.device).eval()
        threads = threads_option(self.options)
        # Process-wide, as for every PyTorch model (see frameworks/torch.py).
        if threads and (threads < torch.get_num_threads() or "intra_op_threads" in self.options):
            torch.set_num_threads(threads)
        self.module = module
        if self.config.signature is not None:
            return
        params = inspect.signature(module.forward).parameters
        if self.task == IMAGE_CLASS:
            names = [n for n in self.image_processor.model_input_names if n in params]
            inputs = tuple(TensorSpec(n, "FP32", (-1, -1, -1, -1)) for n in names)
        else:
            names = [n for n in self.tokenizer.model_input_names if n in params]
            inputs = tuple(TensorSpec(n, "INT64", (-1, -1)) for n in names)
        if self.task == FEATURES:
            shape: tuple[int, ...] = (-1, -1, _hidden_size(self.hf_config))
        elif self.task == TOKEN_CLASS:
            shape = (-1, -1, len(self.class_names))
        else:
            shape = (-1, len(self.class_names))
        self.signature = Signature(
            inputs=inputs, outputs=(TensorSpec(self.output_name, "FP32", shape),)
        )

    # -- the batch contract ---------------------------------------------------------------------

    def preprocess(self, payload: Any) -> Inputs:
        """Plain JSON: a text (an image as base64), a list of them, or an object holding them
        under ``text`` (``image``) or ``inputs``."""
        if isinstance(payload, Mapping):
            keys = [k for k in (self.input_name, "inputs") if k in payload]
            if len(keys) != 1 or len(payload) != 1:
                raise InvalidInputError(
                    f'expected {{"{self.input_name}": ...}} or {{"inputs": ...}}, got keys '
                    f"{sorted(payload)}"
                )
            payload = payload[keys[0]]
        items = payload if isinstance(payload, list) else [payload]
        if not items:
            raise InvalidInputError(f"no {self.input_name}s given: the list is empty")
        if self.task == IMAGE_CLASS:
            return {self.input_name: _objects(_decode_images(items))}
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise InvalidInputError(f"{self.input_name} {i} is {type(item).__name__}, not text")
        return {self.input_name: _objects(items)}

    def preprocess_batch(self, inputs: dict[str, np.ndarray]) -> Mapping[str, Any]:
        if self.input_name not in inputs:
            raise InvalidInputError(f"model {self.name!r} takes {self.input_name!r}")
        values = inputs[self.input_name].reshape(-1).tolist()
        if not values:
            raise InvalidInputError(f"no {self.input_name}s given: the batch is empty")
        if self.task == IMAGE_CLASS:
            return self._images(values)
        texts = _texts(values, self.input_name)
        if self.sentence is not None:
            if self.sentence.prompt:
                texts = [self.sentence.prompt + t for t in texts]
            if self.sentence.do_lower_case:
                texts = [t.lower() for t in texts]
        token_class = self.task == TOKEN_CLASS
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="np",
            return_offsets_mapping=token_class,
            return_special_tokens_mask=token_class,
        )
        tensors: dict[str, Any] = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
        if token_class:
            tensors["texts"] = texts
        return tensors

    def _images(self, values: list[Any]) -> dict[str, Any]:
        from PIL import Image, ImageOps

        images = []
        for i, data in enumerate(values):
            if not isinstance(data, (bytes, bytearray)):
                raise InvalidInputError(f"image {i} is {type(data).__name__}, not bytes")
            try:
                with Image.open(io.BytesIO(data)) as opened:
                    opened.load()
                    image = ImageOps.exif_transpose(opened).convert("RGB")
            except Exception as exc:  # PIL raises many kinds for a bad file
                raise InvalidInputError(
                    f"image {i} is not a readable PNG or JPEG image: {type(exc).__name__}"
                ) from None
            images.append(image)
        processed = self.image_processor(images=images, return_tensors="np")
        return {k: np.asarray(v, dtype=np.float32) for k, v in processed.items()}

    @property
    def on_gpu(self) -> bool:
        if self.onnx is not None:
            return bool(self.onnx.on_gpu)
        return self.device is not None and self.device.type == "cuda"

    def predict(self, inputs: Inputs) -> Any:
        feed, _ = as_input_dict(self, inputs)
        if self.onnx is not None:
            return self.onnx.predict(feed)
        from ..devices import thread_stream

        torch = require("torch", extra="hf")
        with thread_stream(torch, self.device):  # each worker thread's own CUDA stream
            tensors = {
                name: torch.from_numpy(array if array.flags.writeable else array.copy()).to(
                    self.device, non_blocking=True
                )
                for name, array in ((n, np.ascontiguousarray(a)) for n, a in feed.items())
            }
            try:
                with torch.inference_mode():
                    result = self.module(**tensors)
            except Exception as exc:
                shapes = {n: list(a.shape) for n, a in feed.items()}
                raise PredictionError(
                    f"model {self.name!r} failed on inputs with shapes {shapes}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            return {self.output_name: getattr(result, self.output_name).float().cpu().numpy()}

    def postprocess_batch(self, outputs: Outputs, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        raw = np.asarray(outputs[self.output_name], dtype=np.float32)
        if self.task == FEATURES:
            mask = inputs["attention_mask"]
            return {"embedding": self._embed(raw, mask), "tokens": mask.sum(axis=1)}
        if self.task == TOKEN_CLASS:
            return {"entities": self._entities(raw, inputs)}
        scores = _apply(self.function, raw)
        best = scores.argmax(axis=1)
        labels = np.empty(len(best), dtype=object)
        labels[:] = [self.class_names[i].encode() for i in best.tolist()]
        return {
            "label": labels,
            "score": scores[np.arange(len(best)), best].astype(np.float32),
            "scores": scores.astype(np.float32, copy=False),
        }

    def postprocess(self, outputs: Any) -> Any:
        """One answer per text (image): an embedding, ``{"label", "score"}``, or entities."""
        if self.task == FEATURES:
            return np.asarray(outputs["embedding"]).tolist()
        if self.task == TOKEN_CLASS:
            return [json.loads(e) for e in np.asarray(outputs["entities"]).tolist()]
        return [
            {"label": label.decode() if isinstance(label, bytes) else str(label), "score": score}
            for label, score in zip(outputs["label"].tolist(), outputs["score"].tolist())
        ]

    # -- embeddings ---------------------------------------------------------------------------

    def _embed(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        x = hidden
        for kind, step in self.steps:
            if kind == "pool":
                x = np.concatenate([_pool(mode, hidden, mask) for mode in step], axis=1)
            elif kind == "dense":
                x = step(x)
            else:
                norms = np.linalg.norm(x, axis=1, keepdims=True)
                x = x / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)

    # -- token classification -----------------------------------------------------------------

    def _entities(self, logits: np.ndarray, inputs: Mapping[str, Any]) -> np.ndarray:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores = shifted / shifted.sum(axis=-1, keepdims=True)
        out = np.empty(len(scores), dtype=object)
        for row in range(len(scores)):
            entities = self._row_entities(
                inputs["texts"][row],
                inputs["input_ids"][row],
                scores[row],
                inputs["offset_mapping"][row],
                inputs["special_tokens_mask"][row] | (inputs["attention_mask"][row] == 0),
            )
            out[row] = json.dumps(entities).encode()
        return out

    def _row_entities(
        self,
        text: str,
        ids: np.ndarray,
        scores: np.ndarray,
        offsets: np.ndarray,
        skip: np.ndarray,
    ) -> list[dict[str, Any]]:
        """The ``transformers`` token-classification pipeline's grouping, on one text."""
        tokenizer = self.tokenizer
        pre = []
        for idx in np.flatnonzero(~skip.astype(bool)).tolist():
            token_id = int(ids[idx])
            word = tokenizer.convert_ids_to_tokens(token_id)
            start, end = int(offsets[idx][0]), int(offsets[idx][1])
            ref = text[start:end]
            if self._subword_prefix:
                is_subword = len(word) != len(ref)
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            if token_id == tokenizer.unk_token_id:
                word, is_subword = ref, False
            pre.append(
                {"word": word, "scores": scores[idx], "start": start, "end": end, "index": idx,
                 "is_subword": is_subword}
            )  # fmt: skip
        if self.aggregation in ("none", "simple"):
            entities = [
                {
                    "entity": self.class_names[int(p["scores"].argmax())],
                    "score": float(p["scores"].max()),
                    "index": p["index"],
                    "word": p["word"],
                    "start": p["start"],
                    "end": p["end"],
                }
                for p in pre
            ]
        else:
            entities = self._words(pre)
        if self.aggregation != "none":
            entities = self._groups(entities)
        ignore = set(self.ignore_labels)
        return [
            e
            for e in entities
            if e.get("entity") not in ignore and e.get("entity_group") not in ignore
        ]

    def _words(self, pre: list[dict[str, Any]]) -> list[dict[str, Any]]:
        groups: list[list[dict[str, Any]]] = []
        for entity in pre:
            if groups and entity["is_subword"]:
                groups[-1].append(entity)
            else:
                groups.append([entity])
        words = []
        for group in groups:
            if self.aggregation == "first":
                scores = group[0]["scores"]
            elif self.aggregation == "max":
                scores = max(group, key=lambda e: e["scores"].max())["scores"]
            else:
                scores = np.nanmean(np.stack([e["scores"] for e in group]), axis=0)
            best = int(scores.argmax())
            words.append(
                {
                    "entity": self.class_names[best],
                    "score": float(scores[best]),
                    "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in group]),
                    "start": group[0]["start"],
                    "end": group[-1]["end"],
                }
            )
        return words

    def _groups(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        groups: list[list[dict[str, Any]]] = []
        for entity in entities:
            bi, tag = _tag(entity["entity"])
            if groups and tag == _tag(groups[-1][-1]["entity"])[1] and bi != "B":
                groups[-1].append(entity)
            else:
                groups.append([entity])
        return [
            {
                "entity_group": group[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([e["score"] for e in group])),
                "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in group]),
                "start": group[0]["start"],
                "end": group[-1]["end"],
            }
            for group in groups
        ]

    # -- samples --------------------------------------------------------------------------------

    def example_inputs(
        self, batch_size: int = 1, signature: Signature | None = None
    ) -> dict[str, np.ndarray]:
        """Real request inputs (texts of several lengths, or small PNG images) for warm-up;
        for the framework's signature, those tokenised (or decoded)."""
        if signature is not None and signature is not self.request_signature:
            if signature is self.signature and self.loaded:
                return self.export_samples()[0]
            return super().example_inputs(batch_size, signature)
        values = (
            [_sample_png(i) for i in range(batch_size)]
            if self.task == IMAGE_CLASS
            else [SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)].encode() for i in range(batch_size)]
        )
        array = np.empty(batch_size, dtype=object)
        array[:] = values
        return {self.input_name: array}

    def export_samples(self) -> list[dict[str, np.ndarray]]:
        """Framework inputs for the parity check of an export: real texts tokenised, in
        batches of several lengths (short and long, each row with real tokens), or decoded
        images."""
        self.ensure_loaded()
        assert self.signature is not None
        names = self.signature.input_names
        if self.task == IMAGE_CLASS:
            batches = [self.example_inputs(3), self.example_inputs(1)]
        else:
            texts = [t.encode() for t in SAMPLE_TEXTS]
            batches = [{self.input_name: _objects(part)} for part in (texts, texts[:2], texts[-1:])]
        return [{n: v for n, v in self.preprocess_batch(b).items() if n in names} for b in batches]


# -- helpers ------------------------------------------------------------------------------------


def _objects(values: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def _texts(values: list[Any], name: str) -> list[str]:
    texts = []
    for i, value in enumerate(values):
        if isinstance(value, (bytes, bytearray)):
            try:
                texts.append(bytes(value).decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInputError(f"{name} {i} is not UTF-8 text") from None
        elif isinstance(value, str):
            texts.append(value)
        else:
            raise InvalidInputError(f"{name} {i} is {type(value).__name__}, not text")
    return texts


def _decode_images(items: list[Any]) -> list[bytes]:
    images = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInputError(f"image {i} is {type(item).__name__}, not base64 text")
        try:
            images.append(base64.b64decode(item.split(",", 1)[-1], validate=True))
        except (binascii.Error, ValueError):
            raise InvalidInputError(f"image {i} is not valid base64") from None
    return images


def _sample_png(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (24 + 8 * seed, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _pool(mode: str, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' ``Pooling`` of ``hidden`` [batch, seq, dim] under ``mask``."""
    pooled: np.ndarray = np.asarray(_pooled(mode, hidden, mask), dtype=np.float32)
    return pooled


def _pooled(mode: str, hidden: np.ndarray, mask: np.ndarray) -> Any:
    m = mask.astype(np.float32)[..., None]
    if mode == "cls":
        first = mask.argmax(axis=1)
        return hidden[np.arange(len(hidden)), first]
    if mode == "max":
        return np.where(m > 0, hidden, -np.inf).max(axis=1).astype(np.float32)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total = (hidden * m).sum(axis=1)
        count = np.maximum(m.sum(axis=1), 1e-9)
        return total / (count if mode == "mean" else np.sqrt(count))
    if mode == "weightedmean":
        positions = np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
        weights = m * (positions - mask.argmax(axis=1).astype(np.float32)[:, None, None])
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    # lasttoken: the last position the mask keeps
    seq = hidden.shape[1]
    last = seq - 1 - mask[:, ::-1].argmax(axis=1)
    return (hidden * m)[np.arange(len(hidden)), last]


def _apply(function: str, logits: np.ndarray) -> Any:
    if function == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


def _tag(name: str) -> tuple[str, str]:
    if name.startswith(("B-", "I-")):
        return name[0], name[2:]
    return "I", name


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or advice from ``transformers`` while a model loads."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
