"""The images, built and run: the CPU image from ``docker/cpu.Dockerfile`` serves a real field in a container.

Built and run with podman, daemonless, as the README's Docker section says: the base is Debian bookworm made from
Debian's own packages (``mmdebstrap``; no registry of base images is reachable here) and passed as the Dockerfile's
``BASE_IMAGE``, so the file built is exactly the one users build with ``python:3.11-slim``. One build per run (the
layers are cached across runs on one machine). Skipped, saying why, where podman cannot run: not root, or the
Debian packages ``podman runc mmdebstrap`` missing (``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from tests.service.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BASE = "localhost/debian-python:bookworm"
CPU_IMAGE = "localhost/tbseg:cpu-test"
GPU_IMAGE = "localhost/tbseg:gpu-ray-test"
# the default limits cannot be raised here and the default runtime refuses this machine's cgroups
RUN_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "host")
GRACE_S = 20  # the container's TBSEG_SHUTDOWN_GRACE_S in these tests; podman stop waits a little longer


def _why_not() -> str | None:
    if os.name != "posix" or os.geteuid() != 0:
        return "podman builds and runs images here only as root (rootless has no user namespaces in this sandbox)"
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install podman runc mmdebstrap; .ci/run does)"
    return None


needs_podman = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``podman ARGS``; on failure the error names the command and shows its output."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
        )
    return done


def _base_image(workdir: Path) -> str:
    """Debian bookworm (Python 3.11 and its venv module) from Debian's packages, imported once per machine."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return BASE
    tarball = workdir / "base.tar"
    subprocess.run(
        ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm", str(tarball)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    podman("import", str(tarball), BASE)
    tarball.unlink()
    return BASE


def _build(dockerfile: str, tag: str, workdir: Path, *build_args: str) -> None:
    """``podman build`` of a Dockerfile of the project, with pip reaching the host's package index: the host's CA
    certificates and a pip.conf naming them are mounted for the build only (nothing of them stays in the image)."""
    pip_conf = workdir / "pip.conf"
    pip_conf.write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    podman(
        "build",
        "--isolation",
        "chroot",
        "--format",
        "docker",  # HEALTHCHECK and STOPSIGNAL are kept only in the Docker image format
        "--network",
        "host",
        "--volume",
        "/etc/ssl/certs:/etc/ssl/certs:ro",
        "--volume",
        f"{pip_conf}:/etc/pip.conf:ro",
        *[flag for arg in build_args for flag in ("--build-arg", arg)],
        "-f",
        dockerfile,
        "-t",
        tag,
        str(ROOT),
        timeout=1500,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _base_image(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def gpu_build(base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[None]]:
    """The GPU file's build, started at once in the background: it is mostly downloading and unpacking, so it
    overlaps the CPU image's build and run (one build of each per run)."""
    workdir = tmp_path_factory.mktemp("gpu")
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(_build, "docker/gpu.Dockerfile", GPU_IMAGE, workdir, f"CUDA_IMAGE={base}", "WITH_RAY=1")


@pytest.fixture(scope="module")
def cpu_image(base: str, gpu_build: Future[None], tmp_path_factory: pytest.TempPathFactory) -> str:
    _build("docker/cpu.Dockerfile", CPU_IMAGE, tmp_path_factory.mktemp("cpu"), f"BASE_IMAGE={base}")
    return CPU_IMAGE


@pytest.fixture(scope="module")
def volume() -> Iterator[str]:
    name = f"tbseg-test-{uuid.uuid4().hex[:8]}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


class Container:
    """One ``podman run -d`` of an image, on a port of its own, removed at the end."""

    def __init__(self, image: str, volume: str) -> None:
        self.port = free_port()
        self.name = f"tbseg-test-{uuid.uuid4().hex[:8]}"
        self.url = f"http://127.0.0.1:{self.port}"
        podman(
            "run",
            "-d",
            "--name",
            self.name,
            *RUN_FLAGS,
            "--env",
            f"TBSEG_PORT={self.port}",
            "--env",
            f"TBSEG_SHUTDOWN_GRACE_S={GRACE_S}",
            "--volume",
            f"{volume}:/data",
            image,
        )

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-6000:]

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = podman("inspect", "--format", "{{.State.Running}}", self.name).stdout.strip()
            assert state == "true", f"the container exited before it was ready:\n{self.logs()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"/readyz never turned 200 in {timeout_s} s:\n{self.logs()}")

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture
def containers(volume: str) -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def default_model() -> str:
    return (ROOT / "models" / "DEFAULT_MODEL").read_text().strip()


def _host_count(data: bytes, microns_per_pixel: float) -> int:
    """The field's kept bacilli through this checkout's own engine and default shipped model, on the host, read as
    the service reads it by default (fast mode)."""
    from service.engine.loading import load_segmenter
    from service.engine.model_folder import scan_models
    from service.field_result import FieldOptions, segment_field
    from service.settings import Settings

    settings = Settings(providers="CPUExecutionProvider")
    (folder,) = [f for f in scan_models(settings.models_dir) if f.path.name == default_model()]
    options = FieldOptions(mode=settings.mode, microns_per_pixel=microns_per_pixel)
    result = segment_field(
        load_segmenter(settings.segmenter_config(folder)), data, max_pixels=settings.max_pixels, options=options
    )
    return len(result.segmentation.bacilli)


@needs_podman
def test_the_cpu_image_serves_a_field_keeps_slides_and_stops_on_sigterm(
    cpu_image: str, volume: str, containers: list[Container], znsm_ms2: Path
) -> None:
    first = Container(cpu_image, volume)
    containers.append(first)
    first.wait_ready()

    # the process is the image's non-root user, and the image's HEALTHCHECK command passes inside
    status = podman("exec", first.name, "cat", "/proc/1/status").stdout
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid != "0" and podman("exec", first.name, "id", "-un").stdout.strip() == "tbseg"
    health = podman("healthcheck", "run", first.name, check=False)
    assert health.returncode == 0, f"HEALTHCHECK failed: {health.stdout}{health.stderr}"

    # a real field through the container: a slide in /data, graded, the same count as the host's engine
    name, data = "19.jpg", (znsm_ms2 / "images" / "19.jpg").read_bytes()  # a test-split field with bacilli
    pixel_size = json.loads((ROOT / "models" / default_model() / "scale.json").read_text())["pixel_size_um"]
    response = httpx.post(
        f"{first.url}/v1/slides",
        params={"slide_id": "container-slide", "microns_per_pixel": pixel_size},
        files=[("files", (name, data, "image/jpeg"))],
        timeout=300,
    )
    assert response.status_code == 201, response.text
    report = response.json()
    field = report["fields"][0]
    assert field["name"] == name and field["readable"] is True and field["mode"] == "fast"
    assert field["objects"] == _host_count(data, pixel_size) > 0

    # SIGTERM (podman stop) ends it cleanly within the grace period
    started = time.monotonic()
    podman("stop", "--time", str(GRACE_S + 10), first.name, timeout=GRACE_S + 60)
    stopped_in = time.monotonic() - started
    exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", first.name).stdout.strip()
    assert exit_code == "0" and stopped_in < GRACE_S, f"exit {exit_code} after {stopped_in:.1f} s:\n{first.logs()}"

    # a new container on the same volume still has the slide
    second = Container(cpu_image, volume)
    containers.append(second)
    second.wait_ready()
    again = httpx.get(f"{second.url}/v1/slides/container-slide", timeout=30)
    assert again.status_code == 200, again.text
    assert again.json()["fields"] == report["fields"] and again.json()["total_afb"] == report["total_afb"]


@needs_podman
def test_the_cpu_image_is_lean(cpu_image: str) -> None:
    """No training code, no TensorFlow, no test or benchmark folders; the size is printed for the README."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", cpu_image).stdout.strip())
    probe = (
        "import importlib.util as u, json, os; print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('tensorflow', 'training', 'onnxruntime', 'service')} | {'app': sorted(os.listdir('/app'))}))"
    )
    found = json.loads(podman("run", "--rm", *RUN_FLAGS, "--entrypoint", "python", cpu_image, "-c", probe).stdout)
    print(json.dumps({"image": cpu_image, "size_mb": round(size / 1e6)}))
    assert found["onnxruntime"] and found["service"]
    assert not found["tensorflow"] and not found["training"]
    assert not {"tests", "training", "bench", ".git"} & set(found["app"])
    assert size < 800e6, f"the CPU image is {size / 1e6:.0f} MB"


@needs_podman
def test_the_gpu_dockerfile_builds_on_debian_with_ray(gpu_build: Future[None]) -> None:
    """CUDA itself cannot be tested here: the GPU file is built on the Debian base (Python from the base's own
    archive instead of deadsnakes) in its WITH_RAY variant, and what it installed is checked inside."""
    gpu_build.result(timeout=1800)
    probe = (
        "import importlib.metadata as m, json, sys; import ray, onnxruntime, service; print(json.dumps({"
        "'python': list(sys.version_info[:2]), 'ort': m.version('onnxruntime-gpu'), 'ray': ray.__version__, "
        "'cpu_ort': [d.metadata['Name'] for d in m.distributions() if d.metadata['Name'] == 'onnxruntime']}))"
    )
    found = json.loads(podman("run", "--rm", *RUN_FLAGS, "--entrypoint", "python", GPU_IMAGE, "-c", probe).stdout)
    assert found["python"] == [3, 11] and found["ort"] == "1.31.1" and found["ray"] == "2.60.0"
    assert found["cpu_ort"] == [], "the GPU image must not carry the CPU onnxruntime beside onnxruntime-gpu"
    user = podman("image", "inspect", "--format", "{{.Config.User}}", GPU_IMAGE).stdout.strip()
    assert user == "tbseg"
    podman("rmi", "--force", GPU_IMAGE, check=False)


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed (.ci/run installs it)")
@pytest.mark.parametrize("profile", [None, "gpu"])
def test_compose_file_is_valid_for_podman_compose(profile: str | None) -> None:
    """``podman-compose config`` (a real compose parser; a dev dependency) accepts docker-compose.yml and resolves
    the services, build files and volumes it names, with and without the gpu profile."""
    compose = Path(sys.executable).with_name("podman-compose")
    command = [
        str(compose),
        "-f",
        str(ROOT / "docker-compose.yml"),
        *(["--profile", profile] if profile else []),
        "config",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    expected = {"tbseg", "tbseg-gpu"} if profile else {"tbseg"}
    assert set(config["services"]) == expected
    for name in expected:
        service = config["services"][name]
        assert (ROOT / service["build"]["dockerfile"]).is_file()
        assert (
            service["volumes"][0].split(":")[1] == "/data" and service["volumes"][0].split(":")[0] in config["volumes"]
        )
