/* The exact refine in one compiled call: gather each candidate's float16 (or float32) row from the
 * memory-mapped refine stores, score it against the query and keep the best, for a whole batch.
 *
 * Why compiled: in numpy + faiss the refine costs a dozen calls per query, each several microseconds
 * once the coarse quantizer's scan has flushed the caches, and a copy of every candidate row. Here a
 * query costs one pass over its candidates. (Software prefetching of the next rows was measured and
 * gained nothing: out-of-order execution already overlaps the rows' cache misses.)
 *
 * Python side: engine/scorer.py (compiled_refine), called by ShardSet.refine. Tests:
 * tests/test_guard_shards.py runs every shard layout through this and through the numpy + faiss path it
 * replaces; tests/test_compiled_refine.py what it refuses. Only the AVX2/F16C kernel is used (FAST is
 * false elsewhere, and the Python path runs instead).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_X86_KERNELS 1
#endif

typedef float (*dot_fn)(const float *query, const void *row, Py_ssize_t dim);

#ifdef HAVE_X86_KERNELS
__attribute__((target("avx2"))) static inline float horizontal_sum(__m256 acc) {
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    sum = _mm_hadd_ps(sum, sum);
    sum = _mm_hadd_ps(sum, sum);
    return _mm_cvtss_f32(sum);
}

__attribute__((target("avx2,fma,f16c"))) static float dot_f16(const float *query, const void *row, Py_ssize_t dim) {
    const uint16_t *v = (const uint16_t *)row;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    Py_ssize_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i + 8)));
        acc0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(query + i), acc0);
        acc1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(query + i + 8), acc1);
    }
    for (; i + 8 <= dim; i += 8) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i)));
        acc0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(query + i), acc0);
    }
    float total = horizontal_sum(_mm256_add_ps(acc0, acc1));
    for (; i < dim; i++) {
        total += _cvtsh_ss(v[i]) * query[i];
    }
    return total;
}

__attribute__((target("avx2,fma"))) static float dot_f32(const float *query, const void *row, Py_ssize_t dim) {
    const float *v = (const float *)row;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    Py_ssize_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + i), _mm256_loadu_ps(query + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + i + 8), _mm256_loadu_ps(query + i + 8), acc1);
    }
    for (; i + 8 <= dim; i += 8) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + i), _mm256_loadu_ps(query + i), acc0);
    }
    float total = horizontal_sum(_mm256_add_ps(acc0, acc1));
    for (; i < dim; i++) {
        total += v[i] * query[i];
    }
    return total;
}
#endif

static int fast_kernels(void) {
#ifdef HAVE_X86_KERNELS
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

/* the kernels this CPU runs, chosen once at import (NULL: none; the Python side then never calls in) */
static dot_fn kernel_f16 = NULL, kernel_f32 = NULL;

/* One shard's refine store: sorted ids and their rows. */
typedef struct {
    Py_buffer ids, vectors;
    const int64_t *id;
    const char *rows;
    Py_ssize_t count, row_bytes;
    int64_t first, last;
    int consecutive;
} Store;

/* A kept candidate: its exact score and its position among the query's candidates. */
typedef struct {
    float score;
    Py_ssize_t position;
} Kept;

/* a is a better result than b: higher score, or the same score earlier among the candidates */
static inline int better(Kept a, Kept b) {
    return a.score > b.score || (a.score == b.score && a.position < b.position);
}

/* heap[0] is the worst kept result */
static void sift_down(Kept *heap, Py_ssize_t size, Py_ssize_t at) {
    for (;;) {
        Py_ssize_t worst = at, left = 2 * at + 1, right = left + 1;
        if (left < size && better(heap[worst], heap[left])) worst = left;
        if (right < size && better(heap[worst], heap[right])) worst = right;
        if (worst == at) return;
        Kept swap = heap[at];
        heap[at] = heap[worst];
        heap[worst] = swap;
        at = worst;
    }
}

static void sift_up(Kept *heap, Py_ssize_t at) {
    while (at > 0) {
        Py_ssize_t parent = (at - 1) / 2;
        if (!better(heap[parent], heap[at])) return;
        Kept swap = heap[at];
        heap[at] = heap[parent];
        heap[parent] = swap;
        at = parent;
    }
}

