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
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from babelsearch.engine.encoders import Encoder
from babelsearch.engine.errors import BabelsearchError, InvalidSetting, UnknownModel
from babelsearch.engine.images import MAX_FILE_BYTES
from babelsearch.engine.layout import MANIFEST, SHARDS_DIR, ShardInfo, write_manifest

from .decode import Decoded, Failed
from .files import serialize, write_shard_files
from .writer import IndexWriter

if TYPE_CHECKING:
    from .build import IndexReport

logger = logging.getLogger(__name__)

STAGING = ".staging"
RAY_EXTRA = "pip install 'babelsearch[ray]'"
LOCAL = "local"  # the address that means: start a Ray on this machine
PART_MAX = 1024  # images per staged part at most (a part is the unit of retry and of resume)
PARTS_PER_WORKER = 4  # at least this many parts per worker where the collection allows: even load
DECODE_THREADS = 2  # per CPU actor: decoding overlaps the model call
# tests only: a folder; the first actor that can rename DIR/arm to DIR/fired, right after it wrote
# a part, kills its own process (SIGKILL), so Ray restarts it and retries that task
DEBUG_CRASH_ENV = "BABELSEARCH_DEBUG_RAY_CRASH"


class DistributedBuildError(BabelsearchError):
    """Ray could not be reached, or a Ray worker failed; what was committed before stays indexed."""


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


@dataclass
class _Slot:
    """Where one input's staged result is: a part file and a row in it."""

    part: Path
    row: int


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
                raise DistributedBuildError(f"cannot start or reach Ray at {self.address}: {_one_line(exc)}") from None
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
        from .build import _progress_bar, add_embedded

        if not todo:
            return
        index_dir = writer.index_dir.resolve()  # the workers' own working directories are elsewhere
        if not (index_dir / MANIFEST).exists():
            # a new index is committed empty first: a folder holding .staging and no manifest would be
            # refused by the next run as "not an index", and it is one from now on
            write_manifest(index_dir, writer.manifest)
        model_key = _model_key(encoder, writer.manifest.model)
        staged = _find_staged(index_dir / STAGING, todo, model_key)
        report.reused = len(staged)
        if staged:
            writer.note(f"taking {len(staged)} images embedded by an interrupted run from {STAGING}/")
        missing = [seq for seq, path in enumerate(todo) if path not in staged]
        bar = _progress_bar(len(todo), self.progress)
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
        # babel-lite's image tower runs on ONNX Runtime's CPU provider; torch encoders report a device
        use_gpus = gpus > 0 and hasattr(encoder, "device")
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
            return functools.partial(_same, self.given_encoder)
        return functools.partial(_registry_factory(spec), spec.strip())

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
    return {"model": spec, "dim": str(encoder.dim), "version": str(getattr(encoder, "version", ""))}


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


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


