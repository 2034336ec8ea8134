"""B, the tutorial baseline: a Flask app calling the model once per request, under gunicorn.

This is what most deployment tutorials show: parse the JSON, build an array, run the model,
return JSON. The model directory comes from ``BENCH_MODEL_DIR``; onnxruntime gets the thread
settings of its ``modelport.yaml``, the same as every other target.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import yaml
from flask import Flask, jsonify, request

_DIR = Path(os.environ["BENCH_MODEL_DIR"])
# The run's tuned thread counts, else one each: every sync worker runs on its own core.
_RUNTIME = yaml.safe_load((_DIR / "modelport.yaml").read_text()).get("runtime", {})
_options = ort.SessionOptions()
_options.intra_op_num_threads = int(_RUNTIME.get("intra_op_threads", 1))
_options.inter_op_num_threads = int(_RUNTIME.get("inter_op_threads", 1))
session = ort.InferenceSession(str(_DIR / "model.onnx"), _options, ["CPUExecutionProvider"])
_OUTPUT = session.get_outputs()[0].name

app = Flask(__name__)


@app.post("/v2/models/<name>/infer")
def infer(name: str) -> Any:
    """The V2 inference route, one model call per request."""
    tensor = request.get_json()["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    (y,) = session.run(None, {tensor["name"]: x})
    output = {"name": _OUTPUT, "datatype": "FP32", "shape": list(y.shape)}
    return jsonify(model_name=name, outputs=[{**output, "data": y.ravel().tolist()}])
