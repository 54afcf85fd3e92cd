"""Images/s and text-query latency of the CLIP backends' real architectures on this machine (CPU).

    python benchmarks/bench_clip.py [--batch 32] [--images 96] [--queries 60]

Speed does not depend on the weights, so the towers are built randomly initialised by open_clip
(``pretrained=None``: nothing is downloaded): ViT-B-32 (the image tower of xlm-roberta-base-ViT-B-32
and of clip-ViT-B-32) and ViT-B-16-SigLIP-i18n-256. Images are random tensors of the tower's input
size (decoding is measured by bench_encode.py); text queries are token ids of a short query's length
fed to the text tower (the i18n SigLIP tokenizer is a hub download, and tokenizing costs microseconds).
The HF text towers (XLM-R, NLLB) need their configs from the hub and are not measured here.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

ARCHITECTURES = ("ViT-B-32", "ViT-B-16-SigLIP-i18n-256")
QUERY_TOKENS = 12  # "ein Hund im Schnee" and its like, with start/end tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=96, help="images per architecture (after a warm-up batch)")
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    import open_clip
    import torch

    torch.manual_seed(0)
    print(
        f"on {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average before {' / '.join(f'{v:.1f}' for v in os.getloadavg())}\n"
    )
    print(
        f"| architecture | input | images/s (batch {args.batch}) | CPU-ms per image | text query p50 / p99 ms (1 thread) | text query CPU-ms p50 |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for arch in ARCHITECTURES:
        model = open_clip.create_model(arch, pretrained=None).eval()
        size = model.visual.image_size if hasattr(model.visual, "image_size") else 224
        side = size[0] if isinstance(size, (tuple, list)) else int(size)
        images = torch.randn(args.batch, 3, side, side)
        context = getattr(model, "context_length", 77)
        vocab = getattr(model, "vocab_size", 49408)
        tokens = torch.zeros(1, context, dtype=torch.long)
        tokens[0, :QUERY_TOKENS] = torch.randint(1, vocab - 1, (QUERY_TOKENS,))
        with torch.inference_mode():
            model.encode_image(images)  # warm-up
            done, wall, cpu = 0, time.perf_counter(), time.process_time()
            while done < args.images:
                model.encode_image(images)
                done += args.batch
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            # one query is a handful of small matrix products: a second OpenMP thread only spins on a
            # busy 2-core machine (measured 178 ms with one thread, 1.2 s with two at load 5)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            model.encode_text(tokens)
            latencies, cpu_ms = [], []
            for _ in range(args.queries):
                started, started_cpu = time.perf_counter(), time.process_time()
                model.encode_text(tokens)
                latencies.append((time.perf_counter() - started) * 1000)
                cpu_ms.append((time.process_time() - started_cpu) * 1000)
            torch.set_num_threads(threads)
        print(
            f"| {arch} (random weights) | {side}x{side} | {done / wall:.1f} | {1000 * cpu / done:.0f} | "
            f"{np.percentile(latencies, 50):.1f} / {np.percentile(latencies, 99):.1f} | {np.percentile(cpu_ms, 50):.1f} |"
        )
    print(f"\nload average after {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
