"""Distributed builds on Ray: ``babelsearch index SOURCE... --index DIR --ray [ADDRESS]``.

The driver does everything a local build does (indexer/build.py): it collects the sources, compares
them with the catalog under the index lock, removes what is gone, plans the training, and then adds
every vector through the one IndexWriter, in input order and with the ids it assigns, so a Ray build
gives the same ids, paths and shards as a single-process one. Only two steps are farmed out:

- **decode + embed** (Ray Data): the driver's list of files to embed becomes a dataset of fixed
  slices ("parts"); ``map_batches`` runs them through ``EmbedPart``, a callable class that loads the
  encoder once per actor (one actor per GPU when the cluster has GPUs and the encoder runs on torch,
  else one per CPU). Each part is written by its worker to ``DIR/.staging/<run>/part-NNNNNNNNN.npz``
  (atomically, named by the slice it holds, so a task Ray retries overwrites its own file), holding
  the vectors, the decode results and each file's size and mtime.
- **filling shards from the trained quantizer** (Ray tasks): the driver trains once, on a sample, as
  a local build does; shards filled from that template (a new shard, or every shard when the index
  is (re)trained) are filled and written by Ray tasks in parallel, under shard numbers the driver
  chose; ``commit`` waits for them before it switches the manifest (faiss' ``contrib/ondisk.py``
  recipe: train once, fill shards in parallel, then register them).

The manifest, the catalog rows, the query-bank terms and the lock never leave the driver, so a Ray
build is as atomic as a local one. A killed driver loses nothing committed; the next run skips what
the catalog holds (the usual comparison) and takes what was staged but not committed from the
staging folder when the file's size and mtime (and the model) are still the same, so it does not
embed it again. A successful run deletes ``DIR/.staging``.

The cluster needs the same babelsearch version (and encoder backends) on every node, and a shared
filesystem (or object store mounted as one) that holds the input images and the index directory at
the same paths on every node; see README.md, "Distributed builds on Ray".
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from babelsearch.engine.encoders import Encoder
from babelsearch.engine.encoders.matryoshka import TruncatedEncoder, truncated_factory
from babelsearch.engine.errors import BabelsearchError, InvalidSetting, UnknownModel
from babelsearch.engine.images import MAX_FILE_BYTES
from babelsearch.engine.layout import MANIFEST, write_manifest

from .decode import Decoded, Failed
from .pipeline import IndexReport, add_embedded, progress_bar
from .ray_fill import RayIndexWriter
from .ray_staging import DECODE_THREADS, DistributedBuildError, EmbedPart, Part, Slot, find_staged, one_line
from .writer import IndexWriter

logger = logging.getLogger(__name__)


STAGING = ".staging"


RAY_EXTRA = "pip install 'babelsearch[ray]'"


LOCAL = "local"  # the address that means: start a Ray on this machine


PART_MAX = 1024  # images per staged part at most (a part is the unit of retry and of resume)


PARTS_PER_WORKER = 4  # at least this many parts per worker where the collection allows: even load


def require_ray() -> None:
    """Ray is an optional extra; without it ``--ray`` is this one error."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InvalidSetting(f"--ray needs Ray, an optional extra: {RAY_EXTRA} ({exc})") from None


def check_address(address: str | bool) -> str:
    """``True``/"local" -> "local"; "auto", "host:port" or "ray://host:port" as given; else an error."""
    if address is True or address == LOCAL:
        return LOCAL
    if not isinstance(address, str) or not (address == "auto" or ":" in address):
        raise InvalidSetting(
            f"--ray {address!r}: give nothing (a local Ray), auto, or a cluster address such as 10.0.0.1:6379 "
            "or ray://10.0.0.1:10001 (write --ray=ADDRESS, or put --ray after the sources)"
        )
    return address


