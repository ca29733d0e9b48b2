"""A served model under load: ``mlflow models serve`` on 127.0.0.1, concurrent clients.

    pytest benchmarks/test_serving.py --benchmark-enable -s -p no:cacheprovider

A small model (offline EfficientNet-Lite0, 128 px, fitted on 8 demo images by
``python -m dfmx``) is served with 1, 2 and 4 uvicorn workers. For each case
:data:`CLIENTS` client threads send base64 PNG demo images (256x256): :data:`REQUESTS`
requests of 1 image, or an eighth as many of 8 images (a fixed count: the test stops by
itself). The timed requests follow a warm-up of :data:`WARMUP` times as many untimed ones
(at least two per client and worker): the server's memory grows while its request threads
first run the model, and the warm-up lets that growth happen before the first memory
figure (the figures with and without it: ``docs/serving.md``, "Under load").

Printed per case: failed requests (asserted 0), p50 and p95 latency per request and per
image, images/s, and the server's memory (the sum of ``VmRSS`` over its process group)
after the warm-up, half-way and at the end. "Memory flat after warm-up" is asserted as: the
end figure is at most :data:`RSS_GROWTH` above the after-warm-up one. The CPU model is
printed with the figures. Only loopback addresses are used.

``DFMX_SERVE_REQUESTS`` sets the count of timed 1-image requests (default
:data:`REQUESTS`), ``DFMX_SERVE_WARMUP`` the warm-up fraction (default :data:`WARMUP`;
``0``: two requests per client and worker).
"""

from __future__ import annotations

import base64
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dfmx.data.demo import demo_root

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serving"))
from served_model import LoggedModel, log_small_model, post, serve

CLIENTS = 4
REQUESTS = int(os.environ.get("DFMX_SERVE_REQUESTS", "400"))
#: Untimed warm-up requests, as a fraction of the timed ones.
WARMUP = float(os.environ.get("DFMX_SERVE_WARMUP", "0.25"))
#: Largest growth of the server's memory from the end of the warm-up to the end of a case.
RSS_GROWTH = 0.05
CASES = [(1, 1), (2, 1), (1, 8), (2, 8), (4, 1)]  # (workers, images per request)


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (and the CPUs this process may use)."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0))} CPUs"


def group_rss_mb(pgid: int) -> float:
    """Sum of ``VmRSS`` (MiB) over the processes of process group ``pgid``."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total_kb / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoggedModel:
    cache = tmp_path_factory.mktemp("cache")
    return log_small_model(cache, demo_root(cache), tmp_path_factory.mktemp("job"))


@pytest.fixture(scope="module")
def payloads(model: LoggedModel) -> Iterator[dict[int, list[dict]]]:
    """Requests of 1 and 8 images, cycling over the demo test images."""
    files = sorted((model.data_root / "demo" / "test").glob("*/*.png"))
    encoded = [base64.b64encode(f.read_bytes()).decode("ascii") for f in files]

    def request(start: int, n: int) -> dict:
        rows = [[encoded[(start + i) % len(encoded)]] for i in range(n)]
        return {"dataframe_split": {"columns": ["image"], "data": rows}}

    yield {n: [request(i * n, n) for i in range(len(encoded))] for n in (1, 8)}


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "batch"), CASES)
def test_served_model_under_load(benchmark, model: LoggedModel, payloads: dict,
                                 tmp_path: Path, workers: int, batch: int) -> None:
    requests = payloads[batch]
    n_requests = max(4 * CLIENTS, REQUESTS // batch)
    n_warmup = max(2 * CLIENTS * workers, round(WARMUP * n_requests))
    with serve(model, tmp_path, workers=workers) as server:
        pgid = server.process.pid
        with ThreadPoolExecutor(CLIENTS) as pool:  # warm-up: every worker sees requests
            warm = list(pool.map(lambda i: post(server.url, requests[i % len(requests)])[0],
                                 range(n_warmup)))
        assert warm == [200] * len(warm)
        rss = {"warm": group_rss_mb(pgid)}
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        done = [0]

        def one(i: int) -> None:
            start = time.perf_counter()
            status, body = post(server.url, requests[i % len(requests)])
            elapsed = time.perf_counter() - start
            with lock:
                done[0] += 1
                if status != 200 or len(body.get("predictions", [])) != batch:
                    failures.append(f"{status}: {str(body)[:200]}")
                else:
                    latencies.append(elapsed)
                if done[0] == n_requests // 2:
                    rss["half"] = group_rss_mb(pgid)

        def load() -> float:
            start = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                list(pool.map(one, range(n_requests)))
            return time.perf_counter() - start

        wall = benchmark.pedantic(load, rounds=1, iterations=1)
        rss["end"] = group_rss_mb(pgid)
    images = n_requests * batch
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    figures = {
        "workers": workers, "images_per_request": batch, "requests": n_requests,
        "warmup_requests": n_warmup,
        "failed": len(failures), "p50_request_s": p50, "p95_request_s": p95,
        "p50_image_s": p50 / batch, "p95_image_s": p95 / batch,
        "images_per_s": images / wall, "rss_mb": rss,
    }
    benchmark.extra_info.update(figures)
    print(f"\nserving, {cpu_model()}, {time.strftime('%Y-%m-%d')}, shared machine: "
          f"{workers} worker(s), {batch} image(s)/request, {CLIENTS} clients, "
          f"{n_requests} requests after {n_warmup} warm-up: {len(failures)} failed; "
          f"request p50 {p50:.3f} s p95 "
          f"{p95:.3f} s; per image p50 {p50 / batch:.3f} s p95 {p95 / batch:.3f} s; "
          f"{images / wall:.2f} images/s; server RSS MiB warm {rss['warm']:.0f} "
          f"half {rss.get('half', float('nan')):.0f} end {rss['end']:.0f}; "
          f"mean {statistics.fmean(latencies):.3f} s")
    assert not failures, failures[:3]
    assert rss["end"] <= rss["warm"] * (1 + RSS_GROWTH), rss
