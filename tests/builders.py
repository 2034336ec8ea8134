"""Build small real models with the real frameworks, deterministically."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def mlp_weights(sizes: Sequence[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32),
            (rng.standard_normal(o) * 0.1).astype(np.float32),
        )
        for i, o in itertools.pairwise(sizes)
    ]


def mlp_reference(x: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The MLP computed with numpy: the ground truth for the ONNX graph."""
    h = x
    for k, (w, b) in enumerate(weights):
        h = h @ w + b
        if k < len(weights) - 1:
            h = np.maximum(h, 0)
    return h


def onnx_mlp(path: Path, sizes: Sequence[int], seed: int = 0) -> Path:
    """An ONNX MLP (ReLU between layers) with input ``x`` and output ``y``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = mlp_weights(sizes, seed)
    nodes, inits = [], []
    h = "x"
    for k, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"B{k}")]
        out = "y" if k == len(weights) - 1 else f"h{k}"
        nodes.append(
            helper.make_node(
                "Gemm", [h, f"W{k}", f"B{k}"], [out if k == len(weights) - 1 else f"g{k}"]
            )
        )
        if k < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [f"g{k}"], [out]))
        h = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_multi_io(path: Path) -> Path:
    """Two inputs, two outputs: ``sum = a + float(b)``, ``argmax = argmax(a, axis=1)``."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "bf"], ["sum"]),
        helper.make_node("ArgMax", ["a"], ["argmax"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "multi",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("argmax", TensorProto.INT64, ["batch"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# -- models with a request signature apart from their tensors (the contract's batch hooks) ----

CORPUS = [
    "the model answers every request",
    "a tokenizer pads each batch once",
    "texts of different lengths join one batch",
    "short text",
    "the server batches requests from many clients",
    "every front door runs the same contract",
    "hello world",
    "a longer sentence with several more words than the others in this corpus",
]
TEXT_DIM = 16


def train_tokenizer(path: Path) -> Path:
    """A word-level tokenizer trained on :data:`CORPUS` (ids 0 and 1: ``[PAD]``, ``[UNK]``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        CORPUS, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"])
    )
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=64)
    tokenizer.save(str(path))
    return path


def onnx_attention_encoder(
    path: Path, vocab: int, dim: int = TEXT_DIM, seed: int = 0, layers: int = 1, ffn: int = 0
) -> Path:
    """A tiny randomly initialised transformer: an embedding, ``layers`` blocks of one masked
    self-attention head (and, with ``ffn`` > 0, a ReLU feed-forward of that width), each with
    a residual, then a tanh projection: ``input_ids``, ``attention_mask`` INT64 [batch, seq]
    → ``hidden`` FP32 [batch, seq, dim]; both axes dynamic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name
        )

    inits = [
        weight("emb", vocab, dim),
        numpy_helper.from_array(np.array(1 / np.sqrt(dim), np.float32), "scale"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(-1e9, np.float32), "neg"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    node = helper.make_node
    nodes = [
        node("Gather", ["emb", "input_ids"], ["h0"]),
        node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        node("Sub", ["one", "m"], ["pad"]),
        node("Mul", ["pad", "neg"], ["bias"]),
        node("Unsqueeze", ["bias", "axis1"], ["bias3"]),
    ]
    h = "h0"
    for n in range(layers):
        inits += [weight(f"w{x}{n}", dim, dim) for x in "qkv"]
        nodes += [
            node("MatMul", [h, f"wq{n}"], [f"q{n}"]),
            node("MatMul", [h, f"wk{n}"], [f"k{n}"]),
            node("MatMul", [h, f"wv{n}"], [f"v{n}"]),
            node("Transpose", [f"k{n}"], [f"kt{n}"], perm=[0, 2, 1]),
            node("MatMul", [f"q{n}", f"kt{n}"], [f"s0{n}"]),
            node("Mul", [f"s0{n}", "scale"], [f"s1{n}"]),
            node("Add", [f"s1{n}", "bias3"], [f"s2{n}"]),
            node("Softmax", [f"s2{n}"], [f"att{n}"], axis=-1),
            node("MatMul", [f"att{n}", f"v{n}"], [f"ctx{n}"]),
            node("Add", [h, f"ctx{n}"], [f"a{n}"]),
        ]
        h = f"a{n}"
        if ffn:
            inits += [weight(f"f1{n}", dim, ffn), weight(f"f2{n}", ffn, dim)]
            nodes += [
                node("MatMul", [h, f"f1{n}"], [f"u{n}"]),
                node("Relu", [f"u{n}"], [f"r{n}"]),
                node("MatMul", [f"r{n}", f"f2{n}"], [f"d{n}"]),
                node("Add", [h, f"d{n}"], [f"f{n}"]),
            ]
            h = f"f{n}"
    inits.append(weight("wo", dim, dim))
    nodes += [node("MatMul", [h, "wo"], ["out"]), node("Tanh", ["out"], ["hidden"])]
    ids = ["batch", "seq"]
    graph = helper.make_graph(
        nodes,
        "encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ids),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ids),
        ],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [*ids, dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


TEXT_MODEL = '''
"""Sentence embeddings: texts in, mean-pooled hidden states out. Tokenising and pooling are
the batch hooks, so texts of any length join one batch and are padded once."""

import numpy as np

import modelport
from modelport.model import as_texts


class TextEncoder(modelport.Model):
    request_signature = modelport.Signature(
        inputs=[modelport.TensorSpec("text", "BYTES", (-1,))],
        outputs=[modelport.TensorSpec("embedding", "FP32", (-1, {dim}))],
    )
    bucket_size = {bucket}  # a sequence model: run each batch in groups of similar lengths
    calls = []  # (rows, padded length) of each model call, for the tests

    def load(self):
        super().load()
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(self.path.parent / "tokenizer.json"))

    def preprocess_batch(self, inputs):
        texts = as_texts(inputs["text"])
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise modelport.InvalidInputError(f"text {{empty[0]}} of the batch is empty")
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        type(self).calls.append(ids.shape)
        return {{"input_ids": ids, "attention_mask": mask}}

    def postprocess_batch(self, outputs, inputs):
        mask = inputs["attention_mask"][..., None].astype(np.float32)
        pooled = (outputs["hidden"] * mask).sum(axis=1) / mask.sum(axis=1)
        return {{"embedding": pooled.astype(np.float32)}}
'''


def text_model(
    directory: Path,
    batching: str | None = "{max_batch_size: 64}",
    dim: int = TEXT_DIM,
    layers: int = 1,
    ffn: int = 0,
    bucket: int = 0,
) -> Path:
    """A text-embedding model directory: ``model.onnx`` (a small transformer), a tokenizer
    trained here, and a ``model.py`` whose batch hooks tokenise and mean-pool. ``batching``
    None leaves the batching and thread settings at modelport's defaults."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    train_tokenizer(directory / "tokenizer.json")
    vocab = len(json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"])
    onnx_attention_encoder(directory / "model.onnx", vocab, dim, layers=layers, ffn=ffn)
    (directory / "model.py").write_text(TEXT_MODEL.format(dim=dim, bucket=bucket))
    settings = (
        "" if batching is None else f"batching: {batching}\nruntime: {{intra_op_threads: 1}}\n"
    )
    (directory / "modelport.yaml").write_text(f"name: {directory.name}\n{settings}")
    return directory


IMAGE_MODEL = '''
"""Images as PNG/JPEG bytes in, a class and its scores out."""

import base64
import io

import numpy as np

import modelport


class Thumbnail(modelport.Model):
    request_signature = modelport.Signature(
        inputs=[modelport.TensorSpec("image", "BYTES", (-1,))],
        outputs=[
            modelport.TensorSpec("label", "INT64", (-1,)),
            modelport.TensorSpec("scores", "FP32", (-1, 3)),
        ],
    )

    def preprocess(self, payload):
        """Plain JSON carries an image as base64 text: {"image": "iVBOR..."}."""
        if isinstance(payload, dict):
            payload = payload.get("image")
        items = payload if isinstance(payload, list) else [payload]
        try:
            return {"image": [base64.b64decode(i, validate=True) for i in items]}
        except (TypeError, ValueError):
            raise modelport.InvalidInputError('"image" must be base64 text') from None

    def preprocess_batch(self, inputs):
        from PIL import Image, UnidentifiedImageError

        rows = []
        for i, data in enumerate(inputs["image"].tolist()):
            try:
                with Image.open(io.BytesIO(data)) as image:
                    small = image.convert("L").resize((8, 8))
            except (UnidentifiedImageError, OSError):
                raise modelport.InvalidInputError(f"image {i} is not a PNG or JPEG") from None
            rows.append(np.asarray(small, dtype=np.float32).reshape(-1) / 255.0)
        return {"x": np.stack(rows)}

    def postprocess_batch(self, outputs, inputs):
        y = outputs["y"]
        scores = np.exp(y - y.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        return {"label": scores.argmax(axis=1).astype(np.int64), "scores": scores}
'''


def image_model(directory: Path) -> Path:
    """Image classification: PNG bytes → 8x8 grey → an ONNX MLP (64 → 3) → softmax."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx_mlp(directory / "model.onnx", (64, 16, 3), seed=3)
    (directory / "model.py").write_text(IMAGE_MODEL)
    (directory / "modelport.yaml").write_text(f"name: {directory.name}\n")
    return directory


def png(seed: int, size: int = 12) -> bytes:
    """A small deterministic RGB PNG."""
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


FIELDS_MODEL = '''
"""Named JSON fields in (two numbers and a city), a score out."""

import numpy as np

import modelport
from modelport.model import as_texts

CITIES = ["paris", "lyon", "nice"]


class Fields(modelport.Model):
    request_signature = modelport.Signature(
        inputs=[
            modelport.TensorSpec("age", "FP32", (-1,)),
            modelport.TensorSpec("income", "FP32", (-1,)),
            modelport.TensorSpec("city", "BYTES", (-1,)),
        ],
        outputs=[modelport.TensorSpec("score", "FP32", (-1,))],
    )

    def preprocess_batch(self, inputs):
        cities = as_texts(inputs["city"])
        onehot = np.array([[c == k for k in CITIES] for c in cities], dtype=np.float32)
        numbers = np.stack([inputs["age"] / 100, inputs["income"] / 1e5], axis=1)
        return {"x": np.concatenate([numbers.astype(np.float32), onehot], axis=1)}

    def postprocess_batch(self, outputs, inputs):
        return {"score": outputs["y"][:, 0] - outputs["y"][:, 1]}
'''


def fields_model(directory: Path) -> Path:
    """Named fields → features in ``preprocess_batch`` → an ONNX MLP (5 → 2) → one score."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx_mlp(directory / "model.onnx", (5, 8, 2), seed=4)
    (directory / "model.py").write_text(FIELDS_MODEL)
    (directory / "modelport.yaml").write_text(f"name: {directory.name}\n")
    return directory


# -- Hugging Face directories: tiny, random, made with the libraries' own APIs --------------------

HF_CORPUS = [
    "Paris is the capital of France",
    "Berlin and Munich are cities in Germany",
    "Marie Curie worked in Paris",
    "the model answers every request",
    "a tokenizer pads each batch once",
    "texts of different lengths join one batch",
    "the server batches requests from many clients",
    "hello world",
]
HF_MAX_LENGTH = 48
"""The tokenizer's limit (the model has 64 positions): texts are cut to this many tokens."""
HF_SENTIMENT = ("negative", "positive", "neutral")
HF_ENTITIES = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
HF_IMAGE_CLASSES = ("cat", "dog", "bird")


def hf_tokenizer(
    max_length: int = HF_MAX_LENGTH,
    corpus: Sequence[str] = HF_CORPUS,
    vocab_size: int = 160,
) -> Any:
    """A BERT-style WordPiece tokenizer trained on ``corpus``, as a
    ``PreTrainedTokenizerFast`` (``[CLS] text [SEP]``, token type ids, offsets)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def hf_bert(directory: Path, task: str = "feature-extraction", *, seed: int = 0) -> Path:
    """A randomly initialised BERT (hidden 32, 2 layers, 64 positions) for ``task``, with
    its tokenizer, saved by ``save_pretrained``."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )

    tokenizer = hf_tokenizer()
    labels = {"text-classification": HF_SENTIMENT, "token-classification": HF_ENTITIES}.get(
        task, ()
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    head = {
        "feature-extraction": BertModel,
        "text-classification": BertForSequenceClassification,
        "token-classification": BertForTokenClassification,
    }[task]
    torch.manual_seed(seed)
    model = head(config).eval()
    if task == "token-classification":
        with torch.no_grad():  # a bias towards entities, so that the tiny model finds some
            model.classifier.bias.copy_(torch.tensor([-1.0, 0.5, 0.3, 0.5, 0.3]))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def hf_sentence_transformer(
    directory: Path,
    base: Path,
    *,
    pooling: str = "mean",
    dense: int = 0,
    max_seq_length: int | None = None,
) -> Path:
    """A sentence-transformers directory made with its own API: ``base`` (a BERT directory)
    as the Transformer, then Pooling, an optional Dense layer (tanh) and Normalize."""
    import torch

    try:
        from sentence_transformers.sentence_transformer.modules import (
            Dense,
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import (  # type: ignore[no-redef, import-not-found]
            Dense,
            Normalize,
            Pooling,
            Transformer,
        )
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(1)
    transformer = Transformer(str(base), max_seq_length=max_seq_length)
    size = (
        transformer.get_embedding_dimension()
        if hasattr(transformer, "get_embedding_dimension")
        else transformer.get_word_embedding_dimension()
    )
    modules: list[Any] = [transformer, Pooling(size, pooling)]
    if dense:
        modules.append(Dense(size, dense, activation_function=torch.nn.Tanh()))
    modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(directory))
    return directory


def hf_vit(directory: Path, *, seed: int = 0) -> Path:
    """A randomly initialised ViT image classifier (32x32 images, 8x8 patches) and its image
    processor, saved by ``save_pretrained``."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    try:  # transformers 5 without torchvision: the PIL processor, named so that it does not warn
        from transformers import ViTImageProcessorPil as ViTImageProcessor
    except ImportError:
        from transformers import ViTImageProcessor  # type: ignore[assignment]

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(HF_IMAGE_CLASSES)),
        label2id={name: i for i, name in enumerate(HF_IMAGE_CLASSES)},
    )
    torch.manual_seed(seed)
    ViTForImageClassification(config).eval().save_pretrained(directory)  # type: ignore[no-untyped-call]
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


_HF_BUILT: dict[str, Path] = {}


def hf_models(root: Path) -> dict[str, Path]:
    """Every tiny Hugging Face directory, built once per process (the first call's ``root``):
    ``bert`` (a bare encoder), ``st`` (sentence-transformers: mean pooling, Dense 16, Normalize),
    ``cls`` (text classification), ``ner`` (token classification), ``vit`` (image
    classification), and ``st-onnx``, ``cls-onnx``, ``ner-onnx``, ``vit-onnx``: copies with
    an exported ``model.onnx`` (so they serve on ONNX Runtime)."""
    if _HF_BUILT:
        return _HF_BUILT
    import shutil

    from modelport.export import to_onnx

    built = {
        "bert": hf_bert(root / "bert"),
        "cls": hf_bert(root / "cls", "text-classification", seed=2),
        "ner": hf_bert(root / "ner", "token-classification", seed=3),
        "vit": hf_vit(root / "vit", seed=4),
    }
    built["st"] = hf_sentence_transformer(root / "st", built["bert"], dense=16)
    for name in ("st", "cls", "ner", "vit"):
        copy = root / f"{name}-onnx"
        shutil.copytree(built[name], copy)
        to_onnx(copy)
        built[f"{name}-onnx"] = copy
    _HF_BUILT.update(built)
    return _HF_BUILT
