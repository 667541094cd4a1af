"""A whole slide through the HTTP service, end to end, on the CPU or a GPU; and the Ray batch command. Prints JSON.

One command gives the table of issue 28 (a slide, not a field; the GPU path measured end to end):

* a real ``python -m service serve`` on 127.0.0.1 with the shipped model, on ``--device cpu`` (the CPU provider
  only) or ``--device cuda`` (``TBSEG_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider``; the run stops if the
  model did not load on CUDA);
* ``--fields`` distinct fields made from the real ZNSM-iDB MS-2 fields (each real field, then its mirror images and
  its half-turn, re-encoded as JPEG quality 95: as many distinct fields as a slide needs, none a duplicate);
* for each mode of ``--modes``: the slide sent **as one job** (``POST /v1/jobs?slide_id=…``, polled until done) and
  **as one request per field from 2 clients** (``POST /v1/slides/{id}/fields``); wall time from the first byte
  sent to the last answer, fields per second, each request's seconds (median, p95), the server's peak RSS (VmHWM)
  and, on CUDA, the peak GPU memory of the server's process (``nvidia-smi``, sampled every 0.2 s);
* agreement: each field's kept bacilli between the job and the requests, and between this run and a CPU reading
  in this process (the engine on the CPU provider, ``--check-fields`` fields), per mode;
* with ``--ray``: ``python -m service batch-ray`` over the same fields with one worker (one GPU with ``--device
  cuda``), timed from start to exit, and its counts against the job's.

Exact mode reads a 2592×1944 field in about a minute on 2 CPU cores: ``--exact-fields`` (default 10) limits it on the
CPU. Run it alone on the machine.

    .venv/bin/python bench/slide_end_to_end.py --device cpu --fields 100 --out bench/results/slide_cpu_2cores.json
    .venv/bin/python bench/slide_end_to_end.py --device cuda --fields 100 --modes fast exact --exact-fields 100 \\
        --ray --out bench/results/slide_cuda.json        # a person with an NVIDIA GPU: the '.[gpu,ray]' extras
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.json_output import emit_json  # noqa: E402
from tests.service.e2e.conftest import LiveServer, start_server, stop_server  # noqa: E402
from training.paths import SHIPPED_DIR, ZNSM_MS2  # noqa: E402

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider,CPUExecutionProvider"}
POLL_S = 0.2  # a scripted client polling its job's state
VARIANTS = ("as is", "mirrored left-right", "mirrored top-bottom", "half-turned")


def make_fields(data: Path, count: int, out: Path) -> list[Path]:
    """``count`` distinct JPEG fields from the real ones: each field, then its mirrors, then its half-turn."""
    images = sorted(p for p in (data / "images").glob("*.jpg"))
    if not images:
        raise SystemExit(f"{data}/images: no fields (the shared data set is needed)")
    if count > len(images) * len(VARIANTS):
        raise SystemExit(f"at most {len(images) * len(VARIANTS)} distinct fields from {data}")
    made = []
    for n in range(count):
        variant, source = divmod(n, len(images))
        rgb = Image.open(images[source]).convert("RGB")
        rgb = [rgb, ImageOps.mirror(rgb), ImageOps.flip(rgb), rgb.rotate(180)][variant]
        path = out / f"f{n:03d}-{images[source].stem}-{variant}.jpg"
        rgb.save(path, format="JPEG", quality=95)
        made.append(path)
    return made


class Sampler:
    """The server's peak resident memory (VmHWM) and, on CUDA, its peak GPU memory, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.gpu_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.nvidia_smi = shutil.which("nvidia-smi")

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            if self.nvidia_smi:
                query = [self.nvidia_smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
                lines = subprocess.run(query, capture_output=True, text=True, check=False).stdout.splitlines()
                for line in lines:
                    pid, _, used = line.partition(",")
                    if pid.strip() == str(self.pid) and used.strip().isdigit():
                        self.gpu_mb = max(self.gpu_mb, float(used))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def as_job(server: LiveServer, paths: list[Path], mode: str, slide_id: str) -> dict[str, Any]:
    """The slide as one job: seconds from the submit to the job done, and each field's kept bacilli."""
    started = time.perf_counter()
    accepted = httpx.post(
        f"{server.url}/v1/jobs", params={"slide_id": slide_id, "mode": mode}, files=_files(paths), timeout=600
    )
    if accepted.status_code != 202:
        raise SystemExit(f"job refused: {accepted.status_code} {accepted.text[:500]}")
    status_url = f"{server.url}{accepted.json()['status_url']}"
    polls = 0
    with httpx.Client(timeout=60) as client:  # one connection, as a client that polls keeps it
        while (state := client.get(status_url).json())["state"] not in ("done", "failed"):
            polls += 1
            time.sleep(POLL_S)
    seconds = time.perf_counter() - started
    if state["state"] != "done":
        raise SystemExit(f"job failed: {state}")
    result = httpx.get(f"{status_url}/result", timeout=120).json()
    counts = {r["name"]: r["count"] for r in result["results"]}
    sources = Counter(str((r.get("scale") or {}).get("source")) for r in result["results"])
    return {
        "seconds": round(seconds, 2),
        "fields_per_second": round(len(paths) / seconds, 3),
        "poll_every_s": POLL_S,
        "polls": polls,
        "scale_sources": dict(sorted(sources.items())),
        "counts": counts,
    }


def as_requests(server: LiveServer, paths: list[Path], mode: str, slide_id: str, clients: int = 2) -> dict[str, Any]:
    """The slide as one request per field from ``clients`` clients (503 answers are retried after Retry-After)."""
    latencies: list[float] = []
    counts: dict[str, int] = {}
    sources: Counter[str] = Counter()
    retries = 0

    local = threading.local()
    opened: list[httpx.Client] = []

    def send(path: Path) -> None:
        nonlocal retries
        data = path.read_bytes()
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=600)  # each client keeps its connection
            opened.append(local.client)
        while True:
            began = time.perf_counter()
            answer = local.client.post(
                f"{server.url}/v1/slides/{slide_id}/fields",
                params={"mode": mode},
                files=[("files", (path.name, data, "image/jpeg"))],
            )
            if answer.status_code == 503:
                retries += 1
                time.sleep(float(answer.headers.get("retry-after", "1")))
                continue
            if answer.status_code != 200:
                raise SystemExit(f"{path.name}: {answer.status_code} {answer.text[:500]}")
            latencies.append(time.perf_counter() - began)
            field = next(f for f in answer.json()["fields"] if f["name"] == path.name)
            counts[path.name] = field["objects"]
            sources[str(field.get("scale_source"))] += 1
            return

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, paths))
    seconds = time.perf_counter() - started
    for client in opened:
        client.close()
    ordered = sorted(latencies)
    return {
        "seconds": round(seconds, 2),
        "fields_per_second": round(len(paths) / seconds, 3),
        "clients": clients,
        "request_seconds_median": round(statistics.median(ordered), 3),
        "request_seconds_p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "retries_after_503": retries,
        "scale_sources": dict(sorted(sources.items())),
        "counts": counts,
    }


