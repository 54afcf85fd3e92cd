"""Indexing throughput and query latency of babel-lite on this machine; prints markdown tables.

    python benchmarks/bench_encode.py [--images DIR] [--limit N] [--reference N] [--workers N]

Measures, over the photos in DIR (default: ../shared's 1000-photo ImageNet sample):
  * decode + preprocess alone (read, hash, JPEG draft decode, EXIF, resize, centre crop), 1 and N threads;
  * the image model alone on pre-decoded images: ONNX Runtime (the default path) and torch eager
    (the reference), and the cosine between their vectors (min/mean over every reference image);
  * end to end: indexer.build_index with a warm encoder (and how much of the wall time the model
    was busy: near 100% means decoding never kept it waiting), and `babelsearch index` as a fresh
    process (imports, model load and all);
  * text-query encode latency (p50/p99) for short queries in several languages;
  * babel-lite 3 against babel-lite 2's computation (concepts only: a logits-only tower and ConSE),
    side by side in one run, taking turns: images/s of the model and the text query p50.
Wall-clock rates depend on what else runs on the machine: the load average is printed, and the
CPU-ms per image (all threads of this process) is given as the load-independent figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from babelsearch.engine.encoders import Encoder  # noqa: E402
from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder  # noqa: E402
from babelsearch.indexer import build_index, collect_images  # noqa: E402
from babelsearch.indexer.decode import Decoded, decode_image  # noqa: E402

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "imagenet-sample" / "images"
QUERIES = [
    "ein Hund im Schnee",
    "猫",
    "ракета",
    "red car",
    "a bowl of soup",
    "Katze auf dem Sofa",
    "宇航员",
    "pièces de monnaie",
    "ดอกไม้",
    "la luna",
    "brick wall",
    "고양이",
]


class Timer:
    """Wall and process-CPU seconds of a block (CPU time covers every thread of this process)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


class TimedEncoder(Encoder):
    """Wraps an encoder to add up the time spent inside encode_images (the model's busy time)."""

    def __init__(self, inner: Encoder):
        self.inner, self.name, self.dim, self.version = inner, inner.name, inner.dim, inner.version
        self.preprocess_short_side = inner.preprocess_short_side
        self.busy = 0.0

    def encode_images(self, images):
        start = time.perf_counter()
        try:
            return self.inner.encode_images(images)
        finally:
            self.busy += time.perf_counter() - start

    def encode_texts(self, texts, languages=None):
        return self.inner.encode_texts(texts, languages)