/* The row of ``id``, or NULL where no store holds it (an id lives in one store only). */
static const char *row_of(const Store *stores, Py_ssize_t nstores, int64_t id) {
    for (Py_ssize_t s = 0; s < nstores; s++) {
        const Store *store = &stores[s];
        if (id < store->first || id > store->last) continue;
        if (store->consecutive) return store->rows + (id - store->first) * store->row_bytes;
        Py_ssize_t lo = 0, hi = store->count;
        while (lo < hi) {
            Py_ssize_t mid = lo + (hi - lo) / 2;
            if (store->id[mid] < id) lo = mid + 1;
            else hi = mid;
        }
        if (lo < store->count && store->id[lo] == id) return store->rows + lo * store->row_bytes;
    }
    return NULL;
}

static void refine_batch(const Store *stores, Py_ssize_t nstores, dot_fn dot, const float *queries, Py_ssize_t dim,
                         const int64_t *ids, Py_ssize_t nq, Py_ssize_t n, Py_ssize_t keep, float *scores,
                         int64_t *out_ids, Kept *heap) {
    for (Py_ssize_t q = 0; q < nq; q++) {
        const int64_t *candidates = ids + q * n;
        const float *query = queries + q * dim;
        Py_ssize_t size = 0;
        for (Py_ssize_t j = 0; j < n; j++) {
            const char *row = candidates[j] < 0 ? NULL : row_of(stores, nstores, candidates[j]);
            if (row == NULL) continue; /* an empty slot, or an id no store holds */
            Kept item = {dot(query, row, dim), j};
            if (isnan(item.score)) continue; /* a NaN query scores nothing: no wrong id */
            if (size < keep) {
                heap[size] = item;
                sift_up(heap, size++);
            } else if (better(item, heap[0])) {
                heap[0] = item;
                sift_down(heap, size, 0);
            }
        }
        float *row_scores = scores + q * keep;
        int64_t *row_ids = out_ids + q * keep;
        for (Py_ssize_t slot = size; slot < keep; slot++) {
            row_scores[slot] = -INFINITY;
            row_ids[slot] = -1;
        }
        while (size > 0) { /* the worst first, into the last free slot */
            Kept worst = heap[0];
            heap[0] = heap[--size];
            sift_down(heap, size, 0);
            row_scores[size] = worst.score;
            row_ids[size] = candidates[worst.position];
        }
    }
}