def cpu_counts(paths: list[Path], mode: str) -> dict[str, int]:
    """Each field's kept bacilli by the engine on the CPU provider in this process, as the service reads it."""
    from service.engine.loading import load_segmenter
    from service.engine.model_folder import open_folder
    from service.engine.segmenter import Mode
    from service.field_result import FieldOptions, segment_field
    from service.settings import Settings

    settings = Settings(providers=PROVIDERS["cpu"])
    segmenter = load_segmenter(settings.segmenter_config(open_folder(SHIPPED_DIR)))
    options = FieldOptions(mode=Mode(mode))
    return {
        p.name: len(
            segment_field(
                segmenter, p.read_bytes(), max_pixels=settings.max_pixels, options=options
            ).segmentation.bacilli
        )
        for p in paths
    }


def agreement(a: dict[str, int], b: dict[str, int]) -> dict[str, Any]:
    shared = sorted(set(a) & set(b))
    differing = [name for name in shared if a[name] != b[name]]
    return {"fields": len(shared), "same_count": len(shared) - len(differing), "differing": differing[:10]}


def ray_batch(paths: list[Path], mode: str, device: str, out: Path) -> dict[str, Any]:
    listing = out / "fields.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    command = [sys.executable, "-m", "service", "batch-ray", str(listing), "-o", str(out / "ray"), "--mode", mode]
    command += ["--workers", "1", "--gpus-per-worker", "1" if device == "cuda" else "0"]
    env = {**os.environ, "TBSEG_PROVIDERS": PROVIDERS[device], "TBSEG_LOG_LEVEL": "warning"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"batch-ray failed ({done.returncode}):\n{done.stderr[-2000:]}")
    import pyarrow.parquet as pq

    rows = [r for f in sorted((out / "ray" / "fields").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    counts = {Path(r["field_id"]).name: int(r["count"]) for r in rows}
    summary = json.loads(done.stdout)
    return {
        "seconds_start_to_exit": round(seconds, 2),
        "fields_per_second": round(len(paths) / seconds, 3),
        "summary_fields_per_second": summary.get("fields_per_second"),
        "counts": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=sorted(PROVIDERS), default="cpu")
    parser.add_argument("--data", type=Path, default=ZNSM_MS2, help="ZNSM-iDB MS-2 (default: %(default)s)")
    parser.add_argument("--fields", type=int, default=100, help="fields of the slide (default 100)")
    parser.add_argument("--modes", nargs="+", default=["fast"], choices=("fast", "exact"))
    parser.add_argument("--exact-fields", type=int, default=10, help="at most this many fields in exact mode")
    parser.add_argument("--check-fields", type=int, default=5, help="fields read again on the CPU in this process")
    parser.add_argument(
        "--ways", nargs="+", default=["job", "requests"], choices=("job", "requests"), help="as one job, as requests"
    )
    parser.add_argument("--ray", action="store_true", help="also the batch-ray command with one worker")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    record: dict[str, Any] = {
        "bench": "slide_end_to_end",
        "device": args.device,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": SHIPPED_DIR.name,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        paths = make_fields(args.data, args.fields, work)
        sizes = {Image.open(p).size for p in paths}
        record["fields"] = {"count": len(paths), "sizes": sorted(sizes), "from": str(args.data)}
        server = start_server(
            ROOT / "models",
            work / "server.log",
            timeout_s=300,
            providers=PROVIDERS[args.device],
            max_files_per_request=str(max(64, len(paths))),
            max_upload_bytes=str(1024 * 1024 * 1024),
            queue_size="8",
            log_level="warning",
        )
        try:
            model = httpx.get(f"{server.url}/v1/model", timeout=60).json()
            record["providers"] = model["providers"]
            if args.device == "cuda" and model["providers"][0] != "CUDAExecutionProvider":
                raise SystemExit(f"the model did not load on CUDA: {model['providers']}")
            with Sampler(server.process.pid) as sampler:
                for mode in args.modes:
                    part = paths[: args.exact_fields] if mode == "exact" and args.device == "cpu" else paths
                    run: dict[str, Any] = {"mode": mode, "fields": len(part)}
                    readings: dict[str, dict[str, Any]] = {}
                    if "job" in args.ways:
                        job = readings["job"] = as_job(server, part, mode, f"job-{mode}")
                        print(json.dumps({"mode": mode, "job_s": job["seconds"]}), file=sys.stderr, flush=True)
                        run["as_one_job"] = {k: v for k, v in job.items() if k != "counts"}
                        run["seconds_per_field_job"] = round(job["seconds"] / len(part), 3)
                    if "requests" in args.ways:
                        requests = readings["requests"] = as_requests(server, part, mode, f"requests-{mode}")
                        took = {"mode": mode, "requests_s": requests["seconds"]}
                        print(json.dumps(took), file=sys.stderr, flush=True)
                        run["as_requests"] = {k: v for k, v in requests.items() if k != "counts"}
                        run["seconds_per_field_requests"] = round(requests["seconds"] / len(part), 3)
                    if len(readings) == 2:
                        run["job_vs_requests"] = agreement(readings["job"]["counts"], readings["requests"]["counts"])
                    first = next(iter(readings.values()))
                    checked = part[: args.check_fields]
                    run[f"{next(iter(readings))}_vs_cpu_engine"] = agreement(first["counts"], cpu_counts(checked, mode))
                    run["bacilli_kept"] = sum(first["counts"].values())
                    if args.ray:
                        ray = ray_batch(part, mode, args.device, work)
                        run["ray_one_worker"] = {k: v for k, v in ray.items() if k != "counts"}
                        run[f"ray_vs_{next(iter(readings))}"] = agreement(ray["counts"], first["counts"])
                    run["server_peak_rss_mb"] = sampler.rss_mb()
                    run["server_peak_gpu_mb"] = sampler.gpu_mb if sampler.nvidia_smi else None
                    record["runs"].append(run)
                    print(json.dumps(run), file=sys.stderr, flush=True)
        finally:
            stop_server(server)
    emit_json(record, args.out)


if __name__ == "__main__":
    main()
