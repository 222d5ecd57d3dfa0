/* aggregator.insights._summary: a chunk's trace summary from its columns in C (optional: the numpy path of
 * aggregator/insights/columns.py, ``_summarize`` with ``_FromColumns``, is its twin, which the tests hold it
 * to, and which takes over wherever this returns None).
 *
 * The numpy path makes some sixty numpy calls and a sort per chunk, each a pass over a column or a subset of
 * it, plus the Python between them. Here: (A) one pass for where None stands among the trace ids and which
 * spans are tasks'; (B) one backwards, listing the requests, root tasks and kept operations, each operation
 * with its piece (the next closer of its trace after it: a request, or a root task that drops it; none: its
 * trace's rest); (C) one over each list forwards: the requests' and root tasks' columns, the pieces' sums, then
 * the (piece, fingerprint) groups of the queries (a hash table), all in row order, so that every sum adds the
 * same doubles in the same order as ``np.bincount`` does. (B) and (C) branch little on the kind of a row (it
 * is as good as random): every row writes its list entries and only the rows of the kind move on, which took
 * 8% off the whole against one switch per row in (B) and (C) (bench/trace_summary_bench.py --old-native).
 * The groups are put in order by a counting sort on their piece (not by following a list per piece, a cache
 * miss a group), and the fingerprints joined into fp_keys here, each read once (no list of them, no count of
 * the separators afterwards): 14% off the whole (0.0424 -> 0.0364 us per event).
 *
 * request_sums: a part's requests summed per (window, route) (columns.request_sums), counted over the keys'
 * range as numpy's _dense and _counts do: 0.0079 -> 0.0037 us per event.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* parsers.columns.KIND_CODES (columns.py asserts they are these) */
enum { K_REQUEST = 0, K_DB = 1, K_CACHE = 2, K_EXTERNAL = 3, K_TASK = 4, K_METRIC = 5 };
/* a row's part in the pieces */
enum { C_NONE = 0, C_REQUEST, C_ROOT, C_TASK, C_OP };
#define REST (-1)    /* an operation's piece: its trace's rest */
#define DROPPED (-2) /* an operation's piece: none, a root task dropped it */
#define FAILURE 1    /* parsers.columns.OUTCOMES["failure"] */
#define NFIELDS 36

static PyObject *frombuffer;                                            /* numpy.frombuffer */
static PyObject *dt_u1, *dt_u2, *dt_u4, *dt_i4, *dt_i8, *dt_f8, *dt_b1; /* numpy dtypes */
static PyObject *empty_str;

/* ---- allocations of one call, freed together ---- */

typedef struct {
    void **blocks;
    size_t n, cap;
} Arena;

static void *arena_alloc(Arena *a, size_t bytes, int fill) {
    if (a->n == a->cap) {
        size_t more = a->cap ? a->cap * 2 : 64;
        void **blocks = realloc(a->blocks, more * sizeof(void *));
        if (blocks == NULL) {
            return NULL;
        }
        a->blocks = blocks;
        a->cap = more;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p != NULL) {
        if (fill >= 0) {
            memset(p, fill, bytes);
        }
        a->blocks[a->n++] = p;
    }
    return p;
}

static void arena_free(Arena *a) {
    for (size_t i = 0; i < a->n; i++) {
        free(a->blocks[i]);
    }
    free(a->blocks);
    a->blocks = NULL;
    a->n = a->cap = 0;
}

/* ---- input columns ---- */

/* A C-contiguous one-dimensional view of obj with items of `size` bytes of one of the struct letters in
 * `letters`: 0, or -1 (no exception set). */
static int view_of(PyObject *obj, Py_buffer *view, Py_ssize_t size, const char *letters) {
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        return -1;
    }
    const char *f = view->format;
    if (f != NULL && (*f == '<' || *f == '=' || *f == '@')) {
        f++;
    }
    if (view->itemsize != size || view->ndim != 1 || f == NULL || f[0] == '\0' || f[1] != '\0'
        || strchr(letters, f[0]) == NULL) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ---- output arrays: numpy arrays over new bytearrays (writable, as numpy's own) ---- */

static PyObject *new_array(Py_ssize_t nbytes, PyObject *dtype, void **data) {
    PyObject *buf = PyByteArray_FromStringAndSize(NULL, nbytes);
    if (buf == NULL) {
        return NULL;
    }
    *data = PyByteArray_AS_STRING(buf);
    PyObject *arr = PyObject_CallFunctionObjArgs(frombuffer, buf, dtype, NULL);
    Py_DECREF(buf);
    return arr;
}

static PyObject *f64_array(const double *v, Py_ssize_t n) {
    void *data;
    PyObject *arr = new_array(n * 8, dt_f8, &data);
    if (arr != NULL && n) {
        memcpy(data, v, (size_t)n * 8);
    }
    return arr;
}

static PyObject *bool_array(const uint8_t *v, Py_ssize_t n) {
    void *data;
    PyObject *arr = new_array(n, dt_b1, &data);
    if (arr != NULL && n) {
        memcpy(data, v, (size_t)n);
    }
    return arr;
}

/* columns._index_array: codes into a table of `size` entries in the narrowest dtype that holds them. */
static PyObject *index_array(const int64_t *v, Py_ssize_t n, int64_t size) {
    void *data;
    PyObject *arr;
    if (size <= 1 << 8) {
        if ((arr = new_array(n, dt_u1, &data)) != NULL) {
            for (Py_ssize_t i = 0; i < n; i++) ((uint8_t *)data)[i] = (uint8_t)v[i];
        }
    } else if (size <= 1 << 16) {
        if ((arr = new_array(n * 2, dt_u2, &data)) != NULL) {
            for (Py_ssize_t i = 0; i < n; i++) ((uint16_t *)data)[i] = (uint16_t)v[i];
        }
    } else if ((arr = new_array(n * 4, dt_i4, &data)) != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) ((int32_t *)data)[i] = (int32_t)v[i];
    }
    return arr;
}

