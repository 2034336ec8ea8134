"""``POST /predict``: a JSON payload in, ``model(payload)`` out; ``GET /health``."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import modelport

from .prediction import get_model


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    model = get_model()
    return JsonResponse({"status": "ok", "model": model.name, "version": model.version})


@csrf_exempt  # an API called by programs, which hold no CSRF cookie
@require_POST
def predict(request: HttpRequest) -> JsonResponse:
    try:
        payload = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = f"send a JSON body (content-type: application/json): {exc}"
        return JsonResponse({"error": message}, status=400)
    try:
        predictions = get_model()(payload)  # preprocess -> predict -> postprocess
    except modelport.InvalidInputError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"predictions": predictions})
