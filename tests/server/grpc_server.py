"""A real gRPC server on a loopback port, run in its own thread and event loop, so blocking
clients (tritonclient.grpc) can call it from the test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import numpy as np

from modelport import Model
from modelport.config import BatchingConfig, ModelConfig
from modelport.runtime.dataplane import DataPlane
from modelport.server.grpc import bound_port, start_grpc_server, stop_grpc_server
from modelport.signature import Signature, TensorSpec

T = TypeVar("T")
HANG_GUARD = 60  # seconds before a broken test gives up instead of hanging CI


class ServerThread:
    """``DataPlane(models)`` served by ``start_grpc_server`` on 127.0.0.1 and a free port."""

    def __init__(self, models: Iterable[Model], settings: Any = None, metrics: Any = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.dataplane, self.server = self.call(self._start(list(models), settings, metrics))
        self.port = bound_port(self.server)
        self.url = f"127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and wait for it."""
        return self.call_soon(coro).result(HANG_GUARD)

    def call_soon(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the server's loop; its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def _start(
        self, models: list[Model], settings: Any, metrics: Any
    ) -> tuple[DataPlane, Any]:
        dataplane = DataPlane(models, metrics=metrics)
        await dataplane.load()
        return dataplane, await start_grpc_server(dataplane, "127.0.0.1", 0, settings)

    def close(self) -> None:
        try:
            self.call(stop_grpc_server(self.server, grace=5))
            self.call(self.dataplane.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(HANG_GUARD)
            self.loop.close()


class Words(Model):
    """BYTES in, BYTES and INT32 out; raises on the word ``boom``."""

    signature = Signature(
        inputs=(TensorSpec("text", "BYTES", (-1,)),),
        outputs=(TensorSpec("upper", "BYTES", (-1,)), TensorSpec("length", "INT32", (-1,))),
    )

    def predict(self, inputs: Any) -> Any:
        text = inputs["text"].tolist()
        if b"boom" in text:
            raise RuntimeError("the model refuses to say boom")
        return {
            "upper": np.array([t.upper() for t in text], dtype=object),
            "length": np.array([len(t) for t in text], dtype=np.int32),
        }


class Gate(Model):
    """``y = 2 x``, but each call waits for ``release``; ``entered`` tells it has started."""

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 1)),), outputs=(TensorSpec("y", "FP32", (-1, 1)),)
    )

    def __init__(self, name: str = "gate", queue: int = 1024, batch: int = 1) -> None:
        super().__init__(
            config=ModelConfig(
                name=name,
                warmup={"enabled": False},
                batching=BatchingConfig(max_batch_size=batch, max_queue_size=queue),
            )
        )
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, inputs: Any) -> Any:
        self.entered.set()
        self.release.wait(HANG_GUARD)
        return {"y": inputs["x"] * 2}
