"""Load test: `babelsearch serve` on the demo index, many concurrent clients, a mixed workload.

    python benchmarks/bench_server.py [--clients 32] [--requests 3000] [--threads 8]

Starts the server on 127.0.0.1 (a free port; loopback only), sends a seeded mix of text searches in
several languages (some paged), "more like this", image records, thumbnails and image uploads through
webui.client, and prints latency percentiles per kind of request, requests/s and errors. It exits
non-zero when any request failed. The demo index (data/demo-index) is built first if missing.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from babelsearch.webui.client import Client  # noqa: E402

QUERIES = [
    "Katze",
    "猫",
    "café",
    "ракета",
    "宇航员",
    "horloge",
    "monedas",
    "صخرة",
    "flower",
    "ein Hund im Schnee",
    "a cup of coffee",
    "кошка",
    "gato",
    "חתול",
    "고양이",
    "ねこ",
    "astronauta",
    "Rakete",
    "Münzen",
    "uhr",
    "kahve",
    "pièces de monnaie",
    "पुष्प",
    "ดอกไม้",
    "la luna",
    "Mond",
    "retina",
    "brick wall",
    "grass",
    "text",
]
# kind -> share of the requests
MIX = {"search": 0.55, "search_page2": 0.10, "similar": 0.15, "thumbnail": 0.12, "image": 0.05, "search_image": 0.03}


def ensure_demo_index(data_dir: Path) -> Path:
    index_dir = data_dir / "demo-index"
    if not (index_dir / "manifest.json").exists():
        from babelsearch.demo import assemble_demo_photos
        from babelsearch.indexer import build_index

        photos = data_dir / "demo-photos"
        assemble_demo_photos(photos)
        build_index([photos], index_dir, progress=False)
    return index_dir


def start_server(index_dir: Path, threads: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "babelsearch", "serve", str(index_dir), "--port", "0", "--threads", str(threads)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 180
    output: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        output.append(line)
        if not line and process.poll() is not None:
            break
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
        if match:
            # keep draining the server's output so it never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, match.group(1)
    process.kill()
    raise SystemExit("the server did not start:\n" + "".join(output[-5:]))


def plan(n: int, ids: list[int], seed: int) -> list[tuple[str, object]]:
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=n)
    work = []
    for kind in kinds:
        if kind.startswith("search") and kind != "search_image":
            work.append((kind, rng.choice(QUERIES)))
        elif kind == "search_image":
            work.append((kind, None))
        else:
            work.append((kind, rng.choice(ids)))
    return work


def run(client: Client, kind: str, arg, upload: bytes) -> None:
    if kind == "search":
        assert len(client.search(arg, k=10)) == 10
    elif kind == "search_page2":
        client.search(arg, k=8, offset=8)
    elif kind == "similar":
        assert len(client.similar(arg, k=10)) == 10
    elif kind == "thumbnail":
        assert client.thumbnail(arg)[:2] == b"\xff\xd8"
    elif kind == "image":
        assert client.image(arg)["id"] == arg
    else:
        assert len(client.search_image(upload, k=10, filename="query.png")) == 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8, help="server worker threads")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    index_dir = ensure_demo_index(args.data)
    process, url = start_server(index_dir, args.threads)
    try:
        client = Client(url, timeout=60)
        stats = client.stats()["index"]
        ids = list(range(stats["catalog_images"]))
        upload = (args.data / "demo-photos" / "coffee.png").read_bytes()
        work = plan(args.requests, ids, args.seed)
        for kind in MIX:  # warm every path once (thumbnails are then partly cached, as in real use)
            run(client, kind, QUERIES[0] if kind.startswith("search") else ids[0], upload)

        jobs: queue.Queue = queue.Queue()
        for item in work:
            jobs.put(item)
        latencies: dict[str, list[float]] = defaultdict(list)
        errors: dict[str, list[str]] = defaultdict(list)
        lock = threading.Lock()

        def worker() -> None:
            while True:
                try:
                    kind, arg = jobs.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                try:
                    run(client, kind, arg, upload)
                    failure = None
                except Exception as exc:  # every failure is counted and shown, none stops the run
                    failure = f"{type(exc).__name__}: {exc}"
                took = (time.perf_counter() - started) * 1000
                with lock:
                    (errors[kind].append(failure) if failure else latencies[kind].append(took))

        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=10)

    load = os.getloadavg()
    print(f"server: {url}, {args.threads} threads, index {index_dir} ({len(ids)} images)")
    print(
        f"clients: {args.clients} concurrent, {args.requests} requests, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print()
    print(f"| {'request':<14} | {'n':>5} | {'errors':>6} | {'p50 ms':>7} | {'p99 ms':>7} | {'mean ms':>7} |")
    print(f"|{'-' * 16}|{'-' * 6}:|{'-' * 7}:|{'-' * 8}:|{'-' * 8}:|{'-' * 8}:|")
    everything = []
    for kind in MIX:
        values = latencies.get(kind, [])
        everything += values
        if values or errors.get(kind):
            p50, p99 = (percentile(values, 50), percentile(values, 99)) if values else (0, 0)
            print(
                f"| {kind:<14} | {len(values) + len(errors[kind]):>5} | {len(errors[kind]):>6} | "
                f"{p50:>7.1f} | {p99:>7.1f} | {statistics.fmean(values) if values else 0:>7.1f} |"
            )
    total_errors = sum(len(e) for e in errors.values())
    print(
        f"| {'all':<14} | {args.requests:>5} | {total_errors:>6} | {percentile(everything, 50):>7.1f} | "
        f"{percentile(everything, 99):>7.1f} | {statistics.fmean(everything):>7.1f} |"
    )
    print()
    print(f"{args.requests / wall:.1f} requests/s over {wall:.1f} s, {total_errors} errors")
    for kind, messages in errors.items():
        for message in messages[:3]:
            print(f"  {kind}: {message}")
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
