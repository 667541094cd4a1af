"""A real uvicorn process on 127.0.0.1 serving the real ONNX model, for end-to-end tests."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import install_model

REPO_ROOT = Path(__file__).resolve().parents[3]


def png_bytes(array: np.ndarray) -> bytes:
    """An image array encoded as PNG, as a client sends it."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def finished_job(status_url: str, timeout_s: float = 30.0) -> dict[str, object]:
    """Poll a job's status until it is done or failed (or ``timeout_s`` passes); returns the last status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, object] = httpx.get(status_url).json()
        if status["state"] in ("done", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def model_id_of(dense: Path) -> str:
    """The ``model_id`` a dense ONNX file declares."""
    from service.engine.model import OnnxModel

    return OnnxModel(dense, providers=("CPUExecutionProvider",)).meta.model_id


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    model: Path, log_path: Path, timeout_s: float = 120, object_filter: Path | None = None, **settings: str
) -> LiveServer:
    """Start ``python -m service serve`` with TBSEG_* settings and wait until /readyz answers 200.

    ``model`` is a models directory, or a dense ONNX file (with ``object_filter``) served as the one model of a
    models directory made beside the log."""
    if model.is_file():
        models = log_path.parent / f"models-{log_path.stem}"
        model = install_model(models, model, object_filter)
    port = free_port()
    env = {
        **os.environ,
        "TBSEG_MODELS_DIR": str(model),
        "TBSEG_HOST": "127.0.0.1",
        "TBSEG_PORT": str(port),
        "TBSEG_PROVIDERS": "CPUExecutionProvider",
        "TBSEG_DATA_DIR": str(log_path.parent / "data"),  # never the repository's var/
        "TBSEG_LABS_DIR": str(log_path.parent / "no-labs"),  # nor its labs/ (profiles of the shipped model only)
        **{f"TBSEG_{k.upper()}": str(v) for k, v in settings.items()},
    }
    handle = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"], cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return LiveServer(url, process, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server not ready in {timeout_s} s:\n{log_path.read_text(errors='replace')}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def random_server(random_dense_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service on the random-weight model: small tiles, small limits, a queue of one."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    server = start_server(
        random_dense_onnx,
        log_path,
        tile_px="96",
        max_pixels="2000000",
        max_upload_bytes="3000000",
        inference_workers="1",
        queue_size="1",
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def shipped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service on the model shipped in models/, with its default settings."""
    server = start_server(REPO_ROOT / "models", tmp_path_factory.mktemp("shipped") / "server.log")
    yield server
    stop_server(server)
