"""Search settings that meet a recall (or latency) target, measured on the index itself.

At the end of every run that changed an IVF index (``IndexWriter.finish``) the writer measures
recall@10 against exact search on a seeded sample of stored vectors used as queries (each query's
own id is left out of both lists, so a vector does not trivially find itself), over a grid of
nprobe x refine_factor, and records the cheapest pair that meets the target in the manifest's
settings, which searches take as their defaults (a call's own ``nprobe=`` / ``refine_factor=``
still win). Met means with a margin: the recall's one-sided 95% lower bound over the sampled queries
reaches the target, so the cheapest pair is not one that met it by sampling luck. A target the grid
cannot reach records the best pair found and a note saying so.

Cost is a model, not a timing (the machine this runs on is shared and timings are noisy): codes
scanned in the probed lists plus ``REFINE_COST`` per exactly re-scored candidate (a float16 row
gathered from the mapped store and scored costs about as much as scanning a dozen PQ codes).
``target_latency`` instead times single queries and takes the highest recall within the budget.

The PQ code size is chosen earlier, at training time (``choose_code_size``), because changing it
means re-encoding every vector: on the training sample, with realistic queries (the index's query-bank
texts against the images when it keeps a bank, and held-out sample vectors in any case), it measures
how deep a pool of PQ candidates must be for its exact re-scoring to reach the target, scales that
depth to the collection's size (the points that crowd in front of a true neighbour grow with density,
so linearly in N) and keeps the smallest code whose pool fits ``CODE_POOL_BUDGET``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from babelsearch.engine.options import MAX_REFINE_FACTOR
from babelsearch.engine.shards import ShardSet

if TYPE_CHECKING:
    from .writer import IndexWriter

DEFAULT_TARGET_RECALL = 0.95
K = 10
NPROBE_GRID = (4, 8, 16, 32, 64, 128, 256, 512)
REFINE_GRID = (10, 20, 30, 40, 50, 75, 100)
QUERIES = 500  # sampled queries: recall@10 to about +-0.005 (one standard error)
# a pair meets the target when mean - MARGIN_Z x standard error does: of all pairs whose true recall is
# just under the target, 1 in 20 would still pass by luck, not 1 in 2
MARGIN_Z = 1.645
# one exactly re-scored candidate, in units of one PQ code scanned (measured at 1,000,000: 1.2 us per
# candidate gathered from the mapped float16 rows and scored, 0.1 us per 32-byte code scanned)
REFINE_COST = 12.0
TIMED_QUERIES = 50
CODE_QUERIES = 300  # held-out sample vectors (and bank texts) the code size is measured with
# the deepest pool (candidates per result) a chosen code may need at full size: half the deepest the
# commit-time grid tries, so nprobe's own losses and the estimate's error still fit under it. (x20 was
# tried: at 1,000,000 it trained PQ32 to PQ96, tripled the build and RAM per vector, and PQ96 x20 ran
# only 9% faster than PQ32 x40: the coarse quantizer's scan and the gather are most of a query's time)
CODE_POOL_BUDGET = 50
CODE_SEARCH_DEPTH = 1024  # candidates fetched per query while measuring a code size
# how the commit-time measurement is made; a new one re-tunes indexes tuned by an older one (2: the
# pool of a stored query is k x R + 1, not (k + 1) x R, and a target is met at its lower bound)
TUNER_REVISION = 2


@dataclass
class Tuning:
    """The chosen search settings and what was measured for them."""

    nprobe: int
    refine_factor: int
    measured_recall: float
    met: bool
    note: str
    p50_ms: float | None = None

    def settings(self, target_recall: float | None, target_latency_ms: float | None) -> dict:
        out: dict = {
            "nprobe": self.nprobe,
            "refine_factor": self.refine_factor,
            "measured_recall": round(self.measured_recall, 4),
            "tuning_note": self.note,
        }
        if target_recall is not None:
            out["target_recall"] = target_recall
        if target_latency_ms is not None:
            out["target_latency_ms"] = target_latency_ms
        if self.p50_ms is not None:
            out["measured_p50_ms"] = round(self.p50_ms, 3)
        return out


def sample_queries(shards: ShardSet, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of n stored vectors drawn evenly at random (seeded) from every shard."""
    total = shards.ntotal
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    ids, vectors, start = [], [], 0
    for store in shards.stores:
        rows = picks[(picks >= start) & (picks < start + len(store))] - start
        start += len(store)
        if len(rows):
            ids.append(np.asarray(store.ids[rows], dtype=np.int64))
            vectors.append(store.rows(rows))
    return np.concatenate(ids), np.concatenate(vectors)


