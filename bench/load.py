"""Load: N concurrent clients post fields to a running service for a fixed time; prints JSON.

Every request must end in 200 or in 503 with Retry-After (the bounded queue refusing at once); anything else
(5xx, other 4xx, connection resets, timeouts) is counted and listed. The server's resident memory is sampled
through the run (``--pid``, or the server this script starts), so growth shows.

    .venv/bin/python bench/load.py --clients 8 --seconds 60                  # starts its own server (shipped model)
    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --pid 1234    # an already running one
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service.e2e.conftest import start_server, stop_server  # noqa: E402
from training.data.synthetic import synthetic_field  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def field_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(synthetic_field(7, height=side, width=side).image).save(buffer, format="PNG")
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service (default: start one on the shipped model)")
    parser.add_argument("--pid", type=int, help="the running service's process id, for its memory")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--side", type=int, default=256, help="side of the square test field in pixels")
    parser.add_argument("--path", default="/v1/analyze", help="route to post to")
    parser.add_argument("--tile", default="256", help="TBSEG_TILE_PX of the server this script starts")
    parser.add_argument("--queue", default="4", help="TBSEG_QUEUE_SIZE of the server this script starts")
    args = parser.parse_args()

    server = None
    if args.url is None:
        log = Path(tempfile.mkdtemp()) / "server.log"
        server = start_server(ROOT / "models", log, tile_px=args.tile, queue_size=args.queue)
        url, pid = server.url, server.process.pid
    else:
        url, pid = args.url, args.pid
    body = field_png(args.side)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    refused_latencies: list[float] = []
    problems: list[str] = []
    memory: list[tuple[float, float]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()

    def client() -> None:
        with httpx.Client(timeout=300) as http:
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    response = http.post(f"{url}{args.path}", content=body, headers={"content-type": "image/png"})
                except httpx.HTTPError as exc:
                    with lock:
                        statuses[type(exc).__name__] += 1
                        problems.append(f"{type(exc).__name__}: {exc}")
                    continue
                seconds = time.monotonic() - t0
                with lock:
                    statuses[str(response.status_code)] += 1
                    if response.status_code == 200:
                        latencies.append(seconds)
                    elif response.status_code == 503 and "retry-after" in response.headers:
                        refused_latencies.append(seconds)
                    else:
                        problems.append(f"{response.status_code}: {response.text[:200]}")
                if response.status_code == 503:
                    time.sleep(min(float(response.headers.get("retry-after", "1")), 1.0) * 0.2)

    def sample_memory() -> None:
        while time.monotonic() < deadline and pid:
            memory.append((round(time.monotonic() - started, 1), round(rss_mb(pid), 1)))
            time.sleep(1)

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    threads.append(threading.Thread(target=sample_memory))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if server is not None:
        stop_server(server)
    rss = [m for _, m in memory]
    half = len(rss) // 2
    ok = all(k in ("200", "503") for k in statuses) and not problems
    print(
        json.dumps(
            {
                "url": url,
                "path": args.path,
                "clients": args.clients,
                "seconds": round(elapsed, 1),
                "field_px": [args.side, args.side],
                "requests": sum(statuses.values()),
                "statuses": dict(statuses),
                "throughput_ok_per_s": round(len(latencies) / elapsed, 3),
                "latency_ok_s": {
                    "p50": percentile(latencies, 50),
                    "p90": percentile(latencies, 90),
                    "p99": percentile(latencies, 99),
                    "max": round(max(latencies), 3) if latencies else None,
                    "mean": round(statistics.fmean(latencies), 3) if latencies else None,
                },
                "latency_503_s": {"p50": percentile(refused_latencies, 50), "max": percentile(refused_latencies, 100)},
                "server_rss_mb": {
                    "first": rss[0] if rss else None,
                    "max": max(rss) if rss else None,
                    "last": rss[-1] if rss else None,
                    "mean_first_half": round(statistics.fmean(rss[:half]), 1) if half else None,
                    "mean_second_half": round(statistics.fmean(rss[half:]), 1) if half else None,
                },
                "only_200_and_503_with_retry_after": ok,
                "problems": problems[:20],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
