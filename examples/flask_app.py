"""A model loaded straight into an existing Flask application: no separate server.

    pip install flask
    python examples/flask_app.py --model demo/iris --port 8000
    curl -s localhost:8000/predict -H 'content-type: application/json' \\
        -d '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'

``create_app`` is the part to copy: load once at start-up, call ``model(payload)`` per request,
and turn modelport's input errors into 400 responses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flask import Flask, Response, jsonify, request

import modelport

DEMO = Path(__file__).resolve().parent.parent / "demo" / "iris"


def create_app(model_path: str | Path = DEMO) -> Flask:
    """The application, with the model loaded once and shared by every request."""
    app = Flask(__name__)
    model = modelport.load(model_path)

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok", model=model.name, version=model.version)

    @app.post("/predict")
    def predict() -> tuple[Response, int]:
        payload = request.get_json(silent=True)
        if payload is None:
            return jsonify(error="send a JSON body (content-type: application/json)"), 400
        try:
            return jsonify(predictions=model(payload)), 200
        except modelport.InvalidInputError as exc:
            return jsonify(error=str(exc)), 400

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a modelport model from Flask.")
    parser.add_argument("--model", default=str(DEMO), help="model file or directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    create_app(args.model).run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