/* columns._count_array: non-negative counts in the narrowest unsigned dtype that holds them. */
static PyObject *count_array(const int64_t *v, Py_ssize_t n) {
    int64_t top = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] > top) top = v[i];
    }
    void *data;
    PyObject *arr;
    if (top < 1 << 8) {
        if ((arr = new_array(n, dt_u1, &data)) != NULL) {
            for (Py_ssize_t i = 0; i < n; i++) ((uint8_t *)data)[i] = (uint8_t)v[i];
        }
    } else if (top < 1 << 16) {
        if ((arr = new_array(n * 2, dt_u2, &data)) != NULL) {
            for (Py_ssize_t i = 0; i < n; i++) ((uint16_t *)data)[i] = (uint16_t)v[i];
        }
    } else if (top < ((int64_t)1 << 32)) {
        if ((arr = new_array(n * 4, dt_u4, &data)) != NULL) {
            for (Py_ssize_t i = 0; i < n; i++) ((uint32_t *)data)[i] = (uint32_t)v[i];
        }
    } else if ((arr = new_array(n * 8, dt_i8, &data)) != NULL) {
        if (n) memcpy(data, v, (size_t)n * 8);
    }
    return arr;
}

/* columns._nonzero into out[0] (where) and out[1] (the values): the entries whose bits are not all zero
 * (-0.0 is kept). `at` and `values` are scratch space of n entries. */
static int nonzero_into(PyObject **out, const double *v, Py_ssize_t n, int64_t *at, double *values) {
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* (branch-free: the zeros come as they will) */
        uint64_t bits;
        memcpy(&bits, &v[i], 8);
        at[k] = i;
        values[k] = v[i];
        k += bits != 0;
    }
    out[0] = index_array(at, k, n);
    out[1] = f64_array(values, k);
    return out[0] && out[1] ? 0 : -1;
}

/* ---- re-coding a string column's codes by first appearance (columns._subset_codes) ---- */

typedef struct {
    PyObject *table;  /* list */
    PyObject *absent; /* what code -1 reads as (None or "") */
    int64_t *map;     /* per code + 1: the dense code, or -1 */
    int64_t *ids;     /* per dense code: its code + 1 (0: absent) */
    int64_t n;        /* dense codes given */
    int64_t alias;    /* the table's entry equal to absent ("" only), -2 until looked for */
} Recoder;

static int recoder_init(Recoder *r, Arena *a, PyObject *table, PyObject *absent, Py_ssize_t most) {
    Py_ssize_t size = PyList_GET_SIZE(table) + 1;
    r->table = table;
    r->absent = absent;
    r->map = arena_alloc(a, (size_t)size * 8, 0xff);
    r->ids = arena_alloc(a, (size_t)(most < size ? most : size) * 8, -1);
    r->n = 0;
    r->alias = absent == Py_None ? -1 : -2;
    return r->map && r->ids ? 0 : -1;
}

/* The dense code of this code (-1: absent); -1 when it is outside the table (below -1 too). */
static int64_t recode(Recoder *r, int64_t code) {
    if ((uint64_t)(code + 1) > (uint64_t)PyList_GET_SIZE(r->table)) { /* (one compare: the codes are int32) */
        return -1;
    }
    if (code < 0) {
        if (r->alias == -2) { /* the absent value's entry in the table, if it has one: table.index("") */
            r->alias = -1;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(r->table); i++) {
                PyObject *item = PyList_GET_ITEM(r->table, i);
                if (PyUnicode_Check(item) && PyUnicode_GET_LENGTH(item) == 0) {
                    r->alias = i;
                    break;
                }
            }
        }
        code = r->alias;
    }
    int64_t *slot = &r->map[code + 1];
    if (*slot < 0) {
        *slot = r->n;
        r->ids[r->n++] = code + 1;
    }
    return *slot;
}

/* The values of the dense codes, in order: a new list. */
static PyObject *recoded_values(const Recoder *r) {
    PyObject *out = PyList_New(r->n);
    if (out == NULL) {
        return NULL;
    }
    for (int64_t i = 0; i < r->n; i++) {
        PyObject *v = r->ids[i] ? PyList_GET_ITEM(r->table, r->ids[i] - 1) : r->absent;
        Py_INCREF(v);
        PyList_SET_ITEM(out, i, v);
    }
    return out;
}

/* max(newest, float(part.max())) as Python's max takes it (the first unless the second is greater), of a part of
 * `n` rows whose largest end is `max` (NaN if one is NaN: `nan`); newest as it was for an empty part */
static double newest_join(double newest, int64_t n, int nan, double max) {
    if (!n) {
        return newest;
    }
    double part = nan ? NAN : max;
    return part > newest ? part : newest;
}

/* ---- the (piece, fingerprint) groups ---- */

typedef struct {
    int64_t piece, key, n, first;
    double ms;
    int all_negative_zero;
} Group;

static inline uint64_t group_hash(int64_t piece, int64_t key) {
    uint64_t h = (uint64_t)piece * 0x9E3779B97F4A7C15ull ^ ((uint64_t)key + 0x632BE59BD9B4E019ull)
                 * 0xC2B2AE3D27D4EB4Full;
    return h ^ (h >> 29);
}

/* The fingerprints fps[keys[k]] as TraceBatch.fp_keys has them: one string, KEY_SEPARATOR ("\0") between them,
 * as "\0".join(...) makes it (one pass over them, no list and no count of the separators afterwards), or the
 * list of them when one holds the separator. */
static PyObject *joined_keys(PyObject *fps, const int64_t *keys, int64_t nkeys) {
    Py_ssize_t length = nkeys ? nkeys - 1 : 0;
    Py_UCS4 top = 0;
    int separated = 1;
    for (int64_t k = 0; k < nkeys; k++) {
        PyObject *item = PyList_GET_ITEM(fps, keys[k]); /* (a non-empty str: summarize checked) */
        Py_ssize_t n = PyUnicode_GET_LENGTH(item);
        length += n;
        Py_UCS4 most = PyUnicode_MAX_CHAR_VALUE(item);
        top = most > top ? most : top;
        if (separated && (PyUnicode_KIND(item) == PyUnicode_1BYTE_KIND
                              ? memchr(PyUnicode_DATA(item), 0, (size_t)n) != NULL
                              : PyUnicode_FindChar(item, 0, 0, n, 1) >= 0)) {
            separated = 0;
        }
    }
    if (!separated) {
        PyObject *list = PyList_New(nkeys);
        for (int64_t k = 0; list != NULL && k < nkeys; k++) {
            PyObject *item = PyList_GET_ITEM(fps, keys[k]);
            Py_INCREF(item);
            PyList_SET_ITEM(list, k, item);
        }
        return list;
    }
    PyObject *out = PyUnicode_New(length, top);
    if (out == NULL) {
        return NULL;
    }
    const int kind = PyUnicode_KIND(out);
    char *data = PyUnicode_DATA(out);
    Py_ssize_t at = 0;
    for (int64_t k = 0; k < nkeys; k++) {
        PyObject *item = PyList_GET_ITEM(fps, keys[k]);
        Py_ssize_t n = PyUnicode_GET_LENGTH(item);
        if (k) {
            PyUnicode_WRITE(kind, data, at++, 0);
        }
        if (PyUnicode_KIND(item) == kind) {
            memcpy(data + at * kind, PyUnicode_DATA(item), (size_t)(n * kind));
        } else if (PyUnicode_CopyCharacters(out, at, item, 0, n) < 0) { /* (a narrower one: widened) */
            Py_DECREF(out);
            return NULL;
        }
        at += n;
    }
    return out;
}

