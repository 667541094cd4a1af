"""What can be checked of the containers without a Docker engine: the files parse and name what exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_compose_parses_and_its_paths_exist() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"tbseg", "tbseg-gpu"}
    assert "profiles" not in services["tbseg"] and services["tbseg-gpu"]["profiles"] == ["gpu"]
    for service in services.values():
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        container_port = int(service["ports"][0].rsplit(":", 1)[1])
        assert container_port == 8000
        # slides and jobs persist in a named volume at the images' TBSEG_DATA_DIR
        (volume,) = service["volumes"]
        assert volume.split("#")[0].strip().split(":")[0] in compose["volumes"] and volume.split(":")[1].startswith(
            "/data"
        )
        dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
        assert "TBSEG_DATA_DIR=/data" in dockerfile and "chown tbseg:tbseg /data" in dockerfile
    devices = services["tbseg-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_dockerfiles_are_non_root_with_a_healthcheck_and_copy_what_exists() -> None:
    for name in ("cpu.Dockerfile", "gpu.Dockerfile"):
        steps = _instructions(ROOT / "docker" / name)
        kinds = [kind for kind, _ in steps]
        assert "HEALTHCHECK" in kinds and "/readyz" in dict(steps)["HEALTHCHECK"]
        users = [arg for kind, arg in steps if kind == "USER"]
        assert users and users[-1] not in ("root", "0")
        assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN" and "pip install" in steps[i][1])
        for kind, arg in steps:
            if kind == "COPY":
                for source in arg.split()[:-1]:
                    assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
        assert 'CMD ["python", "-m", "service", "serve"]' in (ROOT / "docker" / name).read_text()
    assert "onnxruntime-gpu" in (ROOT / "docker" / "gpu.Dockerfile").read_text()
    assert "training" in (ROOT / ".dockerignore").read_text().split()
