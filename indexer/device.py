"""Train and fill faiss indexes on a GPU when faiss sees one, else on the CPU; files are CPU either way.

The GPU path follows faiss' own recipe (``index_cpu_to_gpu`` -> train/add -> ``index_gpu_to_cpu``).
Not every CPU index has a GPU twin (OPQ pre-transforms, some PQ sub-dimensions); those train their
coarse k-means on the GPU through ``clustering_index`` and do the rest on the CPU.
NOTE: written against faiss' documented GPU API but not yet run on real GPU hardware.
"""

from __future__ import annotations

import functools

import numpy as np

from babelsearch.engine.errors import InvalidSetting
from babelsearch.engine.ivf import is_ivf

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when faiss sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    if device not in DEVICES:
        raise InvalidSetting(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    gpus = _num_gpus()
    if device == "cuda" and gpus == 0:
        raise InvalidSetting(
            "--device cuda: faiss sees no GPU (install faiss-gpu and check the driver), or use --device cpu"
        )
    if device == "auto":
        return "cuda" if gpus > 0 else "cpu"
    return device


def _num_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@functools.cache
def _gpu_resources():
    import faiss

    return faiss.StandardGpuResources()


def train(index, vectors: np.ndarray, device: str):
    """Train ``index`` on ``vectors``; returns the trained CPU index (maybe another object)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if device != "cuda":
        index.train(vectors)
        return index
    try:
        gpu_index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    except RuntimeError:
        # no GPU twin for this index: run only the coarse k-means (the costly part) on the GPU
        ivf = faiss.extract_index_ivf(index)
        clustering = faiss.index_cpu_to_gpu(_gpu_resources(), 0, faiss.IndexFlatIP(ivf.d))
        ivf.clustering_index = clustering  # a borrowed pointer: `clustering` keeps it alive
        try:
            index.train(vectors)
        finally:
            ivf.clustering_index = None
        return index
    gpu_index.train(vectors)
    return faiss.index_gpu_to_cpu(gpu_index)


def add(index, vectors: np.ndarray, ids: np.ndarray, device: str):
    """Add vectors with ids; returns the filled CPU index (maybe another object)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if device == "cuda" and is_ivf(index):
        try:
            gpu_index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
        except RuntimeError:
            gpu_index = None  # no GPU twin: the CPU adds
        if gpu_index is not None:
            gpu_index.add_with_ids(vectors, ids)
            return faiss.index_gpu_to_cpu(gpu_index)
    index.add_with_ids(vectors, ids)
    return index