PyDoc_STRVAR(summarize_doc,
"summarize(kind, tid, ntraces, ts, dur, span, parent, nspans, outcome, status, route, routes, method, methods,\n"
"          fp, fps, text, texts, coll, colls) -> tuple | False | None\n\n"
"columns._summarize of a chunk's columns (parsers.columns.EventColumns: kind int8, tid the trace_id codes\n"
"and ntraces its table's size,"
"ts and dur float64, span and parent the span_id and parent_span_id codes, nspans the span table's size,\n"
"outcome int8, status int16, route/method/fp/text/coll the codes of http_route, http_request_method,\n"
"db_query_fingerprint, db_query_text and db_collection_name (int32) with their tables (lists)). False when no\n"
"event has a trace id (or there is none); None when the numpy path must do it (a kept query without a\n"
"fingerprint, or one that is empty; a column not as described; a code outside its table); else the tuple\n"
"(untraced, tasks, newest, req_trace, req_end, req_dur, req_failed, req_route, routes, req_method, methods,\n"
"req_queries, req_db_at, req_db, req_cache_at, req_cache, req_external_at, req_external, root_trace,\n"
"root_at, rest_trace, rest_newest, rest_events, rest_queries, rest_db, rest_cache, rest_external,\n"
"fp_owner, fp_key, fp_n, fp_ms, fp_text, fp_texts, fp_table, fp_tables, fp_keys) with untraced where None\n"
"goes in the trace table (-1: nowhere) and fp_keys as TraceBatch has it (one string, or a list).");

enum { A_KIND, A_TID, A_NTRACES, A_TS, A_DUR, A_SPAN, A_PARENT, A_NSPANS, A_OUTCOME, A_STATUS, A_ROUTE, A_ROUTES, A_METHOD,
       A_METHODS, A_FP, A_FPS, A_TEXT, A_TEXTS, A_COLL, A_COLLS, NARGS };

