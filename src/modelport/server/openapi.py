"""``/openapi.json`` built from the route table itself, so it cannot drift from the routes.

``/docs`` renders it with Swagger UI, shipped inside the package (``server/static/vendor``)
rather than loaded from a CDN, so it works on a machine with no internet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..datatypes import DATATYPES

if TYPE_CHECKING:
    from .http import Route

__all__ = ["document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {}},
    },
}
_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Tensor": _TENSOR,
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {
                    "timeout": {"type": "integer", "description": "microseconds"},
                    "binary_data_output": {"type": "boolean"},
                },
            },
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                },
            },
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "id", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
        },
    },
}
_ERRORS = {
    "400": "Bad request: malformed body, or data that does not fit the model",
    "401": "Missing or wrong bearer token (when the server has one)",
    "404": "Unknown model or version",
    "413": "Body larger than max_body_size",
    "500": "The model failed",
    "503": "Not ready or overloaded; see Retry-After",
    "504": "The request's timeout passed",
}

_NUMBER = {"type": "number"}
_TIME = {"oneOf": [_NUMBER, {"type": "string", "format": "date-time"}]}
_QUERY: dict[str, tuple[tuple[str, dict[str, Any], str], ...]] = {
    "console_metrics": (("window", _NUMBER, "seconds the rates cover, 1-300 (default 10)"),),
    "console_report": (
        ("since", _TIME, "start: seconds since the epoch or an ISO 8601 time (UTC)"),
        ("until", _TIME, "end, likewise"),
        ("window", _NUMBER, "seconds per plotted window (default: about 24 windows)"),
        ("reference", {"type": "string"}, "the reference file's name: .csv, .npz or .npy"),
        ("reference_input", {"type": "string"}, "the input a .csv or .npy reference is"),
    ),
}
"""Query parameters of the console's routes, by handler."""


def _operation(route: Route) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.handler.__name__ + "_" + str(len(route.segments)),
        "responses": {"200": {"description": "OK"}},
    }
    if route.model_route:
        params.append(
            {
                "name": "X-Modelport-Metadata",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "A JSON object (at most 4096 bytes) recorded with the prediction "
                'in the prediction log; V2 requests may send it as the "metadata" parameter.',
            }
        )
    if route.handler.__name__ == "infer":
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "JSON header + binary tensors (Inference-Header-Content-Length)",
                },
            },
        }
        op["responses"]["200"] = {
            "description": "OK",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferenceResponse"}}
            },
        }
    elif route.handler.__name__ == "predict":
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {}}},
            "description": "Any JSON; the model's preprocess turns it into inputs",
        }
    elif route.handler.__name__ == "feedback":
        truth = {"type": ["number", "string", "boolean"]}
        one = {
            "type": "object",
            "required": ["request_id", "value"],
            "additionalProperties": False,
            "properties": {
                "request_id": {"type": "string"},
                "value": {"oneOf": [truth, {"type": "array", "items": truth}]},
            },
        }
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [one, {"type": "array", "items": one, "minItems": 1}]}
                }
            },
            "description": "Ground truth for a logged request (one value, or one per row), "
            "or a list of such objects: the good ones are stored, each bad one is reported",
        }
    elif route.handler.__name__ == "console_report":
        op["requestBody"] = {
            "required": False,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            "description": "A reference data set for drift (.csv, .npz or .npy, as named by "
            "the reference parameter), or nothing",
        }
        op["responses"]["200"] = {
            "description": "The report: one HTML page, its plots embedded",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    params += [
        {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
        for name, schema, text in _QUERY.get(route.handler.__name__, ())
    ]
    if params:
        op["parameters"] = params
    if route.model_route or params:
        for code, text in _ERRORS.items():
            op["responses"][code] = {
                "description": text,
                "content": {"application/json": {"schema": _ERROR}},
            }
    return op


def document(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelport: Open Inference Protocol (KServe V2) REST API",
            "version": __version__,
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
