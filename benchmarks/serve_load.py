"""Load on the HTTP server: many concurrent clients, every answer checked against a single client's answer.

Starts `rerankforge serve` as its own process on 127.0.0.1, sends each distinct request once from one client
(the reference), then sends all requests from N concurrent clients (each distinct request several times, in a
shuffled order) and prints requests/s, latency percentiles, errors, answers that differ from the reference,
and the server process's resident memory before and at its peak (VmHWM). Bounded: a fixed number of
requests, a timeout on each, loopback only.

    .venv/bin/python benchmarks/serve_load.py MODEL_DIR [--clients 32 --requests 2000 --variant int8]
    .venv/bin/python benchmarks/serve_load.py MODEL_DIR --vector-cache-mb 1   # a first stage, its memo at its cap
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "battery dock charge warranty invoice expense travel policy leave manager scanner firmware update reset "
    "password account network printer toner badge parking safety training contract renewal deadline report "
    "symptoms treatment diagnosis genetic inherited condition therapy clinical trial dosage risk"
).split()


def make_requests(distinct: int, docs_per_request: int, seed: int = 13) -> list[dict]:
    rng = random.Random(seed)

    def sentence(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    return [
        {
            "query": " ".join(rng.sample(WORDS, 4)),
            "documents": [
                " ".join(sentence(rng.randint(6, 14)) for _ in range(rng.randint(1, 4)))
                for _ in range(docs_per_request)
            ],
        }
        for _ in range(distinct)
    ]


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def start_server(model_dir: Path, variant: str | None, config: Path | None = None) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, "-m", "rerankforge.cli.main", "serve", str(model_dir), "--port", str(port)]
    args += ["--variant", variant] if variant else []
    args += ["--config", str(config)] if config else []
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("the server did not come up within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=200, help="Distinct requests; each is sent several times.")
    parser.add_argument("--docs", type=int, default=10, help="Documents per request.")
    parser.add_argument("--variant", default=None, help="fp32, int8 or int8_static (default: the export's choice).")
    parser.add_argument(
        "--vector-cache-mb",
        type=float,
        default=None,
        help="The memo's cap (serve.vector_cache_mb); below the "
        "distinct documents' vectors (about 1.5 kB each for MiniLM) it evicts all through the load.",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    distinct = make_requests(args.distinct, args.docs)
    config = None
    if args.vector_cache_mb is not None:
        import tempfile

        config = Path(tempfile.mkdtemp()) / "serve.toml"
        config.write_text(f"[serve]\nvector_cache_mb = {args.vector_cache_mb}\n")
    server, base = start_server(args.model_dir, args.variant, config)
    url = f"{base}/v2/rerank"
    try:
        with httpx.Client(timeout=120) as client:
            reference = [client.post(url, json=body).json()["results"] for body in distinct]
        before = memory_kb(server.pid)
        order = [i % len(distinct) for i in range(args.requests)]
        random.Random(7).shuffle(order)
        latencies: list[float] = []
        errors: list[str] = []
        mismatches: list[int] = []
        max_diff = [0.0]
        cursor = iter(range(len(order)))
        lock = threading.Lock()

        def worker() -> None:
            with httpx.Client(timeout=120) as client:
                while True:
                    with lock:
                        k = next(cursor, None)
                    if k is None:
                        return
                    i = order[k]
                    started = time.perf_counter()
                    try:
                        response = client.post(url, json=distinct[i])
                        response.raise_for_status()
                        got = response.json()["results"]
                    except Exception as exc:  # counted and reported; the load goes on
                        errors.append(repr(exc))
                        continue
                    finally:
                        latencies.append(time.perf_counter() - started)
                    want = reference[i]
                    if [r["index"] for r in got] != [r["index"] for r in want]:
                        mismatches.append(i)
                    diff = max(abs(a["relevance_score"] - b["relevance_score"]) for a, b in zip(got, want, strict=True))
                    max_diff[0] = max(max_diff[0], diff)

        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        samples: list[tuple[int, int]] = []  # (requests answered, resident kB) while the load runs
        while any(thread.is_alive() for thread in threads):
            samples.append((len(latencies), memory_kb(server.pid)["VmRSS"]))
            time.sleep(0.5)
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        after = memory_kb(server.pid)
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    finally:
        server.terminate()
        server.wait(timeout=30)
    batches = next(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("rerankforge_batches_total")
    )
    lat = np.array(latencies) * 1e3
    print(
        f"{args.requests} requests x {args.docs} documents from {args.clients} concurrent clients in {seconds:.1f} s: "
        f"{args.requests / seconds:.1f} requests/s, {args.requests * args.docs / seconds:.0f} pairs/s"
    )
    print(
        f"latency p50 {statistics.median(lat):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms, "
        f"p99 {np.percentile(lat, 99):.0f} ms; micro-batches {batches:.0f}"
    )
    print(
        f"errors {len(errors)}; rankings different from the single-client reference {len(mismatches)}; "
        f"max score difference {max_diff[0]:.2e}"
    )
    print(
        f"server memory: {before['VmRSS'] / 1024:.0f} MB resident before the load, "
        f"{after['VmRSS'] / 1024:.0f} MB after, peak {after['VmHWM'] / 1024:.0f} MB"
    )
    if samples:
        quarter = [samples[min(len(samples) - 1, i * len(samples) // 4)] for i in range(1, 5)]
        print("resident memory during the load (answered: MB): "
              + ", ".join(f"{done}: {kb / 1024:.0f}" for done, kb in quarter))  # fmt: skip
    memo = {line.split()[0]: line.split()[-1] for line in metrics.splitlines()
            if line.startswith("rerankforge_vector_cache")}  # fmt: skip
    if memo:
        print("vector memo:", ", ".join(f"{k.removeprefix('rerankforge_vector_cache_')} {v}" for k, v in memo.items()))
    if errors:
        print("first errors:", errors[:3])
    sys.exit(1 if errors or mismatches else 0)


if __name__ == "__main__":
    main()