static PyObject *summarize(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != NARGS) {
        PyErr_SetString(PyExc_TypeError, "summarize() takes 20 arguments");
        return NULL;
    }
    static const int columns[] = {A_KIND, A_TID, A_TS, A_DUR, A_SPAN, A_PARENT, A_OUTCOME, A_STATUS, A_ROUTE,
                                  A_METHOD, A_FP, A_TEXT, A_COLL};
    static const int sizes[] = {1, 4, 8, 8, 4, 4, 1, 2, 4, 4, 4, 4, 4};
    static const char *letters[] = {"b", "il", "d", "d", "il", "il", "b", "h", "il", "il", "il", "il", "il"};
    enum { NCOLS = sizeof columns / sizeof columns[0] };
    Py_buffer views[NCOLS];
    int held = 0;
    Arena arena = {NULL, 0, 0};
    PyObject *result = NULL;
    PyObject *out[NFIELDS] = {NULL};

    for (int k = A_ROUTES; k <= A_COLLS; k += 2) {
        if (!PyList_Check(args[k])) {
            Py_RETURN_NONE;
        }
    }
    /* the tables' sizes as the int32 codes can index them (a larger one is no parser's: it would allocate
     * per entry and overflow the int32 codes + 1 below) */
    Py_ssize_t nspans = PyLong_AsSsize_t(args[A_NSPANS]), ntrace_table = PyLong_AsSsize_t(args[A_NTRACES]);
    if (nspans < 0 || ntrace_table < 0 || nspans > INT32_MAX || ntrace_table > INT32_MAX) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    for (; held < NCOLS; held++) {
        if (view_of(args[columns[held]], &views[held], sizes[held], letters[held]) < 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    const Py_ssize_t n = views[0].len;
    for (int k = 1; k < NCOLS; k++) {
        if (views[k].len / views[k].itemsize != n || n > INT32_MAX) { /* (rows are listed as int32) */
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    const int8_t *kind = views[0].buf;
    const int32_t *tid = views[1].buf, *span = views[4].buf, *parent = views[5].buf;
    const double *ts = views[2].buf, *dur = views[3].buf;
    const int8_t *outcome = views[6].buf;
    const int16_t *status = views[7].buf;
    const int32_t *route = views[8].buf, *method = views[9].buf, *fp = views[10].buf, *text = views[11].buf,
                  *coll = views[12].buf;
    PyObject *fps = args[A_FPS];

    /* (A) where None goes among the trace ids (after the ids first seen before the first event without one),
     * and the spans of every task (with or without a trace id): operations below them are the task's. Spans
     * are marked at their code + 1 (0: no parent span, never marked; nspans + 1: every other row's mark). */
    Py_ssize_t first_absent = -1;
    int64_t max_before = -1;
    int traced_any = 0;
    uint8_t *is_task_span = arena_alloc(&arena, (size_t)nspans + 2, 0);
    if (is_task_span == NULL) {
        goto nomemory;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t t = tid[i], s = span[i];
        if (t < 0) {
            if (first_absent < 0) first_absent = i;
        } else {
            traced_any = 1;
            if (first_absent < 0 && t > max_before) max_before = t;
        }
        if (t >= ntrace_table || t < -1 || (uint64_t)((int64_t)s + 1) > (uint64_t)nspans
            || (uint64_t)((int64_t)parent[i] + 1) > (uint64_t)nspans) {
            result = Py_NewRef(Py_None); /* a code outside its table */
            goto done;
        }
        is_task_span[kind[i] == K_TASK && s >= 0 ? s + 1 : nspans + 1] = 1;
    }
    if (!traced_any) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    is_task_span[0] = 0;
    const int64_t untraced = first_absent < 0 ? -1 : first_absent ? max_before + 1 : 0;
    const int64_t ntraces = ntrace_table + (untraced >= 0);
#define CODE(t) ((t) < 0 ? untraced : (int64_t)(t) + (untraced >= 0 && (t) >= untraced))

    /* (B) backwards: the rows of requests, root tasks and kept operations (each with its closer: the request
     * after it in its trace, counted from the last, or REST), with few branches: every row writes its entry
     * and only the rows of the kind move on. Rows without a trace id use the slot after the traces'. */
    int32_t *req_rows = arena_alloc(&arena, ((size_t)n + 1) * 4, -1);   /* (B) fills them from the end */
    int32_t *root_rows = arena_alloc(&arena, ((size_t)n + 1) * 4, -1);
    int32_t *root_after = arena_alloc(&arena, ((size_t)n + 1) * 4, -1); /* the requests after each */
    int32_t *op_rows = arena_alloc(&arena, ((size_t)n + 1) * 4, -1);
    int32_t *op_closer = arena_alloc(&arena, ((size_t)n + 1) * 4, -1);
    int32_t *next_closer = arena_alloc(&arena, ((size_t)ntraces + 1) * 4, 0xff); /* REST */
    uint8_t *with_rest = arena_alloc(&arena, (size_t)ntraces + 1, 0);
    if (!req_rows || !root_rows || !root_after || !op_rows || !op_closer || !next_closer || !with_rest) {
        goto nomemory;
    }
    int64_t nreq = 0, nroots = 0, nops = 0, tasks = 0;
    double task_max = -INFINITY;
    int task_nan = 0;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        int32_t t = tid[i];
        int k = kind[i];
        int64_t c = t < 0 ? ntraces : CODE(t);
        int traced = (t >= 0) & (k != K_METRIC);
        int is_req = traced & (k == K_REQUEST);
        int is_task = traced & (k == K_TASK);
        int is_root = is_task & (parent[i] < 0);
        int is_op = traced & ((unsigned)(k - K_DB) <= K_EXTERNAL - K_DB) & !is_task_span[parent[i] + 1];
        int32_t closer = next_closer[c];
        req_rows[nreq] = (int32_t)i;
        root_rows[nroots] = (int32_t)i;
        root_after[nroots] = (int32_t)nreq;
        op_rows[nops] = (int32_t)i;
        op_closer[nops] = closer;
        with_rest[c] |= is_op & (closer == REST);
        next_closer[c] = is_req ? (int32_t)nreq : is_root ? DROPPED : closer;
        nreq += is_req;
        nroots += is_root;
        nops += is_op & (closer != DROPPED);
        double x = is_task ? ts[i] : -INFINITY;
        tasks += is_task;
        task_nan |= isnan(x);
        task_max = x > task_max ? x : task_max;
    }
    /* the rests in the order of their traces' codes: piece nreq + their rank */
    int32_t *rest_rank = next_closer; /* (reused) */
    int64_t nrest = 0;
    for (int64_t c = 0; c < ntraces; c++) {
        rest_rank[c] = with_rest[c] ? (int32_t)nrest++ : -1;
    }
    const int64_t npieces = nreq + nrest;

    /* (C) forwards: requests, root tasks, the kept operations' sums per piece, then the queries' groups */
    int64_t *req_trace = arena_alloc(&arena, (size_t)nreq * 8, -1);
    double *req_end = arena_alloc(&arena, (size_t)nreq * 8, -1);
    double *req_dur = arena_alloc(&arena, (size_t)nreq * 8, -1);
    uint8_t *req_failed = arena_alloc(&arena, (size_t)nreq, -1);
    int64_t *req_route = arena_alloc(&arena, (size_t)nreq * 8, -1);
    int64_t *req_method = arena_alloc(&arena, (size_t)nreq * 8, -1);
    int64_t *root_trace = arena_alloc(&arena, (size_t)nroots * 8, -1);
    int64_t *root_at = arena_alloc(&arena, (size_t)nroots * 8, -1);
    int64_t *rest_trace = arena_alloc(&arena, (size_t)nrest * 8, -1);
    int64_t *queries = arena_alloc(&arena, (size_t)npieces * 8, 0);
    int64_t *events = arena_alloc(&arena, (size_t)npieces * 8, 0);
    double *ms = arena_alloc(&arena, (size_t)npieces * 3 * 8, 0); /* db, cache, external (all bits 0: 0.0) */
    double *piece_newest = arena_alloc(&arena, (size_t)npieces * 8, -1);
    int32_t *db_rows = arena_alloc(&arena, ((size_t)nops + 1) * 4, -1);
    int64_t *db_piece = arena_alloc(&arena, ((size_t)nops + 1) * 8, -1);
    Recoder routes, methods;
    if (!req_trace || !req_end || !req_dur || !req_failed || !req_route || !req_method || !root_trace
        || !root_at || !rest_trace || !queries || !events || !ms || !piece_newest || !db_rows || !db_piece
        || recoder_init(&routes, &arena, args[A_ROUTES], empty_str, nreq) < 0
        || recoder_init(&methods, &arena, args[A_METHODS], empty_str, nreq) < 0) {
        goto nomemory;
    }
    double *db_ms = ms, *cache_ms = ms + npieces, *external_ms = ms + 2 * npieces;
    for (int64_t c = 0, r = 0; c < ntraces; c++) {
        if (rest_rank[c] >= 0) rest_trace[r++] = c;
    }
    for (int64_t p = 0; p < npieces; p++) piece_newest[p] = -INFINITY;
    double req_max = -INFINITY, op_max = -INFINITY;
    int req_nan = 0, op_nan = 0;
    for (int64_t r = 0; r < nreq; r++) {
        int32_t i = req_rows[nreq - 1 - r];
        double x = ts[i];
        req_trace[r] = CODE(tid[i]);
        req_end[r] = x;
        req_dur[r] = dur[i];
        req_failed[r] = (outcome[i] == FAILURE) | (status[i] >= 500);
        if ((req_route[r] = recode(&routes, route[i])) < 0 || (req_method[r] = recode(&methods, method[i])) < 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        req_nan |= isnan(x);
        req_max = x > req_max ? x : req_max;
    }
    for (int64_t r = 0; r < nroots; r++) {
        int32_t i = root_rows[nroots - 1 - r];
        root_trace[r] = CODE(tid[i]);
        root_at[r] = nreq - root_after[nroots - 1 - r]; /* the requests before it */
    }
    int64_t ndb = 0;
    for (int64_t j = nops - 1; j >= 0; j--) {
        int32_t i = op_rows[j], closer = op_closer[j];
        int k = kind[i];
        int64_t p = closer >= 0 ? nreq - 1 - closer : nreq + rest_rank[CODE(tid[i])];
        double d = dur[i], x = ts[i], cur = piece_newest[p];
        ms[(k - K_DB) * npieces + p] += d;
        queries[p] += k == K_DB;
        events[p]++;
        piece_newest[p] = (cur >= x || isnan(cur)) ? cur : x; /* np.maximum.at */
        op_nan |= isnan(x);
        op_max = x > op_max ? x : op_max;
        db_rows[ndb] = i;
        db_piece[ndb] = p;
        ndb += k == K_DB;
    }

    int64_t *place = arena_alloc(&arena, ((size_t)npieces + 1) * 8, 0); /* per piece: its first group's place */
    Group *groups = arena_alloc(&arena, (size_t)ndb * sizeof(Group), -1);
    int64_t slots = 2;
    while (slots < 2 * ndb) slots *= 2;
    int64_t *table = arena_alloc(&arena, (size_t)slots * 8, 0xff);
    const Py_ssize_t nfps = PyList_GET_SIZE(fps);
    int64_t *key_of = arena_alloc(&arena, (size_t)nfps * 8, 0xff); /* per fingerprint code: its key, or -1 */
    int64_t *keys = arena_alloc(&arena, (size_t)(ndb < nfps ? ndb : nfps) * 8, -1);
    if (!place || !groups || !table || !key_of || !keys) {
        goto nomemory;
    }
    int64_t ngroups = 0, nkeys = 0;
    const uint64_t mask = (uint64_t)slots - 1;
    for (int64_t j = 0; j < ndb; j++) {
        int32_t i = db_rows[j], f = fp[i];
        int64_t p = db_piece[j];
        double d = dur[i];
        if (f < 0 || f >= nfps) {
            result = Py_NewRef(Py_None); /* without a fingerprint: the text's, in Python */
            goto done;
        }
        int64_t key = key_of[f];
        if (key < 0) {
            PyObject *item = PyList_GET_ITEM(fps, f);
            if (!PyUnicode_Check(item) || PyUnicode_GET_LENGTH(item) == 0) {
                result = Py_NewRef(Py_None);
                goto done;
            }
            key = key_of[f] = nkeys;
            keys[nkeys++] = f;
        }
        uint64_t h = group_hash(p, key) & mask;
        Group *g;
        for (;;) {
            int64_t at = table[h];
            if (at < 0) {
                at = table[h] = ngroups++;
                g = &groups[at];
                g->piece = p;
                g->key = key;
                g->n = 0;
                g->ms = 0.0;
                g->all_negative_zero = 1;
                g->first = i;
                place[p + 1]++;
                break;
            }
            g = &groups[at];
            if (g->piece == p && g->key == key) {
                break;
            }
            h = (h + 1) & mask;
        }
        g->n++;
        g->ms += d;
        g->all_negative_zero &= d == 0.0 && signbit(d);
    }

    /* the groups by piece, each piece's in the order they first appear */
    int64_t *fp_owner = arena_alloc(&arena, (size_t)ngroups * 8, -1);
    int64_t *fp_key = arena_alloc(&arena, (size_t)ngroups * 8, -1);
    int64_t *fp_n = arena_alloc(&arena, (size_t)ngroups * 8, -1);
    double *fp_ms = arena_alloc(&arena, (size_t)ngroups * 8, -1);
    int64_t *fp_text = arena_alloc(&arena, (size_t)ngroups * 8, -1);
    int64_t *fp_table = arena_alloc(&arena, (size_t)ngroups * 8, -1);
    int64_t *scratch_at = arena_alloc(&arena, (size_t)nreq * 8, -1);
    double *scratch_v = arena_alloc(&arena, (size_t)nreq * 8, -1);
    Recoder texts, colls;
    if (!fp_owner || !fp_key || !fp_n || !fp_ms || !fp_text || !fp_table || !scratch_at || !scratch_v
        || recoder_init(&texts, &arena, args[A_TEXTS], Py_None, ngroups) < 0
        || recoder_init(&colls, &arena, args[A_COLLS], Py_None, ngroups) < 0) {
        goto nomemory;
    }
    /* placed by a counting sort on the piece, which keeps each piece's in the order they were made (of their
     * first rows); the texts and tables coded by first appearance in that order */
    for (int64_t p = 0; p < npieces; p++) place[p + 1] += place[p];
    int64_t *first = fp_text; /* (each group's first row, until its text's code takes its place) */
    for (int64_t at = 0; at < ngroups; at++) {
        const Group *g = &groups[at];
        int64_t e = place[g->piece]++;
        fp_owner[e] = g->piece;
        fp_key[e] = g->key;
        fp_n[e] = g->n;
        fp_ms[e] = g->all_negative_zero ? -0.0 : g->ms; /* the loop's sum starts from the first duration */
        first[e] = g->first;
    }
    for (int64_t e = 0; e < ngroups; e++) {
        int64_t row = first[e];
        if ((fp_text[e] = recode(&texts, text[row])) < 0 || (fp_table[e] = recode(&colls, coll[row])) < 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }

    /* as `for part in (requests, tasks, kept operations): if part.size: newest = max(newest, part.max())` */
    double newest = -INFINITY;
    newest = newest_join(newest, nreq, req_nan, req_max);
    newest = newest_join(newest, tasks, task_nan, task_max);
    newest = newest_join(newest, nops, op_nan, op_max);
    PyObject *key_list = joined_keys(fps, keys, nkeys);
    if (key_list == NULL) {
        goto error;
    }
    int o = 0;
    out[o++] = PyLong_FromLongLong(untraced);
    out[o++] = PyLong_FromLongLong(tasks);
    out[o++] = PyFloat_FromDouble(newest);
    out[o++] = index_array(req_trace, nreq, ntraces);
    out[o++] = f64_array(req_end, nreq);
    out[o++] = f64_array(req_dur, nreq);
    out[o++] = bool_array(req_failed, nreq);
    out[o++] = index_array(req_route, nreq, routes.n);
    out[o++] = recoded_values(&routes);
    out[o++] = index_array(req_method, nreq, methods.n);
    out[o++] = recoded_values(&methods);
    out[o++] = count_array(queries, nreq);
    if (nonzero_into(&out[o], db_ms, nreq, scratch_at, scratch_v) < 0
        || nonzero_into(&out[o + 2], cache_ms, nreq, scratch_at, scratch_v) < 0
        || nonzero_into(&out[o + 4], external_ms, nreq, scratch_at, scratch_v) < 0) {
        Py_DECREF(key_list);
        goto error;
    }
    o += 6;
    out[o++] = index_array(root_trace, nroots, ntraces);
    out[o++] = index_array(root_at, nroots, nreq + 1);
    out[o++] = index_array(rest_trace, nrest, ntraces);
    out[o++] = f64_array(piece_newest + nreq, nrest);
    out[o++] = count_array(events + nreq, nrest);
    out[o++] = count_array(queries + nreq, nrest);
    out[o++] = f64_array(db_ms + nreq, nrest);
    out[o++] = f64_array(cache_ms + nreq, nrest);
    out[o++] = f64_array(external_ms + nreq, nrest);
    out[o++] = index_array(fp_owner, ngroups, npieces);
    out[o++] = index_array(fp_key, ngroups, nkeys);
    out[o++] = count_array(fp_n, ngroups);
    out[o++] = f64_array(fp_ms, ngroups);
    out[o++] = index_array(fp_text, ngroups, texts.n);
    out[o++] = recoded_values(&texts);
    out[o++] = index_array(fp_table, ngroups, colls.n);
    out[o++] = recoded_values(&colls);
    out[o++] = key_list;
    for (int k = 0; k < NFIELDS; k++) {
        if (out[k] == NULL) {
            goto error;
        }
    }
    result = PyTuple_New(NFIELDS);
    if (result != NULL) {
        for (int k = 0; k < NFIELDS; k++) {
            PyTuple_SET_ITEM(result, k, out[k]);
            out[k] = NULL;
        }
    }
    goto done;
nomemory:
    PyErr_NoMemory();
error:
    result = NULL;
done:
#undef CODE
    for (int k = 0; k < NFIELDS; k++) {
        Py_XDECREF(out[k]);
    }
    for (int k = 0; k < held; k++) {
        PyBuffer_Release(&views[k]);
    }
    arena_free(&arena);
    return result;
}

/* ---- a part's requests summed per window and route (columns.request_sums) ---- */

/* The n integers of a one-dimensional array of any integer or bool dtype (a batch's narrow columns) into out:
 * 0, or -1 (no exception set: not such an array, or not n of them). */
static int ints_of(PyObject *obj, int64_t *out, Py_ssize_t n) {
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        return -1;
    }
    const char *f = v.format;
    if (f != NULL && (*f == '<' || *f == '=' || *f == '@')) {
        f++;
    }
    int ok = v.ndim == 1 && v.len == n * v.itemsize && f != NULL && f[0] != '\0' && f[1] == '\0';
    if (ok) {
        switch (v.itemsize * 256 + f[0]) {
#define CONVERT(size, letter, type)                                                                      \
    case size * 256 + letter:                                                                            \
        for (Py_ssize_t i = 0; i < n; i++) out[i] = (int64_t)((const type *)v.buf)[i];                  \
        break;
            CONVERT(1, '?', uint8_t)
            CONVERT(1, 'B', uint8_t)
            CONVERT(1, 'b', int8_t)
            CONVERT(2, 'H', uint16_t)
            CONVERT(2, 'h', int16_t)
            CONVERT(4, 'I', uint32_t)
            CONVERT(4, 'i', int32_t)
            CONVERT(4, 'l', int32_t)
            CONVERT(8, 'l', int64_t)
            CONVERT(8, 'q', int64_t)
#undef CONVERT
        default:
            ok = 0;
        }
    }
    PyBuffer_Release(&v);
    return ok ? 0 : -1;
}

/* The n doubles of a float64 array into out: 0, or -1 (no exception set). */
static int doubles_of(PyObject *obj, double *out, Py_ssize_t n) {
    Py_buffer v;
    if (view_of(obj, &v, 8, "d") < 0) {
        return -1;
    }
    int ok = v.len == n * 8;
    if (ok && n) {
        memcpy(out, v.buf, (size_t)n * 8);
    }
    PyBuffer_Release(&v);
    return ok ? 0 : -1;
}

/* An attribute of a batch as ints or doubles (NULL attribute: -1 with the exception set; else as above). */
static int attr_ints(PyObject *b, const char *name, int64_t *out, Py_ssize_t n, int *failed) {
    PyObject *a = PyObject_GetAttrString(b, name);
    if (a == NULL) {
        *failed = 1;
        return -1;
    }
    int r = ints_of(a, out, n);
    Py_DECREF(a);
    return r;
}

static int attr_doubles(PyObject *b, const char *name, double *out, Py_ssize_t n, int *failed) {
    PyObject *a = PyObject_GetAttrString(b, name);
    if (a == NULL) {
        *failed = 1;
        return -1;
    }
    int r = doubles_of(a, out, n);
    Py_DECREF(a);
    return r;
}

static Py_ssize_t attr_size(PyObject *b, const char *name, int *failed) {
    PyObject *a = PyObject_GetAttrString(b, name);
    if (a == NULL) {
        *failed = 1;
        return -1;
    }
    Py_ssize_t n = PyObject_Size(a);
    Py_DECREF(a);
    if (n < 0) {
        PyErr_Clear();
    }
    return n;
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

PyDoc_STRVAR(request_sums_doc,
"request_sums(batches, width) -> list | None\n\n"
"columns.request_sums' groups of these TraceBatch objects (each with requests) for windows of width seconds:\n"
"the same tuples, in the same order (by window, then route), every sum added in the same order. None where\n"
"the numpy path must do it: windows and routes, or groups and query counts, spanning a range too wide to\n"
"count over (more than 4 per request, as numpy's own cut-off: np.unique there); an end that is not a finite\n"
"number of windows, or whose window starts past int64; a column not as a TraceBatch has it (or not the same\n"
"at each read).");

static const char *const TIMES[3][2] = {{"req_db_at", "req_db"}, {"req_cache_at", "req_cache"},
                                        {"req_external_at", "req_external"}};

/* A batch's float64 column, held as a view (released by the caller): 0, -1 with an exception set (no such
 * attribute), or -2 (not n float64s). */
static int attr_view(PyObject *b, const char *name, Py_buffer *view, Py_ssize_t n) {
    PyObject *a = PyObject_GetAttrString(b, name);
    if (a == NULL) {
        return -1;
    }
    int r = view_of(a, view, 8, "d");
    Py_DECREF(a);
    if (r < 0) {
        return -2;
    }
    if (view->len != n * 8) {
        PyBuffer_Release(view);
        return -2;
    }
    return 0;
}

static PyObject *request_sums(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "request_sums() takes a list of batches and a width");
        return NULL;
    }
    const long long width = PyLong_AsLongLong(args[1]);
    if (width <= 0) {
        if (PyErr_Occurred()) PyErr_Clear();
        Py_RETURN_NONE;
    }
    /* The batches' attributes are read by getattr, which may run Python code (a property) that changes the
     * caller's lists: the batches and each batch's routes are read from copies of them, which hold their items. */
    PyObject *batches = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX);
    if (batches == NULL) {
        return NULL;
    }
    const Py_ssize_t nb = PyList_GET_SIZE(batches);
    Arena arena = {NULL, 0, 0};
    PyObject *result = NULL, *codes = PyDict_New(), *routes = PyList_New(0), *hist = NULL;
    int failed = 0; /* an exception is set */
    int r = 0;
    if (codes == NULL || routes == NULL) goto error;
    Py_ssize_t *sizes = arena_alloc(&arena, ((size_t)nb + 1) * sizeof(Py_ssize_t), -1);
    if (sizes == NULL) goto nomemory;
    Py_ssize_t total = 0, most = 0;
    for (Py_ssize_t k = 0; k < nb; k++) {
        if ((sizes[k] = attr_size(PyList_GET_ITEM(batches, k), "req_end", &failed)) < 0) goto fallback;
        total += sizes[k];
        most = sizes[k] > most ? sizes[k] : most;
    }
    /* the batches' routes in one table, in order of first appearance; each batch's route codes into it */
    int64_t **local = arena_alloc(&arena, ((size_t)nb + 1) * sizeof(int64_t *), 0);
    Py_ssize_t *nlocal = arena_alloc(&arena, ((size_t)nb + 1) * sizeof(Py_ssize_t), 0);
    if (local == NULL || nlocal == NULL) goto nomemory;
    for (Py_ssize_t k = 0; k < nb; k++) {
        PyObject *attr = PyObject_GetAttrString(PyList_GET_ITEM(batches, k), "routes");
        if (attr == NULL) goto error;
        if (!PyList_Check(attr)) {
            Py_DECREF(attr);
            goto fallback;
        }
        PyObject *rs = PyList_GetSlice(attr, 0, PY_SSIZE_T_MAX); /* (a route's __hash__ or __eq__ runs below) */
        Py_DECREF(attr);
        if (rs == NULL) goto error;
        if ((local[k] = arena_alloc(&arena, ((size_t)PyList_GET_SIZE(rs) + 1) * 8, -1)) == NULL) {
            Py_DECREF(rs);
            goto nomemory;
        }
        nlocal[k] = PyList_GET_SIZE(rs);
        for (Py_ssize_t j = 0; j < nlocal[k]; j++) {
            PyObject *next = PyLong_FromSsize_t(PyList_GET_SIZE(routes));
            PyObject *code = next ? PyDict_SetDefault(codes, PyList_GET_ITEM(rs, j), next) : NULL;
            if (code != NULL && code == next && PyList_Append(routes, PyList_GET_ITEM(rs, j)) < 0) code = NULL;
            Py_XDECREF(next);
            if (code == NULL) {
                Py_DECREF(rs);
                goto error;
            }
            local[k][j] = PyLong_AsLongLong(code);
        }
        Py_DECREF(rs);
    }
    const int64_t nroutes = PyList_GET_SIZE(routes);
    const double limit = fmin(1e15, (double)(INT64_MAX / 4 / (nroutes + 1))); /* (numpy's int64 key would wrap) */

    /* (1) each request's key, window number * routes + route (window_numbers), and their range */
    int64_t *key = arena_alloc(&arena, ((size_t)total + 1) * 8, -1);
    int64_t *ints = arena_alloc(&arena, ((size_t)most + 1) * 8, -1);
    int64_t *at = arena_alloc(&arena, ((size_t)most + 1) * 8, -1);
    double *values = arena_alloc(&arena, ((size_t)most + 1) * 8, -1);
    if (!key || !ints || !at || !values) goto nomemory;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    uint64_t qmax = 0;
    int whole = 0; /* a negative duration: every request adds its capped times, zeros too */
    for (Py_ssize_t k = 0, o = 0; k < nb; o += sizes[k++]) {
        PyObject *b = PyList_GET_ITEM(batches, k);
        const Py_ssize_t n = sizes[k];
        Py_buffer ends, durs;
        if (attr_ints(b, "req_route", ints, n, &failed) < 0 || (r = attr_view(b, "req_end", &ends, n)) < 0) {
            goto fallback_or_error;
        }
        if ((r = attr_view(b, "req_dur", &durs, n)) < 0) {
            PyBuffer_Release(&ends);
            goto fallback_or_error;
        }
        const double *end = ends.buf, *dur = durs.buf;
        const int64_t *codes_k = local[k];
        for (Py_ssize_t i = 0; i < n; i++) {
            double q = floor(end[i] / (double)width);
            if (!(fabs(q) < limit) || (uint64_t)ints[i] >= (uint64_t)nlocal[k]) {
                r = -2;
                break;
            }
            int64_t kk = (int64_t)q * nroutes + codes_k[ints[i]];
            key[o + i] = kk;
            lo = kk < lo ? kk : lo;
            hi = kk > hi ? kk : hi;
            whole |= dur[i] < 0.0;
        }
        PyBuffer_Release(&ends);
        PyBuffer_Release(&durs);
        if (r < 0 || attr_ints(b, "req_queries", ints, n, &failed) < 0) goto fallback_or_error;
        for (Py_ssize_t i = 0; i < n; i++) qmax = (uint64_t)ints[i] > qmax ? (uint64_t)ints[i] : qmax;
    }
    /* _dense and _counts: counted over the range, as numpy does where it is at most 4 per request */
    const int64_t bound = 4 * (int64_t)total + 4096;
    if (total == 0 || (uint64_t)(hi - lo) >= (uint64_t)bound || qmax >= (uint64_t)bound) goto fallback;
    const int64_t span = hi - lo + 1, qspan = (int64_t)qmax + 1;
    int32_t *rank = arena_alloc(&arena, (size_t)span * 4, 0);
    if (rank == NULL) goto nomemory;
    for (Py_ssize_t i = 0; i < total; i++) rank[key[i] - lo] = 1;
    int64_t ngroups = 0;
    for (int64_t s = 0; s < span; s++) {
        rank[s] = rank[s] ? (int32_t)ngroups++ : -1;
    }
    if (ngroups * qspan > bound) goto fallback;
    int64_t *count = arena_alloc(&arena, (size_t)ngroups * 8, 0), *nfailed = arena_alloc(&arena, (size_t)ngroups * 8, 0);
    double *sums = arena_alloc(&arena, (size_t)ngroups * 4 * 8, 0); /* request, db, cache, external ms (0.0) */
    int64_t *pairs = arena_alloc(&arena, (size_t)(ngroups * qspan) * 8, 0);
    if (!count || !nfailed || !sums || !pairs) goto nomemory;

    /* (2) in request order: the counts, the durations' sums, the queries per request; then the db, cache and
     * external times capped at each request's duration (only the entries, unless a duration is negative:
     * then the zeros too, min(0.0, duration)) */
    for (Py_ssize_t k = 0, o = 0; k < nb; o += sizes[k++]) {
        PyObject *b = PyList_GET_ITEM(batches, k);
        const Py_ssize_t n = sizes[k];
        const int64_t *key_k = key + o;
        Py_buffer durs;
        if ((r = attr_view(b, "req_dur", &durs, n)) < 0) goto fallback_or_error;
        const double *dur = durs.buf;
        if (attr_ints(b, "req_queries", ints, n, &failed) < 0) {
            r = -2;
        }
        for (Py_ssize_t i = 0; i < n && r == 0; i++) { /* (the column read again: held to (1)'s range) */
            if ((uint64_t)ints[i] > qmax) {
                r = -2;
                break;
            }
            int32_t g = rank[key_k[i] - lo];
            count[g]++;
            sums[g * 4] += dur[i];
            pairs[g * qspan + ints[i]]++;
        }
        if (r == 0 && attr_ints(b, "req_failed", ints, n, &failed) < 0) {
            r = -2;
        }
        for (Py_ssize_t i = 0; i < n && r == 0; i++) {
            nfailed[rank[key_k[i] - lo]] += ints[i] != 0;
        }
        for (int t = 0; t < 3 && r == 0; t++) {
            Py_ssize_t m = attr_size(b, TIMES[t][1], &failed);
            if (m < 0 || m > n || attr_ints(b, TIMES[t][0], at, m, &failed) < 0
                || attr_doubles(b, TIMES[t][1], values, m, &failed) < 0) {
                r = -2;
                break;
            }
            for (Py_ssize_t j = 0; j < m; j++) {
                if ((uint64_t)at[j] >= (uint64_t)n || (j && at[j] <= at[j - 1])) r = -2;
            }
            if (r < 0) break;
            double *column = sums + 1 + t;
            if (!whole) {
                for (Py_ssize_t j = 0; j < m; j++) {
                    double d = dur[at[j]], x = values[j];
                    column[rank[key_k[at[j]] - lo] * 4] += d < x ? d : x; /* np.where(d < x, d, x) */
                }
            } else {
                for (Py_ssize_t i = 0, j = 0; i < n; i++) {
                    double d = dur[i], x = j < m && at[j] == i ? values[j++] : 0.0;
                    column[rank[key_k[i] - lo] * 4] += d < x ? d : x;
                }
            }
        }
        PyBuffer_Release(&durs);
        if (r < 0) goto fallback_or_error;
    }

    result = PyList_New(ngroups);
    if (result == NULL) goto error;
    for (int64_t s = 0; s < span; s++) {
        int64_t g = rank[s];
        if (g < 0) continue;
        int64_t k = lo + s, window = floor_div(k, nroutes), start;
        if (__builtin_mul_overflow(window, (int64_t)width, &start)) goto fallback; /* (an end past 2**63 s) */
        if ((hist = PyDict_New()) == NULL) goto error;
        for (int64_t q = 0; q < qspan; q++) {
            int64_t c = pairs[g * qspan + q];
            if (!c) continue;
            PyObject *kq = PyLong_FromLongLong(q), *vc = PyLong_FromLongLong(c);
            int e = kq && vc ? PyDict_SetItem(hist, kq, vc) : -1;
            Py_XDECREF(kq);
            Py_XDECREF(vc);
            if (e < 0) goto error;
        }
        PyObject *item = Py_BuildValue("(LOLLddddO)", (long long)start,
                                       PyList_GET_ITEM(routes, k - window * nroutes), (long long)count[g],
                                       (long long)nfailed[g], sums[g * 4], sums[g * 4 + 1], sums[g * 4 + 2],
                                       sums[g * 4 + 3], hist);
        Py_CLEAR(hist);
        if (item == NULL) goto error;
        PyList_SET_ITEM(result, g, item);
    }
    goto done;
fallback_or_error:
    if (r == -1) goto error;
fallback:
    if (failed) goto error;
    Py_CLEAR(result);
    result = Py_NewRef(Py_None);
    goto done;
nomemory:
    PyErr_NoMemory();
error:
    Py_CLEAR(result);
done:
    Py_XDECREF(hist);
    Py_XDECREF(codes);
    Py_XDECREF(routes);
    Py_DECREF(batches);
    arena_free(&arena);
    return result;
}

static PyMethodDef module_methods[] = {
    {"summarize", (PyCFunction)(void (*)(void))summarize, METH_FASTCALL, summarize_doc},
    {"request_sums", (PyCFunction)(void (*)(void))request_sums, METH_FASTCALL, request_sums_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "aggregator.insights._summary",
                                    "A chunk's trace summary from its columns in C.", -1, module_methods};

PyMODINIT_FUNC PyInit__summary(void) {
    PyObject *numpy = PyImport_ImportModule("numpy");
    if (numpy == NULL) {
        return NULL;
    }
    frombuffer = PyObject_GetAttrString(numpy, "frombuffer");
    PyObject *dtype = PyObject_GetAttrString(numpy, "dtype");
    Py_DECREF(numpy);
    if (frombuffer == NULL || dtype == NULL) {
        Py_XDECREF(dtype);
        return NULL;
    }
    static const char *names[] = {"u1", "u2", "u4", "i4", "i8", "f8", "?"};
    PyObject **dtypes[] = {&dt_u1, &dt_u2, &dt_u4, &dt_i4, &dt_i8, &dt_f8, &dt_b1};
    for (int k = 0; k < 7; k++) {
        if ((*dtypes[k] = PyObject_CallFunction(dtype, "s", names[k])) == NULL) {
            Py_DECREF(dtype);
            return NULL;
        }
    }
    Py_DECREF(dtype);
    if ((empty_str = PyUnicode_FromStringAndSize("", 0)) == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