class RayBuild:
    """One ``build_index(..., ray=...)`` run's Ray side; build.py calls it in this order: ``start``
    (the writer may fill shards on Ray), ``embed_and_add`` (instead of the local decode/embed/add
    loop), ``committed`` (after the final commit: staging removed) and, always, ``close`` (a Ray this
    run started is shut down). Ray is started or joined on first use only."""

    def __init__(
        self,
        address: str | bool,
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool = False,
        encoder: Encoder | None = None,
    ) -> None:
        require_ray()
        self.address = check_address(address)
        self.batch_size = batch_size
        self.decode_threads = workers
        self.progress = progress
        self.given_encoder = encoder  # shipped to the workers as it is; else the registry's factory
        self.writer_class: type[IndexWriter] = RayIndexWriter
        self._started_ray = False
        self._connected = False

    # -- connecting ------------------------------------------------------------------------------
    def start(self, writer: IndexWriter) -> None:
        """Let the writer fill shards on Ray. Nothing connects yet: a run with nothing to embed or fill
        (a rerun that finds no new files) never waits for Ray to start."""
        if isinstance(writer, RayIndexWriter):
            writer.attach(self.connect)

    def connect(self) -> None:
        """Start or join Ray, once (this process's session, where it has one, is used as it is)."""
        if self._connected:
            return
        import ray

        quiet_ray_logs()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": logging.WARNING,
                "log_to_driver": False,  # the workers' own logs stay in Ray's session folder
            }
            try:
                if self.address == LOCAL:
                    ray.init(**kwargs)
                else:
                    ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise DistributedBuildError(f"cannot start or reach Ray at {self.address}: {one_line(exc)}") from None
            self._started_ray = True
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the build's own bar counts images
        if hasattr(context, "print_on_execution_start"):
            context.print_on_execution_start = False
        self._connected = True

    def close(self) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
        self._connected = False

    # -- embedding -------------------------------------------------------------------------------
    def embed_and_add(
        self,
        writer: IndexWriter,
        todo: list[Path],
        encoder: Encoder,
        report: IndexReport,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        """Embed ``todo`` on Ray (or take it from an interrupted run's staging) and add it all in order."""
        if not todo:
            return
        index_dir = writer.index_dir.resolve()  # the workers' own working directories are elsewhere
        if not (index_dir / MANIFEST).exists():
            # a new index is committed empty first: a folder holding .staging and no manifest would be
            # refused by the next run as "not an index", and it is one from now on
            write_manifest(index_dir, writer.manifest)
        model_key = _model_key(encoder, writer.manifest.model)
        staged = find_staged(index_dir / STAGING, todo, model_key)
        report.reused = len(staged)
        if staged:
            writer.note(f"taking {len(staged)} images embedded by an interrupted run from {STAGING}/")
        missing = [seq for seq, path in enumerate(todo) if path not in staged]
        bar = progress_bar(len(todo), self.progress)
        arrivals: Iterator[dict] = iter(())
        try:
            if missing:
                arrivals = self._embed(index_dir, todo, missing, encoder, model_key, max_bytes, report, bar)
            batches = _in_order(todo, self.batch_size, staged, arrivals)
            add_embedded(writer, batches, report, bar)
        finally:
            close = getattr(arrivals, "close", None)
            if close is not None:
                close()  # stops Ray Data's execution if the driver stops early
            bar.close()

    def _embed(
        self,
        index_dir: Path,
        todo: list[Path],
        missing: list[int],
        encoder: Encoder,
        model_key: dict[str, str],
        max_bytes: int,
        report: IndexReport,
        bar: Any,
    ) -> Iterator[dict]:
        """Run the Ray Data pipeline over ``todo[missing]``; yields one summary row per part written."""
        import ray
        import ray.data

        self.connect()
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        use_gpus = gpus > 0 and encoder.can_use_gpu
        size = gpus if use_gpus else max(1, cpus)
        part = _part_size(len(missing), size, self.batch_size)
        parts = math.ceil(len(missing) / part)
        size = min(size, parts)
        actor_cpus = max(1, cpus // size - 1) if use_gpus else 1
        threads = self.decode_threads or (max(DECODE_THREADS, actor_cpus) if use_gpus else DECODE_THREADS)
        run = _run_name(model_key, part, [todo[seq] for seq in missing])
        folder = index_dir / STAGING / run
        folder.mkdir(parents=True, exist_ok=True)
        # One row (and block) per part: the driver fixes what each part holds, whatever Ray retries.
        # Paths travel as bytes: a name that is not UTF-8 (surrogate-escaped) arrives unchanged.
        # (from_items, not from_arrow: from_arrow's metadata tasks crashed now and then here, an
        # abseil "Mutex corrupt" abort in the worker with Ray 2.60 and pyarrow 26.)
        rows = [
            {
                "seq": np.asarray(missing[start : start + part], dtype=np.int64),
                "path": [os.fsencode(todo[seq]) for seq in missing[start : start + part]],
            }
            for start in range(0, len(missing), part)
        ]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        embedded = dataset.map_batches(
            EmbedPart,
            fn_constructor_kwargs={
                "make_encoder": self._encoder_factory(encoder, model_key["model"]),
                "folder": str(folder),
                "model_key": model_key,
                "batch_size": self.batch_size,
                "decode_threads": threads,
                "max_bytes": max_bytes,
            },
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=actor_cpus,
            num_gpus=1 if use_gpus else 0,
        )
        where = f"{size} GPU workers" if use_gpus else f"{size} CPU workers"
        bar.set_postfix_str(f"Ray: {where}, {parts} parts", refresh=False)
        logger.info(f"embedding {len(missing)} images on Ray: {where}, {parts} parts of {part}")
        return _arrivals(iter(embedded.iter_rows()), report)

    def _encoder_factory(self, encoder: Encoder, spec: str) -> Callable[[], Encoder]:
        """What each actor calls once to load its encoder: the object build_index was given, else the
        registry's factory for the index's model spec (so an encoder registered only in this process,
        e.g. by a plugin or a test, loads on the workers too, as long as its module imports there)."""
        if self.given_encoder is not None:
            return functools.partial(_same, encoder)  # the given one, cut to the index's --dim if it has one
        factory = _registry_factory(spec)
        if isinstance(encoder, TruncatedEncoder):
            # an index built with --dim: every worker keeps the same prefix of the model's vectors
            return functools.partial(truncated_factory, factory, encoder.dim, spec.strip())
        return functools.partial(factory, spec.strip())

    # -- finishing -------------------------------------------------------------------------------
    def committed(self, writer: IndexWriter) -> None:
        """Everything staged is committed (or was never needed): the staging folder goes."""
        shutil.rmtree(writer.index_dir / STAGING, ignore_errors=True)


def _same(encoder: Encoder) -> Encoder:
    return encoder


def _registry_factory(spec: str) -> Callable[[str], Encoder]:
    """The factory ``get_encoder(spec)`` calls (engine.encoders' tables: the registry has no public
    lookup of the factory itself, and the factory, not the loaded model, is what travels)."""
    from babelsearch.engine import encoders as registry

    spec = spec.strip()
    factory = registry._exact.get(spec)
    if factory is None:
        factory = next((f for prefix, f in registry._prefixes.items() if spec.startswith(prefix)), None)
    if factory is None:
        raise UnknownModel(f"unknown model {spec!r}; available: {', '.join(registry.available_models())}")
    return factory


def _model_key(encoder: Encoder, spec: str) -> dict[str, str]:
    """What staged vectors were made with: reused only if all of it is the same."""
    return {"model": spec, "dim": str(encoder.dim), "version": str(encoder.version or "")}


def _part_size(n: int, workers: int, batch_size: int) -> int:
    """Images per part: about PARTS_PER_WORKER parts per worker, a whole number of model batches,
    at most PART_MAX (rounded up to a batch)."""
    wanted = min(PART_MAX, math.ceil(n / (workers * PARTS_PER_WORKER)))
    return max(1, math.ceil(wanted / batch_size)) * batch_size


def _run_name(model_key: dict[str, str], part: int, paths: list[Path]) -> str:
    """The same inputs in the same parts give the same folder (an identical rerun overwrites it), and
    any other run another folder, so a part file never changes under a driver that staged it."""
    digest = hashlib.sha256(repr((sorted(model_key.items()), part)).encode())
    for path in paths:
        digest.update(os.fsencode(path) + b"\0")
    return f"run-{digest.hexdigest()[:16]}"


def quiet_ray_logs() -> None:
    """Ray Data logs each execution's start, plan and end at INFO: noise beside the build's own bar."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # it warns that its own bars are off: they are, on purpose (the build's bar counts images)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _arrivals(rows: Iterator[dict], report: IndexReport) -> Iterator[dict]:
    """The pipeline's summary rows as parts finish (any order), with each worker's images and busy
    time counted; a worker's failure becomes one clear error."""
    try:
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except BabelsearchError:
                raise
            except Exception as exc:  # Ray wraps the worker's exception; its last line says what it was
                raise DistributedBuildError(f"a Ray worker failed: {one_line(exc)}") from exc
            name = str(row["worker"])
            images, seconds = report.workers.get(name, (0, 0.0))
            report.workers[name] = (images + int(row["images"]), seconds + float(row["seconds"]))
            yield row
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # a driver that stops early stops Ray Data's execution too


def _in_order(
    todo: list[Path], batch_size: int, staged: dict[Path, Slot], arrivals: Iterator[dict]
) -> Iterator[tuple[list[Decoded | Failed], np.ndarray | None]]:
    """``todo`` in input order, in the local build's batches, as (decode results, vectors of the
    Decoded ones): from parts staged before, or waiting for the parts this run is embedding."""
    parts: dict[Path, Part] = {}
    slots: dict[Path, Slot] = {}
    for path, slot in staged.items():
        if slot.part not in parts:
            parts[slot.part] = Part(slot.part)
        parts[slot.part].wanted += 1
        slots[path] = slot

    def arrive() -> None:
        row = next(arrivals, None)
        if row is None:
            raise DistributedBuildError("the Ray pipeline ended before every image was embedded")
        file = Path(str(row["part"]))
        part = Part(file)
        for i, path in enumerate(part.paths):
            if path not in slots:  # first come counts: a duplicate (an overlapping retry) is not added twice
                slots[path] = Slot(file, i)
                part.wanted += 1
        parts[file] = part

    for start in range(0, len(todo), batch_size):
        batch: list[Decoded | Failed] = []
        vectors: list[np.ndarray] = []
        for path in todo[start : start + batch_size]:
            while path not in slots:
                arrive()
            slot = slots.pop(path)
            part = parts[slot.part]
            item, vector = part.item(slot.row)
            batch.append(item)
            if vector is not None:
                vectors.append(vector)
            part.wanted -= 1
            if part.wanted == 0:
                del parts[slot.part]  # every row taken: its vectors leave memory
        yield batch, (np.stack(vectors) if vectors else None)