static int get_buffer(PyObject *obj, Py_buffer *view, const char *what, const char *formats, Py_ssize_t itemsize,
                      int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    const char *format = view->format ? view->format : "B";
    if (format[0] == '<' || format[0] == '=' || format[0] == '@') format++;
    if (view->itemsize != itemsize || strlen(format) != 1 || strchr(formats, format[0]) == NULL) {
        PyErr_Format(PyExc_TypeError, "%s: wrong element type (%s, %zd bytes)", what, view->format, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A store's rows: float16 ('e') or float32 ('f'), of ``itemsize`` bytes when another store set it. */
static int get_vectors(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *format = view->format ? view->format : "B";
    if (format[0] == '<' || format[0] == '=' || format[0] == '@') format++;
    int known = strlen(format) == 1 && ((format[0] == 'e' && view->itemsize == 2) ||
                                        (format[0] == 'f' && view->itemsize == 4));
    if (!known || (itemsize && view->itemsize != itemsize)) {
        PyErr_SetString(PyExc_TypeError, "store vectors must all be float16, or all float32");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(refine_doc,
             "refine(queries, ids, stores, keep, scores, out_ids)\n\n"
             "Exact scores of each query's candidate ids from the stores' rows; the best ``keep`` per query,\n"
             "best first (ties: earlier candidate first), into ``scores`` / ``out_ids``. Slots past a query's\n"
             "known candidates hold -inf / -1. queries: float32 (nq, dim); ids: int64 (nq, n); stores: a\n"
             "sequence of (ids int64 (m,) sorted, vectors float16 or float32 (m, dim)), every store of one\n"
             "dtype; scores: float32 (nq, keep); out_ids: int64 (nq, keep); all C-contiguous.");

static PyObject *refine(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *queries_obj, *ids_obj, *stores_obj, *scores_obj, *out_ids_obj;
    Py_ssize_t keep;
    if (!PyArg_ParseTuple(args, "OOOnOO", &queries_obj, &ids_obj, &stores_obj, &keep, &scores_obj, &out_ids_obj))
        return NULL;
    if (keep < 0) return PyErr_Format(PyExc_ValueError, "keep must be >= 0, not %zd", keep);
    PyObject *sequence = PySequence_Fast(stores_obj, "stores must be a sequence of (ids, vectors) pairs");
    if (sequence == NULL) return NULL;
    Py_ssize_t nstores = PySequence_Fast_GET_SIZE(sequence);
    Py_buffer queries = {0}, ids = {0}, scores = {0}, out_ids = {0};
    int have_queries = 0, have_ids = 0, have_scores = 0, have_out_ids = 0;
    Py_ssize_t acquired = 0;
    Store *stores = calloc(nstores ? nstores : 1, sizeof(Store));
    Kept *heap = NULL;
    PyObject *result = NULL;
    if (stores == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (get_buffer(queries_obj, &queries, "queries", "f", 4, 0) < 0) goto done;
    have_queries = 1;
    if (get_buffer(ids_obj, &ids, "ids", "ql", 8, 0) < 0) goto done;
    have_ids = 1;
    if (get_buffer(scores_obj, &scores, "scores", "f", 4, 1) < 0) goto done;
    have_scores = 1;
    if (get_buffer(out_ids_obj, &out_ids, "out_ids", "ql", 8, 1) < 0) goto done;
    have_out_ids = 1;
    if (queries.ndim != 2 || ids.ndim != 2 || ids.shape[0] != queries.shape[0]) {
        PyErr_SetString(PyExc_ValueError, "queries must be (nq, dim) and ids (nq, n)");
        goto done;
    }
    Py_ssize_t nq = queries.shape[0], dim = queries.shape[1], n = ids.shape[1];
    if (scores.len != nq * keep * 4 || out_ids.len != nq * keep * 8) {
        PyErr_SetString(PyExc_ValueError, "scores and out_ids must hold (nq, keep) results");
        goto done;
    }
    Py_ssize_t itemsize = 0;
    for (; acquired < nstores; acquired++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(sequence, acquired);
        PyObject *store_ids, *store_vectors;
        if (!PyTuple_Check(pair) || !PyArg_ParseTuple(pair, "OO", &store_ids, &store_vectors)) {
            PyErr_SetString(PyExc_TypeError, "each store must be an (ids, vectors) tuple");
            goto done;
        }
        Store *store = &stores[acquired];
        if (get_buffer(store_ids, &store->ids, "store ids", "ql", 8, 0) < 0) goto done;
        if (get_vectors(store_vectors, &store->vectors, itemsize) < 0) {
            PyBuffer_Release(&store->ids);
            goto done;
        }
        itemsize = store->vectors.itemsize;
        store->count = store->ids.len / 8;
        store->row_bytes = dim * itemsize;
        if (store->vectors.len != store->count * store->row_bytes) {
            PyErr_Format(PyExc_ValueError, "store %zd holds %zd bytes of vectors for %zd ids of dim %zd", acquired,
                         store->vectors.len, store->count, dim);
            acquired++;
            goto done;
        }
        store->id = (const int64_t *)store->ids.buf;
        store->rows = (const char *)store->vectors.buf;
        store->first = store->count ? store->id[0] : 0;
        store->last = store->count ? store->id[store->count - 1] : -1;
        store->consecutive = store->last - store->first + 1 == store->count;
    }
    dot_fn dot = itemsize == 4 ? kernel_f32 : kernel_f16;
    if (dot == NULL && nstores > 0 && nq > 0 && n > 0) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has no AVX2/F16C: use the numpy refine");
        goto done;
    }
    heap = malloc((keep ? keep : 1) * sizeof(Kept));
    if (heap == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS refine_batch(stores, nstores, dot, (const float *)queries.buf, dim,
                                        (const int64_t *)ids.buf, nq, n, keep, (float *)scores.buf,
                                        (int64_t *)out_ids.buf, heap);
    Py_END_ALLOW_THREADS result = Py_None;
    Py_INCREF(result);
done:
    for (Py_ssize_t s = 0; s < acquired; s++) {
        PyBuffer_Release(&stores[s].ids);
        PyBuffer_Release(&stores[s].vectors);
    }
    if (have_queries) PyBuffer_Release(&queries);
    if (have_ids) PyBuffer_Release(&ids);
    if (have_scores) PyBuffer_Release(&scores);
    if (have_out_ids) PyBuffer_Release(&out_ids);
    free(stores);
    free(heap);
    Py_DECREF(sequence);
    return result;
}

static PyMethodDef methods[] = {
    {"refine", refine, METH_VARARGS, refine_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_refine",
    .m_doc = "The exact refine in one compiled call (see engine/_refine.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__refine(void) {
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
#ifdef HAVE_X86_KERNELS
    if (fast_kernels()) {
        kernel_f16 = dot_f16;
        kernel_f32 = dot_f32;
    }
#endif
    if (PyModule_AddIntConstant(module, "FAST", kernel_f16 != NULL) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