# -- the worker side ------------------------------------------------------------------------------
class EmbedPart:
    """Ray Data callable class: decode and embed one part, write it to the staging folder.

    Constructed once per actor (the encoder loads once); ``__call__`` gets rows that are each a
    part (``seq``: the inputs' positions in the driver's list, ``path``: their paths) and returns a
    summary row per part. Images are encoded in the local build's groups (the inputs that share
    ``seq // batch_size``), so a fresh Ray build makes the same model calls as a local one.
    """

    def __init__(
        self,
        make_encoder: Callable[[], Encoder],
        folder: str,
        model_key: dict[str, str],
        batch_size: int,
        decode_threads: int,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        import ray

        self.encoder = make_encoder()
        self.folder = Path(folder)
        self.model_key = model_key
        self.batch_size = max(batch_size, int(getattr(self.encoder, "image_batch_size", 0) or 0))
        self.decode_threads = decode_threads
        self.max_bytes = max_bytes
        self.short_side = getattr(self.encoder, "preprocess_short_side", None)
        self.name = f"{ray.util.get_node_ip_address()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        summaries = [self.embed_part(seqs, paths) for seqs, paths in zip(batch["seq"], batch["path"])]
        return {key: [s[key] for s in summaries] for key in ("part", "inputs", "images", "seconds", "worker")}

    def embed_part(self, seqs: Any, raw_paths: Any) -> dict[str, Any]:
        from .build import _decode_all

        started = time.perf_counter()
        seqs = np.asarray(seqs, dtype=np.int64)
        paths = [Path(os.fsdecode(bytes(p))) for p in raw_paths]
        decoded = _decode_all(
            paths, self.short_side, self.decode_threads, lookahead=2 * self.batch_size, max_bytes=self.max_bytes
        )
        results = list(decoded)
        vectors: list[np.ndarray] = []
        groups = seqs // self.batch_size
        for group in np.unique(groups):
            images = [r.image for r, g in zip(results, groups) if g == group and isinstance(r, Decoded)]
            if images:
                vectors.append(np.asarray(self.encoder.encode_images(images), dtype=np.float32))
        dim = int(self.model_key["dim"])
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        name = f"part-{int(seqs[0]):09d}.npz"
        write_part(self.folder / name, seqs, results, matrix, self.model_key)
        _debug_crash_once()
        good = sum(isinstance(r, Decoded) for r in results)
        return {
            "part": str(self.folder / name),
            "inputs": len(results),
            "images": good,
            "seconds": time.perf_counter() - started,
            "worker": self.name,
        }


def _debug_crash_once() -> None:
    folder = os.environ.get(DEBUG_CRASH_ENV)
    if not folder:
        return
    try:
        os.rename(Path(folder) / "arm", Path(folder) / "fired")  # atomic: exactly one actor wins
    except OSError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


# -- staged parts ---------------------------------------------------------------------------------
def write_part(
    path: Path, seqs: np.ndarray, results: list[Decoded | Failed], vectors: np.ndarray, model_key: dict[str, str]
) -> None:
    """One part's results as .npz, atomically (a temp file renamed: a killed worker leaves no half part)."""
    ok = np.array([isinstance(r, Decoded) for r in results], dtype=bool)

    def field(name: str, default: Any) -> list:
        return [getattr(r, name) if isinstance(r, Decoded) else default for r in results]

    arrays: dict[str, Any] = {
        "seq": seqs,
        "path": np.array([os.fsencode(r.path) for r in results], dtype=bytes),
        "ok": ok,
        "reason": np.array([r.reason if isinstance(r, Failed) else "" for r in results], dtype=str),
        "bytes": np.array(field("bytes", -1), dtype=np.int64),
        "mtime": np.array(field("mtime", 0.0), dtype=np.float64),
        "sha256": np.array(field("sha256", ""), dtype=str),
        "width": np.array(field("width", 0), dtype=np.int64),
        "height": np.array(field("height", 0), dtype=np.int64),
        "vectors": np.ascontiguousarray(vectors, dtype=np.float32),
        **{f"key_{k}": np.array(v) for k, v in model_key.items()},
    }
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:  # a file object: np.savez(path) would add ".npz" to the temp name
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Part:
    """A staged part, read back on the driver (vectors loaded on first use, dropped when consumed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with np.load(path, allow_pickle=False) as data:
            self.key = {k[4:]: str(data[k]) for k in data.files if k.startswith("key_")}
            self.paths = [Path(os.fsdecode(p)) for p in data["path"].tolist()]
            self.ok = data["ok"]
            self.reason = data["reason"]
            self.bytes = data["bytes"]
            self.mtime = data["mtime"]
            self.sha256 = data["sha256"]
            self.width = data["width"]
            self.height = data["height"]
        self.vector_row = np.cumsum(self.ok) - 1  # row i's vector, where ok[i]
        self._vectors: np.ndarray | None = None
        self.wanted = 0  # rows the driver will still take from this part

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            with np.load(self.path, allow_pickle=False) as data:
                self._vectors = data["vectors"]
        return self._vectors

    def item(self, row: int) -> tuple[Decoded | Failed, np.ndarray | None]:
        path = self.paths[row]
        if not self.ok[row]:
            return Failed(path, str(self.reason[row])), None
        decoded = Decoded(
            path=path,
            image=None,
            bytes=int(self.bytes[row]),
            mtime=float(self.mtime[row]),
            sha256=str(self.sha256[row]),
            width=int(self.width[row]),
            height=int(self.height[row]),
        )
        return decoded, self.vectors[int(self.vector_row[row])]


def _find_staged(staging: Path, todo: list[Path], model_key: dict[str, str]) -> dict[Path, _Slot]:
    """Inputs of ``todo`` that an earlier, interrupted run embedded and staged, with the same model,
    whose files still have the size and mtime they had then (a failed decode is tried again)."""
    if not staging.is_dir():
        return {}
    wanted = set(todo)
    found: dict[Path, _Slot] = {}
    for file in sorted(staging.glob("run-*/part-*.npz")):
        try:
            part = Part(file)
        except (OSError, ValueError, KeyError, EOFError) as exc:  # damaged: its images are embedded again
            logger.info(f"ignoring {file}: {_one_line(exc)}")
            continue
        if part.key != model_key:
            continue
        for row, path in enumerate(part.paths):
            if path in found or path not in wanted or not part.ok[row]:
                continue
            try:
                stat = os.stat(path)
            except OSError:
                continue
            if stat.st_size == part.bytes[row] and stat.st_mtime == part.mtime[row]:
                found[path] = _Slot(file, row)
    return found


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
                raise DistributedBuildError(f"a Ray worker failed: {_one_line(exc)}") from exc
            name = str(row["worker"])
            images, seconds = report.workers.get(name, (0, 0.0))
            report.workers[name] = (images + int(row["images"]), seconds + float(row["seconds"]))
            yield row
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # a driver that stops early stops Ray Data's execution too


def _in_order(
    todo: list[Path], batch_size: int, staged: dict[Path, _Slot], arrivals: Iterator[dict]
) -> Iterator[tuple[list[Decoded | Failed], np.ndarray | None]]:
    """``todo`` in input order, in the local build's batches, as (decode results, vectors of the
    Decoded ones): from parts staged before, or waiting for the parts this run is embedding."""
    parts: dict[Path, Part] = {}
    slots: dict[Path, _Slot] = {}
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
                slots[path] = _Slot(file, i)
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
            raise DistributedBuildError(f"filling a shard on Ray failed: {_one_line(exc)}") from exc
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