class DecodeWaits:
    """While active, adds up how long build_index waits for its decode workers' next result."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        from babelsearch.indexer import build

        self._module, self._original = build, build.decode_all

        def timed(*args, **kwargs):
            stream = self._original(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(stream)
                except StopIteration:
                    return
                finally:
                    self.seconds += time.perf_counter() - start
                yield item

        build.decode_all = timed
        return self

    def __exit__(self, *exc):
        self._module.decode_all = self._original


def load() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def row(what: str, n: int, t: Timer, note: str = "") -> str:
    return f"| {what} | {n} | {n / t.wall:.1f} | {t.cpu / n * 1000:.1f} | {note} |"


def decode_and_crop(path: Path):
    item = decode_image(path, BabelLiteEncoder.preprocess_short_side)
    if isinstance(item, Decoded):
        BabelLiteEncoder.crop(item.image)  # the crop the encoder cuts (cheap: the image is at 256)
    return item


def encode_in_batches(encoder, images: list, batch: int) -> np.ndarray:
    return np.concatenate([encoder.encode_images(images[i : i + batch]) for i in range(0, len(images), batch)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of photos")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos")
    parser.add_argument("--reference", type=int, default=0, help="photos for the torch reference (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="decode threads")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    if not args.images.is_dir():
        print(f"no such folder: {args.images}", file=sys.stderr)
        return 2
    paths = collect_images([args.images])[: args.limit or None]
    n = len(paths)
    load_before = load()
    rows = []

    for workers in sorted({1, args.workers}):
        with ThreadPoolExecutor(workers) as pool, Timer() as t:
            decoded = list(pool.map(decode_and_crop, paths))
        rows.append(row(f"decode + preprocess, {workers} thread{'s' * (workers > 1)}", n, t))
    images = [item.image for item in decoded if isinstance(item, Decoded)]

    fast = BabelLiteEncoder(image_backend="onnx")
    with Timer() as cold:
        fast.encode_images(images[:1])
    # Queries before torch is ever imported, as in a search process.
    latencies, cpu = query_latencies(fast)
    with Timer() as t:
        fast_vectors = encode_in_batches(fast, images, args.batch)
    rows.append(
        row(
            f"model alone, onnxruntime, batch {args.batch}",
            len(images),
            t,
            f"first call (session, cached export): {cold.wall:.1f} s",
        )
    )
    reference = BabelLiteEncoder(image_backend="torch")
    with Timer() as cold:
        reference.encode_images(images[:1])
    n_ref = min(args.reference or len(images), len(images))
    with Timer() as t:
        ref_vectors = encode_in_batches(reference, images[:n_ref], args.batch)
    rows.append(
        row(
            f"model alone, torch eager (reference), batch {args.batch}",
            n_ref,
            t,
            f"first call (torch import, model load): {cold.wall:.1f} s",
        )
    )
    cosine = np.sum(fast_vectors[:n_ref] * ref_vectors, axis=1)

    timed = TimedEncoder(fast)
    waits = DecodeWaits()
    with tempfile.TemporaryDirectory() as tmp:
        with waits, Timer() as t:
            report = build_index(
                [args.images] if not args.limit else paths,
                Path(tmp) / "warm",
                encoder=timed,
                batch_size=args.batch,
                workers=args.workers,
            )
        busy = (
            f"model busy {timed.busy / t.wall:.0%} of the wall time; "
            f"waited on decoding {waits.seconds:.2f} s ({waits.seconds / t.wall:.0%})"
        )
        rows.append(row("end to end, build_index (warm encoder)", report.indexed, t, busy))
        source = args.images if not args.limit else _path_list(paths, Path(tmp))
        command = [
            sys.executable,
            "-m",
            "babelsearch",
            "index",
            str(source),
            "--index",
            str(Path(tmp) / "cli"),
            "-q",
            "--workers",
            str(args.workers),
            "--batch-size",
            str(args.batch),
        ]
        with Timer() as t:
            subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        t.cpu = _children_cpu()
        rows.append(
            row("end to end, `babelsearch index` (fresh process)", report.indexed, t, "imports + model load included")
        )
        # what the very first run on a machine pays once (the export is then cached)
        export = f"from pathlib import Path; from babelsearch.engine.encoders.image_runtime import export_onnx; export_onnx(Path({str(Path(tmp) / 'x.onnx')!r}))"
        with Timer() as export_time:
            subprocess.run([sys.executable, "-c", export], cwd=ROOT, check=True)

    print(f"babel-lite on {os.cpu_count()} CPU cores; load average (1/5/15 min) before {load_before}, after {load()}\n")
    print("| stage | images | images/s (wall) | CPU-ms per image | note |")
    print("|---|---:|---:|---:|---|")
    print("\n".join(rows))
    print()
    print("| check | value |")
    print("|---|---|")
    print(
        f"| query encode, short query (p50 / p99, {len(latencies)} queries) | "
        f"{np.percentile(latencies, 50):.1f} / {np.percentile(latencies, 99):.1f} ms "
        f"(CPU p50 {np.percentile(cpu, 50):.1f} ms) |"
    )
    print(
        f"| first use only: ONNX export of the image tower (fresh process, torch import included) | {export_time.wall:.1f} s |"
    )
    print(f"| cosine onnxruntime vs torch, {n_ref} images (min / mean) | {cosine.min():.7f} / {cosine.mean():.7f} |")
    print(f"| images below cosine 0.999 | {int((cosine < 0.999).sum())} |")
    print()
    side_by_side(fast, images, args.batch)
    return 0


def concepts_only(encoder: BabelLiteEncoder, folder: Path):
    """babel-lite 2's computation: the classifier alone exported (logits, no pooled stages), then ConSE."""
    import torch

    from babelsearch.engine.encoders.image_runtime import load_torch_model

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, crops):
            return self.inner((crops.permute(0, 3, 1, 2).float() - 127.0) / 128.0)

    path = folder / "logits-only.onnx"
    torch.onnx.export(
        Logits(load_torch_model()).eval(),
        (torch.zeros(1, 224, 224, 3, dtype=torch.uint8),),
        str(path),
        input_names=["crops"],
        output_names=["logits"],
        dynamic_axes={"crops": {0: "n"}, "logits": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def images_v2(images) -> np.ndarray:
        crops = np.stack([encoder.crop(image) for image in images])
        return encoder.concept_image_vectors(session.run(None, {"crops": crops})[0])

    def texts_v2(texts) -> np.ndarray:
        from babelsearch.engine.encoders import normalize_rows
        from babelsearch.engine.encoders.babel_lite import normalize_query_text

        e5 = encoder.e5_query_vectors([normalize_query_text(t) for t in texts])
        return normalize_rows(e5 - encoder.space.query_mean)

    return images_v2, texts_v2


def side_by_side(encoder: BabelLiteEncoder, images: list, batch: int, rounds: int = 5) -> None:
    """Images/s and query p50 of babel-lite 3 and of babel-lite 2's computation, taking turns."""
    with tempfile.TemporaryDirectory() as tmp:
        images_v2, texts_v2 = concepts_only(encoder, Path(tmp))
        batches = [images[i : i + batch] for i in range(0, len(images), batch)]
        per_round = max(1, len(batches) // rounds)
        seconds = {"3": 0.0, "2": 0.0}
        done = {"3": 0, "2": 0}
        images_v2(batches[0])
        encoder.encode_images(batches[0])
        for r in range(rounds):
            chunk = batches[r * per_round : (r + 1) * per_round]
            order = [("3", encoder.encode_images), ("2", images_v2)]
            for version, run in order if r % 2 == 0 else order[::-1]:
                with Timer() as t:
                    for part in chunk:
                        run(part)
                seconds[version] += t.wall
                done[version] += sum(len(part) for part in chunk)
        latency = {"3": [], "2": []}
        texts_v2(["warm up"])
        for i in range(20 * len(QUERIES)):
            query = [QUERIES[i % len(QUERIES)]]
            order = [("3", encoder.encode_texts), ("2", texts_v2)]
            for version, run in order if i % 2 == 0 else order[::-1]:
                with Timer() as t:
                    run(query)
                latency[version].append(t.wall * 1000)
    rate = {v: done[v] / seconds[v] for v in seconds}
    p50 = {v: float(np.percentile(latency[v], 50)) for v in latency}
    print("babel-lite 3 (concepts + captions) against babel-lite 2's computation (concepts only), taking turns:\n")
    print(f"| | images/s, model alone (batch {batch}) | text query p50 ms |")
    print("|---|---:|---:|")
    print(f"| babel-lite 2 (concepts only) | {rate['2']:.1f} | {p50['2']:.1f} |")
    print(f"| babel-lite 3 | {rate['3']:.1f} | {p50['3']:.1f} |")
    print(f"| 3 / 2 | {rate['3'] / rate['2']:.2f}x | {p50['3'] / p50['2']:.2f}x |")


def query_latencies(encoder, rounds: int = 20) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of encoding one short query at a time, after a warm-up."""
    encoder.encode_texts(["warm up"])
    wall, cpu = [], []
    for i in range(rounds * len(QUERIES)):
        with Timer() as t:
            encoder.encode_texts([QUERIES[i % len(QUERIES)]])
        wall.append(t.wall * 1000)
        cpu.append(t.cpu * 1000)
    return wall, cpu


def _path_list(paths: list[Path], folder: Path) -> Path:
    listing = folder / "paths.txt"
    listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    return listing


def _children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


if __name__ == "__main__":
    sys.exit(main())