def exact_neighbours(shards: ShardSet, queries: np.ndarray, exclude: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k ids per query by a scan of every stored vector, each query's own id left out."""
    best_scores = np.full((len(queries), k + 1), -np.inf, np.float32)
    best_ids = np.full((len(queries), k + 1), -1, np.int64)
    for ids, vectors in shards.iter_vectors():
        scores = queries @ vectors.T
        scores[ids[None, :] == exclude[:, None]] = -np.inf
        take = min(k + 1, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        all_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        all_ids = np.concatenate([best_ids, ids[top]], axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, : k + 1]
        best_scores, best_ids = (
            np.take_along_axis(all_scores, order, axis=1),
            np.take_along_axis(all_ids, order, axis=1),
        )
    return best_ids[:, :k]


class Reached(NamedTuple):
    """A measured recall@k: the mean over the sampled queries, and its one-sided 95% lower bound."""

    mean: float
    low: float


def reached_recall(found: np.ndarray, truth: np.ndarray) -> Reached:
    k = truth.shape[1]
    per_query = np.array([len(set(a[:k].tolist()) & set(b.tolist())) / k for a, b in zip(found, truth)])
    if not len(per_query):
        return Reached(0.0, 0.0)
    error = per_query.std(ddof=1) / np.sqrt(len(per_query)) if len(per_query) > 1 else 0.0
    return Reached(float(per_query.mean()), float(per_query.mean() - MARGIN_Z * error))


def _without_self(ids: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(ids), k), -1, np.int64)
    for row, (found, own) in enumerate(zip(ids, exclude)):
        kept = found[found != own][:k]
        out[row, : len(kept)] = kept
    return out


def measure_grid(
    shards: ShardSet,
    queries: np.ndarray,
    exclude: np.ndarray,
    truth: np.ndarray,
    nprobes: tuple[int, ...] = NPROBE_GRID,
    refine_factors: tuple[int, ...] = REFINE_GRID,
    k: int = K,
    target_recall: float | None = None,
) -> dict[tuple[int, int], Reached]:
    """recall@k of (nprobe, refine_factor) pairs: one candidate search per nprobe at the deepest
    pool, whose prefixes are the shallower pools (candidates come best first). With a target, pairs
    that cannot be cheaper than one already meeting it (its lower bound) are not measured."""
    results: dict[tuple[int, int], Reached] = {}
    # a search of k with refine R re-scores k x R candidates; a stored query also finds itself (first,
    # then left out), so it gets one more: (k + 1) x R measured 0.025 too high at 1,000,000
    deepest = k * max(refine_factors) + 1
    cheapest = np.inf
    for nprobe in sorted(nprobes):
        if nprobe > shards.nlist or cost(shards, nprobe, min(refine_factors), k) >= cheapest:
            continue
        candidates = shards.candidates(queries, deepest, nprobe=nprobe)[1]
        for factor in sorted(refine_factors):
            if cost(shards, nprobe, factor, k) >= cheapest:
                break
            _, refined = shards.refine(queries, candidates[:, : k * factor + 1], keep=k + 1)
            results[(nprobe, factor)] = reached = reached_recall(_without_self(refined, exclude, k), truth)
            if target_recall is not None and reached.low >= target_recall:
                cheapest = cost(shards, nprobe, factor, k)
                break
    return results


def cost(shards: ShardSet, nprobe: int, refine_factor: int, k: int = K) -> float:
    """Model cost of one query: PQ codes scanned plus re-scored candidates (see the module doc)."""
    per_list = shards.ntotal / max(1, shards.nlist)
    return nprobe * per_list + REFINE_COST * k * refine_factor


def choose(
    shards: ShardSet,
    recalls: dict[tuple[int, int], Reached],
    target_recall: float,
) -> Tuning:
    """The cheapest measured pair whose recall's lower bound meets target_recall, else the best
    recall (cheapest among equals)."""
    meeting = [pair for pair, r in recalls.items() if r.low >= target_recall]
    if meeting:
        nprobe, factor = min(meeting, key=lambda p: cost(shards, *p))
        reached = recalls[(nprobe, factor)]
        note = (
            f"recall@10 {reached.mean:.3f} (>= {reached.low:.3f} at 95%) >= target {target_recall:.2f} "
            f"at nprobe {nprobe}, refine x{factor}"
        )
        return Tuning(nprobe, factor, reached.mean, True, note)
    best = max(r.mean for r in recalls.values())
    nprobe, factor = min((p for p, r in recalls.items() if r.mean == best), key=lambda p: cost(shards, *p))
    largest = max(p for p, _ in recalls), max(f for _, f in recalls)
    note = (
        f"target recall@10 {target_recall:.2f} not met: the best measured is {best:.3f} at nprobe {nprobe}, "
        f"refine x{factor} (tried up to nprobe {largest[0]}, refine x{largest[1]}); "
        "a larger code (--index-factory IVF...,PQ64) reaches further"
    )
    return Tuning(nprobe, factor, best, False, note)


def choose_for_latency(
    shards: ShardSet, queries: np.ndarray, recalls: dict[tuple[int, int], Reached], target_ms: float
) -> Tuning:
    """The highest recall whose single-query p50 (timed here) is within target_ms."""
    timed: list[tuple[float, float, int, int]] = []
    sample = queries[:TIMED_QUERIES]
    for (nprobe, factor), (reached, _) in sorted(recalls.items(), key=lambda item: -item[1].mean):
        p50 = _p50_ms(shards, sample, nprobe, factor)
        timed.append((reached, p50, nprobe, factor))
        if p50 <= target_ms:
            note = (
                f"recall@10 {reached:.3f} at p50 {p50:.2f} ms <= target {target_ms:g} ms (nprobe {nprobe}, x{factor})"
            )
            return Tuning(nprobe, factor, reached, True, note, p50_ms=p50)
    reached, p50, nprobe, factor = min(timed, key=lambda t: t[1])
    note = f"target latency {target_ms:g} ms not met: the fastest measured is {p50:.2f} ms (nprobe {nprobe}, x{factor})"
    return Tuning(nprobe, factor, reached, False, note, p50_ms=p50)


def _p50_ms(shards: ShardSet, queries: np.ndarray, nprobe: int, factor: int) -> float:
    shards.search(queries[:2], K, nprobe=nprobe, refine_factor=factor)
    times = []
    for query in queries:
        started = time.perf_counter()
        shards.search(query[None, :], K, nprobe=nprobe, refine_factor=factor)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def tune(
    shards: ShardSet,
    target_recall: float | None = DEFAULT_TARGET_RECALL,
    target_latency_ms: float | None = None,
    n_queries: int = QUERIES,
    nprobes: tuple[int, ...] = NPROBE_GRID,
    refine_factors: tuple[int, ...] = REFINE_GRID,
) -> Tuning:
    """Measure the grid on stored vectors as queries and choose (see the module doc)."""
    refine_factors = tuple(f for f in refine_factors if f <= MAX_REFINE_FACTOR)
    exclude, queries = sample_queries(shards, n_queries)
    truth = exact_neighbours(shards, queries, exclude)
    if target_latency_ms is not None:
        recalls = measure_grid(shards, queries, exclude, truth, nprobes, refine_factors)
        return choose_for_latency(shards, queries, recalls, target_latency_ms)
    target = DEFAULT_TARGET_RECALL if target_recall is None else target_recall
    recalls = measure_grid(shards, queries, exclude, truth, nprobes, refine_factors, target_recall=target)
    return choose(shards, recalls, target)


@dataclass
class CodeChoice:
    """The trained index chosen at training time, its factory string and the measurements behind it."""

    index: Any
    factory: str
    met: bool
    note: str
    pools: dict[int, float]  # M -> predicted pool (candidates per result) at full size


def _pool_depths(index, base: np.ndarray, query_sets: list[np.ndarray], target: float, nprobe: int) -> float:
    """Candidates per result the index's PQ order needs on ``base`` for exact re-scoring to reach
    ``target`` recall@10, the worst over the query sets (inf: deeper than CODE_SEARCH_DEPTH)."""
    import faiss

    probe = faiss.clone_index(index)
    for start in range(0, len(base), 65536):
        probe.add(np.ascontiguousarray(base[start : start + 65536]))
    depth = min(CODE_SEARCH_DEPTH, len(base))
    worst = 0.0
    for queries in query_sets:
        truth = np.argsort(-(queries @ base.T), axis=1)[:, :K]
        found = probe.search(queries, depth, params=faiss.SearchParametersIVF(nprobe=nprobe))[1]
        # rank of each true neighbour in the PQ order (depth: not found)
        match = found[:, None, :] == truth[:, :, None]
        ranks = np.where(match.any(axis=2), match.argmax(axis=2), depth).ravel()
        needed = np.quantile(ranks, target, method="higher") + 1  # pool holding `target` of the truth
        worst = max(worst, np.inf if needed > depth else needed / K)
    return worst


def choose_code_size(
    factory: str,
    sample: np.ndarray,
    expected: int,
    target_recall: float,
    train,
    text_queries: np.ndarray | None = None,
    ladder: list[int] | None = None,
) -> CodeChoice:
    """Train ``factory`` (a plain IVF,PQ string) on ``sample`` with the smallest code of the ladder
    that meets ``target_recall`` for an index of ``expected`` vectors (see the module doc).

    ``train(index, vectors)`` trains an empty index (the device's way). The coarse quantizer is
    trained once; larger codes reuse its centroids and train only their codebooks."""
    import faiss

    from .factory import make_index, pq_code_of, pq_m_ladder, with_code

    nlist, first_m = pq_code_of(factory) or (0, 0)
    dim = sample.shape[1]
    ladder = [m for m in (ladder or pq_m_ladder(dim)) if m >= first_m] or [first_m]
    rng = np.random.default_rng(1)
    n_held = min(CODE_QUERIES, len(sample) // 10)
    order = rng.permutation(len(sample))
    held, base = sample[order[:n_held]], sample[order[n_held:]]
    query_sets = [held]
    if text_queries is not None and len(text_queries):
        picks = rng.choice(len(text_queries), min(CODE_QUERIES, len(text_queries)), replace=False)
        query_sets.append(np.ascontiguousarray(text_queries[np.sort(picks)], dtype=np.float32))
    scale = max(1.0, expected / len(base))
    # generous (an eighth of the lists, at least 64): the code's own ceiling is measured, nprobe is tuned at commit
    nprobe = min(nlist, max(64, nlist // 8))
    pools: dict[int, float] = {}
    centroids = None
    chosen = None
    for m in ladder:
        candidate = make_index(with_code(factory, m), dim)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(candidate))
        ivf.cp.min_points_per_centroid = 1
        ivf.pq.cp.min_points_per_centroid = 1
        ivf.do_polysemous_training = False
        if centroids is not None:
            ivf.quantizer.add(centroids)  # a trained quantizer with nlist centroids is not retrained
            candidate.train(np.ascontiguousarray(sample, dtype=np.float32))
        else:
            candidate = train(candidate, sample)
            ivf = faiss.downcast_index(faiss.extract_index_ivf(candidate))
            centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
        pools[m] = _pool_depths(candidate, base, query_sets, target_recall, nprobe) * scale
        chosen = (candidate, m)
        if pools[m] <= CODE_POOL_BUDGET:
            break
    assert chosen is not None
    index, m = chosen
    measured = ", ".join(
        f"PQ{size} x{pool:.0f}" if np.isfinite(pool) else f"PQ{size} >x100" for size, pool in pools.items()
    )
    queries = "held-out vectors" + (" and query-bank texts" if len(query_sets) > 1 else "")
    met = pools[m] <= CODE_POOL_BUDGET
    if met:
        note = (
            f"code size PQ{m}: the smallest whose candidate pool reaches recall@10 {target_recall:.2f} within "
            f"x{CODE_POOL_BUDGET} at {expected:,} vectors (measured on {queries}: {measured})"
        )
    else:
        note = (
            f"code size PQ{m}, the largest tried: no code reaches recall@10 {target_recall:.2f} within "
            f"x{CODE_POOL_BUDGET} at {expected:,} vectors (measured on {queries}: {measured})"
        )
    return CodeChoice(index, with_code(factory, m), met, note, pools)


def tune_index(writer: IndexWriter) -> Tuning | None:
    """Tune a writer's committed IVF index for the manifest's target and record the result; None for
    exact (Flat) indexes, an index too small to sample, or one already tuned for its size and target."""
    manifest = writer.manifest
    settings = manifest.settings
    if manifest.factory == "Flat" or not manifest.shards:
        return None
    target_recall = settings.get("target_recall", DEFAULT_TARGET_RECALL)
    target_latency = settings.get("target_latency_ms")
    key = [writer.count, target_recall, target_latency, manifest.trained_sha256, TUNER_REVISION]
    if settings.get("tuned_for") == key:
        return None
    shards = ShardSet.open(writer.index_dir, manifest)
    if shards.ntotal < 20 * K:
        return None
    started = time.perf_counter()
    # the grids read here, not bound as defaults, so a test can shrink them for an index run
    result = tune(
        shards,
        None if target_latency is not None else target_recall,
        target_latency,
        nprobes=NPROBE_GRID,
        refine_factors=REFINE_GRID,
    )
    settings.update(result.settings(None if target_latency is not None else target_recall, target_latency))
    if settings.get("code_size_note"):  # the training-time choice, shown by `babelsearch info` with the rest
        settings["tuning_note"] = f"{result.note}; {settings['code_size_note']}"
    settings["tuned_for"] = key
    writer.note(f"tuned in {time.perf_counter() - started:.1f} s: {result.note}")
    return result
