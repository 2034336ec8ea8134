"""C2, the transport ceiling: the smallest ASGI app that answers a V2 inference POST.

No framework, no parsing, no model: it drains the request body and answers the precomputed V2
response read from ``BENCH_RESPONSE`` at start. Served by the same ASGI server and event loop
as modelport (uvicorn, httptools, uvloop). ``GET /count`` returns how many POSTs it answered,
which lets the harness's tests check the load generator's counts.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_BODY = Path(os.environ["BENCH_RESPONSE"]).read_bytes()
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
]
_START = {"type": "http.response.start", "status": 200, "headers": _HEADERS}
_ANSWER = {"type": "http.response.body", "body": _BODY}
_served = 0


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI callable."""
    global _served
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        count = str(_served).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": count})
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(_START)
    await send(_ANSWER)
    _served += 1
