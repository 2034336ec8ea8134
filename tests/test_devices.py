"""Devices: ``cpu``, ``cuda``, ``cuda:N``, ``auto`` for every runtime, and a clear error where
a GPU is asked for and not there (never a silent CPU run).

Without a GPU (CI), the tests check the parsing, the errors, ``auto``'s fallback and the
options handed to onnxruntime. The tests marked ``gpu`` run a model on the GPU against its CPU
outputs; they skip, and say so, where there is no GPU.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelport
from modelport.devices import Device, byte_size, onnx_providers, parse_device, torch_device
from modelport.errors import ConfigError, DeviceUnavailableError
from modelport.settings import Settings
from tests.builders import onnx_mlp
from tests.conftest import skip_unless


def _cuda_for_onnx() -> bool:
    try:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        return False


def _cuda_for_torch() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


ONNX_GPU = _cuda_for_onnx()
TORCH_GPU = _cuda_for_torch()


@pytest.mark.parametrize(
    ("text", "device"),
    [
        (None, Device("cpu")),
        ("cpu", Device("cpu")),
        ("CUDA", Device("cuda", 0)),
        ("gpu", Device("cuda", 0)),
        ("cuda:1", Device("cuda", 1)),
        ("auto", Device("auto")),
    ],
)
def test_parse_device(text: str | None, device: Device) -> None:
    assert parse_device(text) == device


@pytest.mark.parametrize("text", ["tpu", "cuda:x", "cpu:1", "cuda:-1", "auto:0"])
def test_a_device_modelport_does_not_know_is_an_error_naming_it(text: str) -> None:
    with pytest.raises(ConfigError, match=f"device '{text}'"):
        parse_device(text)


def test_byte_sizes() -> None:
    assert byte_size("4GiB", "limit") == 4 * 2**30
    assert byte_size("512MB", "limit") == 512 * 2**20
    assert byte_size(1024, "limit") == 1024
    with pytest.raises(ConfigError, match="gpu_memory_limit 'lots'"):
        byte_size("lots", "gpu_memory_limit")


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return onnx_mlp(tmp_path / "mlp.onnx", (4, 8, 3), seed=0)


@pytest.mark.skipif(ONNX_GPU, reason="this machine's onnxruntime has the CUDA provider")
def test_cuda_without_onnxruntime_gpu_is_an_error_naming_what_was_found(mlp: Path) -> None:
    with pytest.raises(DeviceUnavailableError) as info:
        modelport.load(mlp, device="cuda").ensure_loaded()
    message = str(info.value)
    assert "asks for device cuda:0" in message
    assert "CPUExecutionProvider" in message and "onnxruntime-gpu" in message


def test_auto_runs_where_it_can_and_answers_as_the_cpu(mlp: Path) -> None:
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    cpu = modelport.load(mlp).ensure_loaded()
    auto = modelport.load(mlp, device="auto").ensure_loaded()
    providers = auto.session.get_providers()  # type: ignore[attr-defined]
    assert providers[0] == ("CUDAExecutionProvider" if ONNX_GPU else "CPUExecutionProvider")
    np.testing.assert_allclose(
        auto.predict_batch({"x": x})["y"], cpu.predict_batch({"x": x})["y"], rtol=1e-4, atol=1e-5
    )


def test_the_onnx_providers_a_gpu_gets() -> None:
    class Runtime:  # onnxruntime's answer on a machine with the GPU build
        __version__ = "1.23"

        @staticmethod
        def get_available_providers() -> list[str]:
            return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    options = {"device": "cuda:1", "gpu_memory_limit": "2GiB"}
    assert onnx_providers(options, Runtime, "m") == [
        ("CUDAExecutionProvider", {"device_id": 1, "gpu_mem_limit": 2 * 2**30}),
        "CPUExecutionProvider",
    ]
    options = {"device": "cuda", "tensorrt": True, "tensorrt_cache": "/cache", "dtype": "float16"}
    trt, cuda, cpu = onnx_providers(options, Runtime, "m")
    assert trt == (
        "TensorrtExecutionProvider",
        {
            "device_id": 0,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": "/cache",
            "trt_fp16_enable": True,
        },
    )
    assert (cuda[0], cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    # Explicit providers win over the device.
    assert onnx_providers({"device": "cuda", "providers": ["X"]}, Runtime, "m") == ["X"]


@pytest.mark.skipif(TORCH_GPU, reason="this machine's torch sees a GPU")
def test_cuda_with_a_cpu_build_of_torch_is_an_error_naming_the_build() -> None:
    import torch

    with pytest.raises(DeviceUnavailableError, match=r"asks for device cuda:0, but torch .*"):
        torch_device({"device": "cuda"}, torch, "m")
    assert torch_device({"device": "auto"}, torch, "m") == torch.device("cpu")
    assert torch_device({}, torch, "m") == torch.device("cpu")


def test_device_in_modelport_yaml(tmp_path: Path) -> None:
    onnx_mlp(tmp_path / "model.onnx", (4, 8, 3), seed=0)
    (tmp_path / "modelport.yaml").write_text("device: auto\n")
    assert modelport.load(tmp_path).options["device"] == "auto"
    # A keyword wins over the file.
    assert modelport.load(tmp_path, device="cpu").options["device"] == "cpu"
    (tmp_path / "modelport.yaml").write_text("device: tpu\n")
    with pytest.raises(ConfigError, match="device"):
        modelport.load(tmp_path)


def test_the_servers_device_is_a_default_a_models_own_wins() -> None:
    assert Settings(device="cuda:1").runtime_options()["device"] == "cuda:1"
    assert "device" not in Settings().runtime_options()
    with pytest.raises(ConfigError, match="device 'tpu'"):
        Settings(device="tpu")


@pytest.mark.skipif(ONNX_GPU, reason="this machine's onnxruntime has the CUDA provider")
def test_modelport_predict_on_cuda_without_a_gpu_says_so_in_one_line(
    mlp: Path, tmp_path: Path
) -> None:
    np.save(tmp_path / "x.npy", np.ones((3, 4), np.float32))
    exe = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    done = subprocess.run(
        [exe, "predict", str(mlp), str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
         "--device", "cuda"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "asks for device cuda:0" in lines[0]
    assert not (tmp_path / "y.npy").exists()


# -- on a GPU --------------------------------------------------------------------------------


@pytest.mark.gpu
@skip_unless(ONNX_GPU, "gpu", "onnxruntime-gpu and an NVIDIA GPU")
def test_onnx_on_the_gpu_answers_as_on_the_cpu(mlp: Path) -> None:
    x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
    gpu = modelport.load(mlp, device="cuda").ensure_loaded()
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"  # type: ignore[attr-defined]
    cpu = modelport.load(mlp).ensure_loaded()
    np.testing.assert_allclose(
        gpu.predict_batch({"x": x})["y"], cpu.predict_batch({"x": x})["y"], rtol=1e-3, atol=1e-4
    )


@pytest.mark.gpu
@skip_unless(TORCH_GPU, "gpu", "a CUDA build of torch and an NVIDIA GPU")
def test_torch_sees_the_gpu() -> None:
    import torch

    assert torch_device({"device": "cuda"}, torch, "m").type == "cuda"
    with pytest.raises(DeviceUnavailableError, match="GPU"):
        torch_device({"device": f"cuda:{torch.cuda.device_count()}"}, torch, "m")


# -- PyTorch ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    path = tmp_path_factory.mktemp("torch") / "net.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    return path


@pytest.mark.skipif(TORCH_GPU, reason="this machine's torch sees a GPU")
def test_a_torch_model_on_cuda_without_a_gpu_fails_its_load(scripted: Path) -> None:
    with pytest.raises(DeviceUnavailableError, match=r"CPU build|sees no GPU"):
        modelport.load(scripted, device="cuda").ensure_loaded()


def test_half_precision_answers_float32_close_to_full(scripted: Path) -> None:
    x = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)
    full = modelport.load(scripted).ensure_loaded().predict(x)
    half = modelport.load(scripted, dtype="bfloat16", device="auto").ensure_loaded()
    assert half.device.type == ("cuda" if TORCH_GPU else "cpu")  # type: ignore[attr-defined]
    out = half.predict(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, full, rtol=0.05, atol=0.05)
    with pytest.raises(ConfigError, match="dtype 'int8'"):
        modelport.load(scripted, dtype="int8").ensure_loaded()


def test_half_precision_reports_its_difference_from_float32_at_load(scripted: Path) -> None:
    from modelport.config import ModelConfig
    from modelport.signature import Signature, TensorSpec

    signature = Signature(
        inputs=(TensorSpec("input_0", "FP32", (-1, 4)),),
        outputs=(TensorSpec("output_0", "FP32", (-1, 3)),),
    )
    config = ModelConfig(signature=signature)
    half = modelport.load(scripted, config=config, dtype="bfloat16").ensure_loaded()
    diffs = half.precision_diffs  # type: ignore[attr-defined]
    assert diffs is not None and set(diffs) == {"output_0"}
    assert 0 < diffs["output_0"] < 0.1  # bfloat16 keeps about 3 significant digits
    assert modelport.load(scripted, config=config).ensure_loaded().precision_diffs is None  # type: ignore[attr-defined]
    # Without a signature there is nothing to generate rows from: it loads, unmeasured.
    unmeasured = modelport.load(scripted, dtype="bfloat16").ensure_loaded()
    assert unmeasured.precision_diffs is None  # type: ignore[attr-defined]


@pytest.mark.gpu
@skip_unless(TORCH_GPU, "gpu", "a CUDA build of torch and an NVIDIA GPU")
def test_torch_on_the_gpu_answers_as_on_the_cpu(scripted: Path) -> None:
    x = np.random.default_rng(3).standard_normal((64, 4)).astype(np.float32)
    gpu = modelport.load(scripted, device="cuda").ensure_loaded()
    assert gpu.device.type == "cuda"  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        gpu.predict(x), modelport.load(scripted).ensure_loaded().predict(x), rtol=1e-4, atol=1e-5
    )


@pytest.mark.gpu
@skip_unless(TORCH_GPU, "gpu", "a CUDA build of torch and an NVIDIA GPU")
def test_on_the_gpu_two_instances_batch_concurrent_requests_as_the_cpu(scripted: Path) -> None:
    import asyncio

    from modelport.runtime.runner import ModelRunner

    runner = ModelRunner(modelport.load(scripted, device="cuda"))
    runner.load()
    assert runner.batcher.instances == 2  # the GPU default: batches overlap
    assert runner.model.on_gpu
    xs = np.random.default_rng(4).standard_normal((256, 1, 4)).astype(np.float32)

    async def main() -> list[dict[str, np.ndarray]]:
        answers = await asyncio.gather(*(runner.batcher.submit({"input_0": x}, 1) for x in xs))
        await runner.close()
        return list(answers)

    cpu = modelport.load(scripted).ensure_loaded()
    for x, answer in zip(xs, asyncio.run(main())):
        np.testing.assert_allclose(
            next(iter(answer.values())), cpu.predict(x), rtol=1e-4, atol=1e-5
        )


@pytest.mark.gpu
@skip_unless(TORCH_GPU, "gpu", "a CUDA build of torch and an NVIDIA GPU")
def test_served_on_the_gpu_with_batching(scripted: Path, tmp_path: Path) -> None:
    """``modelport serve`` of a model with ``device: cuda``: V2 requests from 64 threads, each
    answered as the CPU answers, in batches of more than one row."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.server.conftest import infer_body, start

    directory = tmp_path / "net"
    directory.mkdir()
    shutil.copy(scripted, directory / "net.pt")
    (directory / "modelport.yaml").write_text(
        "device: cuda\n"
        "signature:\n"
        "  inputs: [{name: input_0, datatype: FP32, shape: [-1, 4]}]\n"
        "  outputs: [{name: output_0, datatype: FP32, shape: [-1, 3]}]\n"
    )
    xs = np.random.default_rng(5).standard_normal((256, 1, 4)).astype(np.float32)
    with start(directory) as live:
        (runner,) = live.dataplane.registry.runners()
        assert runner.model.on_gpu and runner.batcher.instances == 2

        def call(x: np.ndarray) -> np.ndarray:
            with httpx.Client(base_url=live.url, timeout=60) as client:
                response = client.post("/v2/models/net/infer", json=infer_body(x, "input_0"))
                assert response.status_code == 200, response.text
                out = response.json()["outputs"][0]
                return np.asarray(out["data"], np.float32).reshape(out["shape"])

        with ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(call, xs))
        metrics = httpx.get(f"{live.url}/metrics").text
    cpu = modelport.load(scripted).ensure_loaded()
    for x, answer in zip(xs, answers):
        np.testing.assert_allclose(answer, cpu.predict(x), rtol=1e-4, atol=1e-5)
    count = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("modelport_batch_size_count")
    )
    rows = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("modelport_batch_size_sum")
    )
    assert rows == 256 and count < 256  # batched
