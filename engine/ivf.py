"""faiss plumbing for sharded IVF indexes: recognising them, per-call search parameters, combining the
inverted lists of shards filled from one trained index (faiss contrib/ondisk.py), merging top-k lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def is_ivf(index) -> bool:
    import faiss

    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


def id_selector(allowed: np.ndarray):
    """A faiss selector of the ``allowed`` ids (sorted int64 >= 0): a bitmap, one bit per id up to the
    largest, built by numpy in milliseconds and tested in O(1) per candidate (a hash set of a million
    ids would take longer to build than the search). The bitmap is kept alive by the selector."""
    import faiss

    bits = np.zeros(int(allowed[-1]) + 1 if len(allowed) else 1, dtype=bool)
    bits[allowed] = True
    bitmap = np.packbits(bits, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    selector.referenced_objects = [bitmap]
    return selector


def ivf_search_params(index, nprobe: int | None, selector=None):
    """Per-call IVF parameters (through a pre-transform such as OPQ); None keeps the index's own.
    ``selector`` (``id_selector``) limits the search to its ids."""
    import faiss

    if nprobe is None and selector is None:
        return None
    ivf = faiss.extract_index_ivf(index)
    params = faiss.SearchParametersIVF(nprobe=max(1, min(int(nprobe or ivf.nprobe), ivf.nlist)))
    if selector is not None:
        params.sel = selector
        params.referenced_objects = [selector]
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        wrapped = faiss.SearchParametersPreTransform()
        wrapped.index_params = params
        wrapped.referenced_objects = [params]  # keep the inner params alive as long as the wrapper
        return wrapped
    return params


def combine_ivf_shards(indexes: list):
    """One index searching the inverted lists of all shards (which share one trained quantizer).

    The shards are best read memory-mapped (``read_ivf_shard``): their entries are copied once into
    lists allocated at their exact final size, so the combined index holds codes + ids + one
    quantizer and nothing else (copying from heap-loaded shards would leave their freed memory to
    the allocator, about as much again).
    """
    import faiss

    base = indexes[0]
    ivfs = [faiss.extract_index_ivf(index) for index in indexes]
    nlist, code_size = ivfs[0].nlist, ivfs[0].code_size
    if any(ivf.nlist != nlist or ivf.code_size != code_size for ivf in ivfs):
        raise ValueError("shards were filled from different trained indexes")
    sizes = np.array([[ivf.invlists.list_size(i) for i in range(nlist)] for ivf in ivfs], dtype=np.int64)
    combined = faiss.ArrayInvertedLists(nlist, code_size)
    offsets = np.zeros(nlist, dtype=np.int64)
    for used in np.flatnonzero(sizes.sum(axis=0)):
        combined.resize(int(used), int(sizes[:, used].sum()))
    for ivf, shard_sizes in zip(ivfs, sizes):
        lists = ivf.invlists
        for filled in np.flatnonzero(shard_sizes):
            list_no, n = int(filled), int(shard_sizes[filled])
            ids, codes = lists.get_ids(list_no), lists.get_codes(list_no)
            combined.update_entries(list_no, int(offsets[list_no]), n, ids, codes)
            lists.release_codes(list_no, codes)
            lists.release_ids(list_no, ids)
            offsets[list_no] += n
    base_ivf = ivfs[0]
    base_ivf.replace_invlists(combined, True)
    combined.this.disown()  # owned by the index now
    base_ivf.ntotal = int(sizes.sum())
    base.ntotal = base_ivf.ntotal
    return base


def read_ivf_shard(path: Path):
    """A shard file with its inverted lists memory-mapped (read-only), else read into memory."""
    import faiss

    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except (RuntimeError, AttributeError):
        return faiss.read_index(str(path))


def merge_results(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists (higher score is better) into one top-k list per query."""
    all_scores = np.concatenate(scores, axis=1).astype(np.float32, copy=True)
    all_ids = np.concatenate(ids, axis=1).astype(np.int64, copy=False)
    all_scores[all_ids < 0] = -np.inf
    if all_scores.shape[1] < k:
        pad = k - all_scores.shape[1]
        all_scores = np.pad(all_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        all_ids = np.pad(all_ids, ((0, 0), (0, pad)), constant_values=-1)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(all_scores, order, axis=1)
    top_ids = np.take_along_axis(all_ids, order, axis=1)
    top_ids[~np.isfinite(top_scores)] = -1
    return top_scores, top_ids
