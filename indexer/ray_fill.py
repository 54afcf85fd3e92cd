"""Filling IVF shards from the one trained quantizer in Ray tasks (faiss contrib/ondisk.py recipe).

See indexer/distributed.py: the driver chooses shard numbers and commits; tasks only fill and write files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from babelsearch.engine.layout import SHARDS_DIR, ShardInfo

from .files import serialize, write_shard_files
from .ray_staging import DistributedBuildError, one_line
from .writer import IndexWriter

logger = logging.getLogger(__name__)


# -- filling shards on Ray ------------------------------------------------------------------------
class RayIndexWriter(IndexWriter):
    """IndexWriter whose shards filled from the trained template are filled by Ray tasks.

    ``write_shard`` for a fresh shard from the template picks the shard number here, submits the
    fill (clone template, add with ids, write the files atomically) and returns the ShardInfo those
    files will have; ``commit`` waits for every fill before it writes the manifest. So all the
    shards of a (re)train are filled in parallel, and every manifest write stays on the driver.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connect: Callable[[], None] | None = None  # set by attach: this run may fill on Ray
        self._fill: Any = None  # the Ray remote function, made on first use
        self._filling: list[tuple[Any, ShardInfo]] = []
        self._template_ref: tuple[int, Any] | None = None  # (id of the template, its object ref)
        self.remote_fills = 0  # shards filled by Ray tasks in this run

    def attach(self, connect: Callable[[], None]) -> None:
        self._connect = connect

    def _remote_fill(self) -> Any:
        if self._fill is None:
            import ray

            assert self._connect is not None
            self._connect()
            # zero CPUs: the embedding actors may hold them all, and a commit waiting on a fill that
            # cannot be scheduled would wait for ever; SPREAD puts the fills across the nodes
            self._fill = ray.remote(num_cpus=0, scheduling_strategy="SPREAD", max_retries=3)(fill_shard)
        return self._fill

    def write_shard(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        dtype,
        index=None,
        new: tuple[np.ndarray, np.ndarray] | None = None,
        reuse: ShardInfo | None = None,
    ) -> ShardInfo:
        if self._connect is None or index is not None or self.template is None:
            return super().write_shard(ids, vectors, dtype, index=index, new=new, reuse=reuse)
        number, self.next_number = self.next_number, self.next_number + 1
        # the same choice as IndexWriter.write_shard: refine files are kept when they hold the same rows
        unchanged = reuse is not None and reuse.ids and self.refine_dtype == np.dtype(dtype)
        kept = reuse if unchanged else None
        ref = self._remote_fill().remote(
            self._template(),
            str(self.index_dir.resolve()),
            number,
            ids,
            vectors,
            np.dtype(dtype).str,
            kept,
            self.device,
        )
        base = f"{SHARDS_DIR}/{number:05d}"
        expected = ShardInfo(
            file=f"{base}.faiss",
            count=len(ids),
            ids=kept.ids if kept else f"{base}.ids.npy",
            vectors=kept.vectors if kept else f"{base}.vectors.npy",
        )
        self._filling.append((ref, expected))
        return expected

    def commit(self, shards: list[ShardInfo], old: list[ShardInfo]) -> None:
        self.wait_for_fills()
        super().commit(shards, old)

    def finish(self) -> None:
        super().finish()
        if self.remote_fills:
            self.note(f"filled {self.remote_fills} shards from the trained quantizer in Ray tasks")

    def wait_for_fills(self) -> None:
        """Every submitted fill is written (its files durable) before anything references them."""
        if not self._filling:
            return
        import ray

        pending, self._filling = self._filling, []
        try:
            results = ray.get([ref for ref, _ in pending])
        except Exception as exc:
            raise DistributedBuildError(f"filling a shard on Ray failed: {one_line(exc)}") from exc
        for (info, seconds), (_, expected) in zip(results, pending):
            if info != expected:
                raise DistributedBuildError(f"a Ray shard fill wrote {info}, the driver expected {expected}")
            self.stats.add_seconds += seconds
        self.remote_fills += len(pending)

    def _template(self) -> Any:
        import ray

        if self._template_ref is None or self._template_ref[0] != id(self.template):
            data = np.frombuffer(serialize(self.template), dtype=np.uint8)
            self._template_ref = (id(self.template), ray.put(data))  # once per trained template
        return self._template_ref[1]


def fill_shard(
    template: np.ndarray,
    index_dir: str,
    number: int,
    ids: np.ndarray,
    vectors: np.ndarray,
    dtype: str,
    reuse: ShardInfo | None,
    device: str,
) -> tuple[ShardInfo, float]:
    """Ray task: the trained empty index, filled with ``ids``/``vectors``, written as shard ``number``
    (atomically; a retried task rewrites the same files). Returns the ShardInfo and the add seconds."""
    import faiss

    from . import device as devices

    index = faiss.deserialize_index(np.asarray(template, dtype=np.uint8))
    started = time.perf_counter()
    index = devices.add(index, vectors, ids, device)
    seconds = time.perf_counter() - started
    info = write_shard_files(Path(index_dir), number, index, ids, vectors, np.dtype(dtype), reuse)
    return info, seconds
