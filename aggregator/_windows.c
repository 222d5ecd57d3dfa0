/* aggregator._windows: the window accumulator's per-event work in C (optional: aggregator/windows.py keeps
 * its numpy path, which the tests hold this to, and which takes over wherever this is absent or declines).
 *
 * Two parts, each one pass over a block's events instead of a few dozen numpy calls:
 *
 * - Router: per block of scanned columns, each event's lookup value (kind code, flag bits, series id: what
 *   WindowAccumulator._lookup maps the event's lookup key to), from a table of the combinations of codes
 *   already seen (global string codes, the flag codes), which mirrors the Python table: only keys that
 *   _lookup holds are entered, with its value, so a hit here is a hit there with the same value. probe()
 *   looks every event up and hands the misses (their lookup keys, built here, once per combination) to
 *   Python, which resolves them as it always did; emit() writes the kinds' pending columns (lookup values,
 *   times, durations; the task queue waits) for the fold.
 * - fold(): one family's pending columns -> its (series, window) segments in key order: counts, sums (added
 *   in the events' order, as numpy's bincount adds them), error and counter counts, min / max, the sketch's
 *   bucket key range and counts. The bucket keys are ceil(log(v) * multiplier) from numpy's log (passed in:
 *   its SIMD log may differ from libm's in the last bit), so the buckets are the numpy path's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NKINDS 5 /* request, db, cache, external, task (KIND_CODES 0-4); metric (5) stays in Python */
#define METRIC 5
#define NFIELDS 14 /* the kinds' key fields (windows._KEY_FIELDS without the kind), kind after kind */
#define CODE_SHIFT 40
#define BITS_SHIFT 36
#define INDEX_MASK ((INT64_C(1) << BITS_SHIFT) - 1)
#define MEMO_KIND_MAX (1 << 14) /* a kind's combinations of block codes a probe's memo numbers (else: no memo) */
#define STATUS_MAX 1000         /* statuses a probe's memo takes (-1 .. this; any other: no memo) */

static const int NKEYS[NKINDS] = {4, 4, 2, 2, 2};
static const int FIELD0[NKINDS] = {0, 4, 8, 10, 12};
/* Each kind's second flag field (after the outcome): 0 none, 1 the status, 2 the cache hit, 3 the task state. */
static const int FLAG2[NKINDS] = {1, 0, 2, 1, 3};

/* ---- buffers ------------------------------------------------------------------------------------------ */

/* A C-contiguous 1-d buffer of items of `size` bytes whose struct format is one of `codes` (native order). */
static int view_of(PyObject *obj, Py_buffer *view, Py_ssize_t size, const char *codes, int writable,
                   const char *what) {
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format;
    if (f != NULL && (f[0] == '<' || f[0] == '=' || f[0] == '@'))
        f++;
    if (view->itemsize != size || view->ndim > 1 || f == NULL || f[0] == 0 || f[1] != 0
        || strchr(codes, f[0]) == NULL) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous array of %zd-byte items (%s)", what, size,
                     codes);
        return -1;
    }
    return 0;
}

/* ---- the combinations table --------------------------------------------------------------------------- */

/* Eight int32 in four words (built in registers: int32 stores read back as words would stall the loads):
 * kind + 1 (0: an empty slot), the key fields' global codes (-1 absent, -2 a field the kind has not),
 * the outcome code, the second flag's code, 0 (in the probe's missed keys: the key's number in its kind). */
typedef struct {
    uint64_t w[4];
} Key;

static inline int32_t kget(const Key *key, int i) { return (int32_t)(uint32_t)(key->w[i >> 1] >> ((i & 1) * 32)); }

static inline uint64_t pair(int32_t lo, int32_t hi) { return (uint64_t)(uint32_t)lo | (uint64_t)(uint32_t)hi << 32; }

static inline void kset(Key *key, int i, int32_t v) {
    key->w[i >> 1] = i & 1 ? pair(kget(key, i - 1), v) : pair(v, kget(key, i + 1));
}

static inline int kempty(const Key *key) { return (uint32_t)key->w[0] == 0; }

typedef struct {
    Key key;
    int64_t value;
} Entry;

typedef struct {
    Entry *slots;
    size_t cap; /* a power of two */
    size_t used;
} Table;

static inline uint64_t key_hash(const Key *key) {
    const uint64_t *w = key->w;
    uint64_t h = (w[0] ^ (w[1] * 0x9E3779B97F4A7C15ULL) ^ (w[2] * 0xC2B2AE3D27D4EB4FULL) ^ w[3])
                 * 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 31);
}

static inline int key_equal(const Key *a, const Key *b) {
    const uint64_t *x = a->w, *y = b->w;
    return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

/* The slot of `key`: its entry, or the empty slot where it would go. */
static inline Entry *table_slot(const Table *t, const Key *key) {
    size_t mask = t->cap - 1, i = (size_t)key_hash(key) & mask;
    for (;;) {
        Entry *e = &t->slots[i];
        if (kempty(&e->key) || key_equal(&e->key, key))
            return e;
        i = (i + 1) & mask;
    }
}

static int table_init(Table *t, size_t cap) {
    t->slots = calloc(cap, sizeof(Entry));
    if (t->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->cap = cap;
    t->used = 0;
    return 0;
}

static void table_clear(Table *t) {
    if (t->used) {
        memset(t->slots, 0, t->cap * sizeof(Entry));
        t->used = 0;
    }
}

/* Enter key -> value (a new key); grows at half full. */
static int table_put(Table *t, const Key *key, int64_t value) {
    if (2 * (t->used + 1) > t->cap) {
        Table bigger;
        if (table_init(&bigger, 2 * t->cap) < 0)
            return -1;
        for (size_t i = 0; i < t->cap; i++)
            if (!kempty(&t->slots[i].key))
                *table_slot(&bigger, &t->slots[i].key) = t->slots[i];
        bigger.used = t->used;
        free(t->slots);
        *t = bigger;
    }
    Entry *e = table_slot(t, key);
    if (kempty(&e->key)) {
        e->key = *key;
        t->used++;
    }
    e->value = value;
    return 0;
}

/* ---- Router ------------------------------------------------------------------------------------------- */

struct MetricEntry {
    Py_hash_t hash; /* of the name and the tags' items (see metric_hash) */
    PyObject *name, *items; /* the key's name and sorted items (NULL: an empty slot) */
    int64_t sid;
};

typedef struct {
    PyObject_HEAD
    PyObject *kinds;           /* the kinds' names, by code */
    PyObject *flag_values[4];  /* per flag (0 outcome, 2 cache hit, 3 task state): the value of code c at c */
    PyObject *codes[NFIELDS];  /* per key field: string -> global code (a dict) */
    PyObject *strings[NFIELDS]; /* per key field: global code -> string (a list) */
    Table table;               /* combinations -> lookup values (the keys _lookup holds) */
    Table missed;              /* the probe's missed combinations -> their number */
    Key *missed_keys;          /* by number */
    Py_ssize_t missed_cap, nmissed;
    int64_t *scratch;          /* per event of the probed block: its lookup value, or -1 - its missed number */
    int8_t *kinds_probed;      /* per event of the probed block: its kind (emit() checks it is given the same) */
    Py_ssize_t scratch_cap;
    Py_ssize_t *missed_events; /* the probed block's events that missed, in order */
    int64_t *memo;             /* the probe's memo (see probe) */
    Py_ssize_t memo_cap;
    struct MetricEntry *metrics; /* metric_series' cache (see there) */
    Py_ssize_t metrics_cap, metrics_used;
    Py_ssize_t lo, hi;         /* the probed block */
    Py_ssize_t counts[NKINDS + 2]; /* its events per kind (metric at 5), its task events with a queue wait */
    Py_ssize_t misses[NKINDS]; /* per kind: events that missed */
    int probed;
} Router;

static void router_dealloc(Router *self) {
    Py_XDECREF(self->kinds);
    for (int i = 0; i < 4; i++)
        Py_XDECREF(self->flag_values[i]);
    for (int f = 0; f < NFIELDS; f++) {
        Py_XDECREF(self->codes[f]);
        Py_XDECREF(self->strings[f]);
    }
    free(self->table.slots);
    free(self->missed.slots);
    free(self->missed_keys);
    free(self->scratch);
    free(self->kinds_probed);
    free(self->missed_events);
    free(self->memo);
    for (Py_ssize_t i = 0; i < self->metrics_cap; i++) {
        Py_XDECREF(self->metrics[i].name);
        Py_XDECREF(self->metrics[i].items);
    }
    free(self->metrics);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Whether __init__ completed: Router.__new__(Router) alone, or an __init__ that failed half way, leaves NULL
 * dicts and tables that probe() and emit() would read (a segfault): they raise instead. */
static int router_ready(Router *self) {
    if (self->table.slots == NULL || self->missed.slots == NULL || self->codes[NFIELDS - 1] == NULL
        || self->strings[NFIELDS - 1] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Router not initialised");
        return 0;
    }
    return 1;
}

static int router_init(Router *self, PyObject *args, PyObject *kw) {
    PyObject *kinds, *outcomes, *hits, *states;
    static char *names[] = {"kinds", "outcomes", "cache_hits", "task_states", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!O!", names, &PyTuple_Type, &kinds, &PyTuple_Type, &outcomes,
                                     &PyTuple_Type, &hits, &PyTuple_Type, &states))
        return -1;
    if (PyTuple_GET_SIZE(kinds) < NKINDS) {
        PyErr_SetString(PyExc_ValueError, "Router: five kinds at least");
        return -1;
    }
    self->probed = 0;
    free(self->table.slots);
    free(self->missed.slots);
    self->table.slots = self->missed.slots = NULL; /* not ready (router_ready) until the end */
    Py_XSETREF(self->kinds, Py_NewRef(kinds));
    Py_XSETREF(self->flag_values[0], Py_NewRef(outcomes));
    Py_XSETREF(self->flag_values[2], Py_NewRef(hits));
    Py_XSETREF(self->flag_values[3], Py_NewRef(states));
    for (int f = 0; f < NFIELDS; f++) {
        Py_XSETREF(self->codes[f], PyDict_New());
        Py_XSETREF(self->strings[f], PyList_New(0));
        if (self->codes[f] == NULL || self->strings[f] == NULL)
            return -1;
    }
    if (table_init(&self->table, 1024) < 0 || table_init(&self->missed, 256) < 0)
        return -1;
    return 0;
}

/* Global codes of a block's string table (a list of str) for field f, into remap: the code of table entry i
 * at i + 1, -1 (absent) at 0. */
static int remap_table(Router *self, int f, PyObject *table, int32_t **remap, Py_ssize_t *size) {
    if (!PyList_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "Router.probe: a string table is not a list");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(table);
    int32_t *out = malloc((size_t)(n + 1) * sizeof(int32_t));
    if (out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *codes = self->codes[f], *strings = self->strings[f];
    *out++ = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyList_GET_ITEM(table, i);
        PyObject *code = PyDict_GetItemWithError(codes, s);
        if (code == NULL) {
            if (PyErr_Occurred())
                goto fail;
            Py_ssize_t next = PyList_GET_SIZE(strings);
            if (next >= INT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "Router: too many distinct strings");
                goto fail;
            }
            code = PyLong_FromSsize_t(next);
            if (code == NULL)
                goto fail;
            int bad = PyDict_SetItem(codes, s, code) < 0 || PyList_Append(strings, s) < 0;
            Py_DECREF(code);
            if (bad)
                goto fail;
            out[i] = (int32_t)next;
        } else {
            out[i] = (int32_t)PyLong_AsLong(code);
        }
    }
    *remap = out - 1;
    *size = n;
    return 0;
fail:
    free(out - 1);
    return -1;
}

/* The lookup key _LOOKUP_KEYS[kind] reads from an event of combination `key`. */
static PyObject *lookup_key(Router *self, const Key *key) {
    int kind = kget(key, 0) - 1, nk = NKEYS[kind], f2 = FLAG2[kind];
    PyObject *out = PyTuple_New(1 + nk + 1 + (f2 != 0));
    if (out == NULL)
        return NULL;
    PyTuple_SET_ITEM(out, 0, Py_NewRef(PyTuple_GET_ITEM(self->kinds, kind)));
    for (int j = 0; j < nk; j++) {
        int32_t g = kget(key, 1 + j);
        PyObject *s = g < 0 ? Py_None : PyList_GET_ITEM(self->strings[FIELD0[kind] + j], g);
        PyTuple_SET_ITEM(out, 1 + j, Py_NewRef(s));
    }
    for (int j = 0; j < 1 + (f2 != 0); j++) {
        int which = j == 0 ? 0 : f2;
        int32_t c = kget(key, 5 + j);
        PyObject *v;
        if (which == 1) {
            v = c < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(c);
            if (v == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        } else {
            PyObject *values = self->flag_values[which];
            Py_ssize_t nv = PyTuple_GET_SIZE(values); /* code -1 (absent) reads the last entry */
            if (c < -1 || c >= nv - 1) {
                Py_DECREF(out);
                PyErr_Format(PyExc_ValueError, "Router: flag code %d out of range", (int)c);
                return NULL;
            }
            v = Py_NewRef(PyTuple_GET_ITEM(values, c < 0 ? nv - 1 : c));
        }
        PyTuple_SET_ITEM(out, 1 + nk + j, v);
    }
    return out;
}

PyDoc_STRVAR(probe_doc,
"probe(kind, lo, hi, fields, outcome, status, cache_hit, task_state, queue_wait) -> (counts, misses)\n\n"
"Look up the events lo:hi of a block (its columns: kind int8, outcome / cache_hit / task_state int8, status\n"
"int16, queue_wait float64; fields: per key field, in windows._NATIVE_FIELDS order, (codes int32, table)).\n"
"counts: the block's events per kind code (0-5), then its task events with a queue wait (not NaN).\n"
"misses: per kind 0-4, None, or (keys, inv): the lookup keys of the combinations not in the table, in the\n"
"order their first events come, and per missed event (in order) its key's number, as int32 bytes. Then\n"
"emit() (before any other probe).");

static PyObject *router_probe(Router *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "probe() takes 9 arguments");
        return NULL;
    }
    if (!router_ready(self))
        return NULL;
    /* the previous probe's block is gone from here on (scratch, missed keys): a probe that fails half way
     * leaves nothing for emit() */
    self->probed = 0;
    Py_buffer kind_v, flag_v[4], qw_v, code_v[NFIELDS];
    int have_flags = 0, have_codes = 0, have_kind = 0, have_qw = 0;
    int32_t *remap[NFIELDS] = {0}, *local = NULL;
    Py_ssize_t remap_n[NFIELDS] = {0}, nmissed_events = 0;
    PyObject *result = NULL, *misses = NULL;
    Py_ssize_t lo = PyLong_AsSsize_t(args[1]), hi = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *fields = args[3];
    if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) != NFIELDS) {
        PyErr_SetString(PyExc_TypeError, "probe: fields is a tuple of 14 (codes, table) pairs");
        return NULL;
    }
    if (view_of(args[0], &kind_v, 1, "bB", 0, "kind") < 0)
        return NULL;
    have_kind = 1;
    static const char *flag_names[4] = {"outcome", "status", "cache_hit", "task_state"};
    for (; have_flags < 4; have_flags++)
        if (view_of(args[4 + have_flags], &flag_v[have_flags], have_flags == 1 ? 2 : 1,
                    have_flags == 1 ? "hH" : "bB", 0, flag_names[have_flags]) < 0)
            goto done;
    if (view_of(args[8], &qw_v, 8, "d", 0, "queue_wait") < 0)
        goto done;
    have_qw = 1;
    Py_ssize_t n = kind_v.len;
    if (lo < 0 || hi < lo || hi > n || qw_v.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "probe: bad range or column lengths");
        goto done;
    }
    for (int i = 0; i < 4; i++)
        if (flag_v[i].len / flag_v[i].itemsize != n) {
            PyErr_SetString(PyExc_ValueError, "probe: column lengths differ");
            goto done;
        }
    const int8_t *kind = kind_v.buf;
    const int8_t *outcome = flag_v[0].buf, *hit = flag_v[2].buf, *state = flag_v[3].buf;
    const int16_t *status = flag_v[1].buf;
    Py_ssize_t counts[NKINDS + 2] = {0};
    /* The statuses numbered densely (for the memo, below), the flag codes checked (any other: no memo, and
     * the key built for it says what is wrong). */
    int16_t dense[STATUS_MAX + 2];
    memset(dense, 0xff, sizeof dense);
    int nstatus = 0, memo_ok = 1;
    for (Py_ssize_t i = lo; i < hi; i++) {
        int8_t c = kind[i];
        if (c < 0 || c > METRIC) {
            PyErr_Format(PyExc_ValueError, "probe: kind code %d", (int)c);
            goto done;
        }
        counts[c]++;
        int st = status[i];
        if (st < -1 || st > STATUS_MAX || outcome[i] < -1 || outcome[i] > 1 || hit[i] < -1 || hit[i] > 1
            || state[i] < -1 || state[i] > 2)
            memo_ok = 0;
        else if (dense[st + 1] < 0)
            dense[st + 1] = (int16_t)nstatus++;
    }
    for (; have_codes < NFIELDS; have_codes++) {
        PyObject *pair = PyTuple_GET_ITEM(fields, have_codes);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "probe: a field is a (codes, table) pair");
            goto done;
        }
        if (view_of(PyTuple_GET_ITEM(pair, 0), &code_v[have_codes], 4, "iIl", 0, "codes") < 0)
            goto done;
        if (code_v[have_codes].len / 4 != n) {
            PyBuffer_Release(&code_v[have_codes]);
            PyErr_SetString(PyExc_ValueError, "probe: column lengths differ");
            goto done;
        }
    }
    for (int k = 0; k < NKINDS; k++) {
        if (!counts[k])
            continue;
        for (int j = 0; j < NKEYS[k]; j++) {
            int f = FIELD0[k] + j;
            if (remap_table(self, f, PyTuple_GET_ITEM(PyTuple_GET_ITEM(fields, f), 1), &remap[f], &remap_n[f]) < 0)
                goto done;
        }
    }
    if (self->scratch_cap < hi - lo) {
        int64_t *s = realloc(self->scratch, (size_t)(hi - lo) * sizeof(int64_t));
        Py_ssize_t *e = s == NULL ? NULL : realloc(self->missed_events, (size_t)(hi - lo) * sizeof(Py_ssize_t));
        int8_t *kp = e == NULL ? NULL : realloc(self->kinds_probed, (size_t)(hi - lo));
        if (s != NULL)
            self->scratch = s;
        if (e != NULL)
            self->missed_events = e;
        if (kp == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        self->kinds_probed = kp;
        self->scratch_cap = hi - lo;
    }
    if (hi > lo)
        memcpy(self->kinds_probed, kind + lo, (size_t)(hi - lo));
    table_clear(&self->missed);
    self->nmissed = 0;
    Py_ssize_t missed_per_kind[NKINDS] = {0};
    const double *qw = qw_v.buf;
    int64_t *scratch = self->scratch;
    /* Per kind, four key columns and their remaps, a kind with fewer reading a constant column of code 0
     * (stride 0) whose remap gives -2: the same work for every kind, without branches on the kind (blocks
     * interleave the kinds: a branch on them would be mispredicted at about every other event). */
    static const int32_t zero_code = 0, missing[2] = {-2, -2};
    const int32_t *col[NKINDS][4], *rm[NKINDS][4];
    Py_ssize_t stride[NKINDS][4], limit[NKINDS][4];
    for (int k = 0; k < NKINDS; k++)
        for (int j = 0; j < 4; j++) {
            int f = FIELD0[k] + j;
            int real = j < NKEYS[k] && remap[f] != NULL;
            col[k][j] = real ? (const int32_t *)code_v[f].buf : &zero_code;
            stride[k][j] = real;
            rm[k][j] = real ? remap[f] + 1 : missing + 1;
            limit[k][j] = real ? remap_n[f] : 1;
        }
    /* The memo: per kind, its combinations numbered by the block's own codes in mixed radix (the key fields'
     * codes + 1, the outcome's + 1, the second flag's: a status's dense number, a cache hit's or task state's
     * code + 1), each entry 0 (not seen yet), its lookup value + 1, or -1 - its missed number. An event finds
     * its combination there with a few multiplications, the table (hashing the global codes) once per
     * combination and block. */
    int64_t mul[NKINDS][4], mul_outcome[NKINDS], memo_at[NKINDS];
    Py_ssize_t memo_size = 0;
    for (int k = 0; k < NKINDS; k++) {
        int64_t m = FLAG2[k] == 1 ? nstatus : FLAG2[k] == 2 ? 3 : FLAG2[k] == 3 ? 4 : 1;
        mul_outcome[k] = m;
        m *= 3;
        for (int j = 0; j < 4; j++) {
            mul[k][j] = stride[k][j] ? m : 0;
            if (stride[k][j])
                m *= limit[k][j] + 1;
            if (m > MEMO_KIND_MAX)
                break;
        }
        memo_at[k] = -1;
        if (memo_ok && counts[k] && m <= MEMO_KIND_MAX) {
            memo_at[k] = memo_size;
            memo_size += m;
        }
    }
    if (self->memo_cap < memo_size) {
        int64_t *s = realloc(self->memo, (size_t)memo_size * sizeof(int64_t));
        if (s == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        self->memo = s;
        self->memo_cap = memo_size;
    }
    if (memo_size)
        memset(self->memo, 0, (size_t)memo_size * sizeof(int64_t));
    for (Py_ssize_t i = lo; i < hi; i++) {
        int c = kind[i];
        if (c == METRIC)
            continue;
        if (c == 4 && !isnan(qw[i]))
            counts[NKINDS + 1]++;
        int32_t code[4];
        for (int j = 0; j < 4; j++) {
            code[j] = col[c][j][i * stride[c][j]];
            if (code[j] < -1 || code[j] >= limit[c][j]) {
                PyErr_Format(PyExc_ValueError, "probe: string code %d out of its table", (int)code[j]);
                goto done;
            }
        }
        int64_t *memo = NULL;
        if (memo_at[c] >= 0) {
            int32_t dense2[4] = {0, dense[status[i] + 1], hit[i] + 1, state[i] + 1};
            memo = self->memo + memo_at[c] + (code[0] + 1) * mul[c][0] + (code[1] + 1) * mul[c][1]
                   + (code[2] + 1) * mul[c][2] + (code[3] + 1) * mul[c][3] + (outcome[i] + 1) * mul_outcome[c]
                   + dense2[FLAG2[c]];
            int64_t known = *memo;
            if (known > 0) {
                scratch[i - lo] = known - 1;
                continue;
            }
            if (known < 0) {
                scratch[i - lo] = known;
                missed_per_kind[c]++;
                self->missed_events[nmissed_events++] = i;
                continue;
            }
        }
        int32_t flags2[4] = {0, status[i], hit[i], state[i]};
        Key key = {{pair(c + 1, rm[c][0][code[0]]), pair(rm[c][1][code[1]], rm[c][2][code[2]]),
                    pair(rm[c][3][code[3]], outcome[i]), pair(flags2[FLAG2[c]], 0)}};
        Entry *e = table_slot(&self->table, &key);
        if (!kempty(&e->key)) {
            scratch[i - lo] = e->value;
            if (memo != NULL)
                *memo = e->value + 1;
            continue;
        }
        missed_per_kind[c]++;
        self->missed_events[nmissed_events++] = i;
        Entry *m = table_slot(&self->missed, &key);
        if (kempty(&m->key)) {
            if (self->nmissed == self->missed_cap) {
                Py_ssize_t cap = self->missed_cap ? 2 * self->missed_cap : 256;
                Key *keys = realloc(self->missed_keys, (size_t)cap * sizeof(Key));
                if (keys == NULL) {
                    PyErr_NoMemory();
                    goto done;
                }
                self->missed_keys = keys;
                self->missed_cap = cap;
            }
            self->missed_keys[self->nmissed] = key;
            if (table_put(&self->missed, &key, self->nmissed) < 0)
                goto done;
            m = table_slot(&self->missed, &key);
            self->nmissed++;
        }
        scratch[i - lo] = -1 - m->value;
        if (memo != NULL)
            *memo = -1 - m->value;
    }
    /* The misses per kind: their keys, numbered per kind in the order they first come (the order of their
     * numbers here: the block's first-come order), and each missed event's number, in order. */
    misses = PyTuple_New(NKINDS);
    local = malloc((size_t)(self->nmissed + 1) * sizeof(int32_t));
    if (misses == NULL || local == NULL) {
        if (local == NULL)
            PyErr_NoMemory();
        goto done;
    }
    PyObject *keys[NKINDS] = {0}, *inv[NKINDS] = {0};
    int32_t *out[NKINDS] = {0};
    for (int k = 0; k < NKINDS; k++) {
        if (missed_per_kind[k]) {
            keys[k] = PyList_New(0);
            inv[k] = PyBytes_FromStringAndSize(NULL, missed_per_kind[k] * 4);
            if (keys[k] == NULL || inv[k] == NULL)
                goto misses_fail;
            out[k] = (int32_t *)PyBytes_AS_STRING(inv[k]);
        }
    }
    for (Py_ssize_t m = 0; m < self->nmissed; m++) {
        Key *key = &self->missed_keys[m];
        int k = kget(key, 0) - 1;
        local[m] = (int32_t)PyList_GET_SIZE(keys[k]);
        kset(key, 7, local[m]); /* emit() enters the values by these numbers */
        PyObject *lk = lookup_key(self, key);
        if (lk == NULL || PyList_Append(keys[k], lk) < 0) {
            Py_XDECREF(lk);
            goto misses_fail;
        }
        Py_DECREF(lk);
    }
    Py_ssize_t at[NKINDS] = {0};
    for (Py_ssize_t j = 0; j < nmissed_events; j++) {
        Py_ssize_t i = self->missed_events[j];
        int k = kind[i];
        out[k][at[k]++] = local[-1 - scratch[i - lo]];
    }
    for (int k = 0; k < NKINDS; k++) {
        PyObject *pair = keys[k] == NULL ? Py_NewRef(Py_None) : PyTuple_Pack(2, keys[k], inv[k]);
        if (pair == NULL)
            goto misses_fail;
        PyTuple_SET_ITEM(misses, k, pair);
        Py_CLEAR(keys[k]);
        Py_CLEAR(inv[k]);
    }
    if (0) {
    misses_fail:
        for (int k = 0; k < NKINDS; k++) {
            Py_XDECREF(keys[k]);
            Py_XDECREF(inv[k]);
        }
        goto done;
    }
    PyObject *count_tuple = PyTuple_New(NKINDS + 2);
    if (count_tuple == NULL)
        goto done;
    for (int k = 0; k < NKINDS + 2; k++) {
        PyObject *v = PyLong_FromSsize_t(counts[k]);
        if (v == NULL) {
            Py_DECREF(count_tuple);
            goto done;
        }
        PyTuple_SET_ITEM(count_tuple, k, v);
    }
    result = PyTuple_Pack(2, count_tuple, misses);
    Py_DECREF(count_tuple);
    if (result != NULL) {
        memcpy(self->counts, counts, sizeof counts);
        memcpy(self->misses, missed_per_kind, sizeof missed_per_kind);
        self->lo = lo;
        self->hi = hi;
        self->probed = 1;
    }
done:
    Py_XDECREF(misses);
    free(local);
    for (int f = 0; f < NFIELDS; f++)
        free(remap[f]);
    for (int i = 0; i < have_codes; i++)
        PyBuffer_Release(&code_v[i]);
    for (int i = 0; i < have_flags; i++)
        PyBuffer_Release(&flag_v[i]);
    if (have_qw)
        PyBuffer_Release(&qw_v);
    if (have_kind)
        PyBuffer_Release(&kind_v);
    return result;
}

PyDoc_STRVAR(emit_doc,
"emit(kind, ts, duration, queue_wait, resolved, out) -> None\n\n"
"After probe() of the same block: resolved, per kind 0-4, None (no misses) or (values, cache): values (int64)\n"
"the lookup value of each missed event in order, cache (int64) per missed key (probe's numbering) the value\n"
"to enter in the table, or -1 (not in _lookup: not entered). out: per kind 0-4 then the queue waits, None\n"
"(no events) or (ids int64, ts float64, values float64) of the counts probe gave, written here: each event's\n"
"lookup value, time and duration (queue waits: the task's lookup value, time and wait).");

static PyObject *router_emit(Router *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "emit() takes 6 arguments");
        return NULL;
    }
    if (!self->probed) {
        PyErr_SetString(PyExc_RuntimeError, "emit() without probe()");
        return NULL;
    }
    self->probed = 0;
    PyObject *resolved = args[4], *out = args[5];
    if (!PyTuple_Check(resolved) || PyTuple_GET_SIZE(resolved) != NKINDS || !PyTuple_Check(out)
        || PyTuple_GET_SIZE(out) != NKINDS + 1) {
        PyErr_SetString(PyExc_TypeError, "emit: resolved is a 5-tuple, out a 6-tuple");
        return NULL;
    }
    Py_buffer in_v[4], res_v[NKINDS][2], out_v[NKINDS + 1][3];
    int n_in = 0, n_res[NKINDS] = {0}, n_out[NKINDS + 1] = {0};
    PyObject *result = NULL;
    static const char *in_names[4] = {"kind", "ts", "duration", "queue_wait"};
    for (; n_in < 4; n_in++)
        if (view_of(args[n_in], &in_v[n_in], n_in ? 8 : 1, n_in ? "d" : "bB", 0, in_names[n_in]) < 0)
            goto done;
    Py_ssize_t lo = self->lo, hi = self->hi, n = in_v[0].len;
    if (hi > n || in_v[1].len / 8 != n || in_v[2].len / 8 != n || in_v[3].len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "emit: not the probed block's columns");
        goto done;
    }
    /* The counts, misses and scratch are the probed kinds': other kinds (a caller's mistake) would write the
     * outputs and read the values past their ends, or index the per-kind arrays with a code past 5. The
     * queue waits are checked as they come (more of them than probed: past their output). */
    if (hi > lo && memcmp((const int8_t *)in_v[0].buf + lo, self->kinds_probed, (size_t)(hi - lo)) != 0)
        goto not_probed;
    const int64_t *values[NKINDS] = {0}, *cache[NKINDS] = {0};
    for (int k = 0; k < NKINDS; k++) {
        PyObject *r = PyTuple_GET_ITEM(resolved, k);
        if (r == Py_None) {
            if (self->misses[k]) {
                PyErr_SetString(PyExc_ValueError, "emit: a kind's misses not resolved");
                goto done;
            }
            continue;
        }
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
            PyErr_SetString(PyExc_TypeError, "emit: a resolved kind is (values, cache)");
            goto done;
        }
        for (; n_res[k] < 2; n_res[k]++)
            if (view_of(PyTuple_GET_ITEM(r, n_res[k]), &res_v[k][n_res[k]], 8, "qlQL", 0, "resolved") < 0)
                goto done;
        if (res_v[k][0].len / 8 != self->misses[k]) {
            PyErr_SetString(PyExc_ValueError, "emit: values are not one per missed event");
            goto done;
        }
        values[k] = res_v[k][0].buf;
        cache[k] = res_v[k][1].buf;
        Py_ssize_t nkeys = res_v[k][1].len / 8;
        /* enter the keys _lookup now holds (the probe's keys of this kind carry their number in their last int32) */
        for (Py_ssize_t m = 0; m < self->nmissed; m++) {
            Key key = self->missed_keys[m];
            if (kget(&key, 0) != k + 1)
                continue;
            int32_t local = kget(&key, 7);
            if (local < 0 || local >= nkeys) {
                PyErr_SetString(PyExc_ValueError, "emit: cache is not one per missed key");
                goto done;
            }
            int64_t v = cache[k][local];
            if (v < 0)
                continue;
            kset(&key, 7, 0);
            if (table_put(&self->table, &key, v) < 0)
                goto done;
        }
    }
    double *o_ts[NKINDS + 1] = {0}, *o_val[NKINDS + 1] = {0};
    int64_t *o_ids[NKINDS + 1] = {0};
    for (int k = 0; k <= NKINDS; k++) {
        PyObject *o = PyTuple_GET_ITEM(out, k);
        Py_ssize_t want = k < NKINDS ? self->counts[k] : self->counts[NKINDS + 1];
        if (o == Py_None) {
            if (want) {
                PyErr_SetString(PyExc_ValueError, "emit: no output for a kind's events");
                goto done;
            }
            continue;
        }
        if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != 3) {
            PyErr_SetString(PyExc_TypeError, "emit: an output is (ids, ts, values)");
            goto done;
        }
        for (; n_out[k] < 3; n_out[k]++)
            if (view_of(PyTuple_GET_ITEM(o, n_out[k]), &out_v[k][n_out[k]], 8, n_out[k] ? "d" : "qlQL", 1,
                        "out") < 0)
                goto done;
        if (out_v[k][0].len / 8 != want || out_v[k][1].len / 8 != want || out_v[k][2].len / 8 != want) {
            PyErr_SetString(PyExc_ValueError, "emit: output sizes are not the probe's counts");
            goto done;
        }
        o_ids[k] = out_v[k][0].buf;
        o_ts[k] = out_v[k][1].buf;
        o_val[k] = out_v[k][2].buf;
    }
    const int8_t *kind = in_v[0].buf;
    const double *ts = in_v[1].buf, *dur = in_v[2].buf, *qw = in_v[3].buf;
    const int64_t *scratch = self->scratch;
    Py_ssize_t at[NKINDS + 1] = {0}, used[NKINDS] = {0}, room = self->counts[NKINDS + 1];
    for (Py_ssize_t i = lo; i < hi; i++) {
        int c = kind[i];
        if (c == METRIC)
            continue;
        int64_t v = scratch[i - lo];
        if (v < 0)
            v = values[c][used[c]++];
        Py_ssize_t a = at[c]++;
        o_ids[c][a] = v;
        o_ts[c][a] = ts[i];
        o_val[c][a] = dur[i];
        if (c == 4 && !isnan(qw[i])) {
            if (at[NKINDS] == room)
                goto not_probed;
            Py_ssize_t b = at[NKINDS]++;
            o_ids[NKINDS][b] = v;
            o_ts[NKINDS][b] = ts[i];
            o_val[NKINDS][b] = qw[i];
        }
    }
    result = Py_NewRef(Py_None);
    if (0) {
    not_probed:
        PyErr_SetString(PyExc_ValueError, "emit: kind or queue_wait is not the probed block's");
    }
done:
    for (int k = 0; k <= NKINDS; k++)
        for (int j = 0; j < n_out[k]; j++)
            PyBuffer_Release(&out_v[k][j]);
    for (int k = 0; k < NKINDS; k++)
        for (int j = 0; j < n_res[k]; j++)
            PyBuffer_Release(&res_v[k][j]);
    for (int i = 0; i < n_in; i++)
        PyBuffer_Release(&in_v[i]);
    return result;
}

static PyObject *router_size(Router *self, PyObject *unused) { return PyLong_FromSize_t(self->table.used); }

/* ---- fold --------------------------------------------------------------------------------------------- */

enum { F_REQUEST, F_EXTERNAL, F_DB, F_CACHE, F_TASK, F_QUEUE_WAIT, F_METRIC, F_MODES };
static const int NEXTRA[F_MODES] = {2, 0, 1, 2, 2, 0, 1};

#define EXACT_FLOAT 4503599627370496.0 /* 2 ** 52 */

static PyObject *new_bytes(Py_ssize_t n, void **buf) {
    PyObject *b = PyByteArray_FromStringAndSize(NULL, n);
    if (b != NULL)
        *buf = PyByteArray_AS_STRING(b);
    return b;
}

/* Per segment, the sketch of its bucket counts in the quick form (sketch.BucketSlices makes the same bytes: the
 * mark, version, flags, accuracy, min, max, zero count, the positive store's offset, length and dtype code, its
 * counts narrowed to the smallest unsigned type that holds the largest, the empty negative store; little
 * endian), or None: no positive values only, more than max_buckets buckets, a first key past int32. */
static PyObject *quick_forms(Py_ssize_t nseg, const char *pos, const int64_t *kmin, const int64_t *width,
                             const int64_t *base, const double *mn, const double *mx, const int64_t *binned,
                             double accuracy, long version, long long max_buckets) {
    PyObject *out = PyList_New(nseg);
    if (out == NULL)
        return NULL;
    const int little = 1;
    for (Py_ssize_t s = 0; s < nseg; s++) {
        int64_t w = width[s], k = kmin[s];
        if (!pos[s] || w > max_buckets || k < INT32_MIN || k > INT32_MAX || *(const char *)&little != 1
            || binned[base[s]] == 0 || binned[base[s] + w - 1] == 0) {
            PyList_SET_ITEM(out, s, Py_NewRef(Py_None));
            continue;
        }
        const int64_t *c = binned + base[s];
        int64_t peak = 0;
        for (int64_t j = 0; j < w; j++)
            if (c[j] > peak)
                peak = c[j];
        int code = peak < (INT64_C(1) << 8) ? 0 : peak < (INT64_C(1) << 16) ? 1 : peak < (INT64_C(1) << 32) ? 2 : 3;
        Py_ssize_t item = (Py_ssize_t)1 << code, head = 44, size = head + w * item + 9;
        PyObject *blob = PyBytes_FromStringAndSize(NULL, size);
        if (blob == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        unsigned char *b = (unsigned char *)PyBytes_AS_STRING(blob);
        uint64_t zeros = 0;
        int32_t offset = (int32_t)k;
        uint32_t length = (uint32_t)w;
        b[0] = 0;
        b[1] = (unsigned char)version;
        b[2] = 0;
        memcpy(b + 3, &accuracy, 8);
        memcpy(b + 11, &mn[s], 8);
        memcpy(b + 19, &mx[s], 8);
        memcpy(b + 27, &zeros, 8);
        memcpy(b + 35, &offset, 4);
        memcpy(b + 39, &length, 4);
        b[43] = (unsigned char)code;
        unsigned char *d = b + head;
        switch (code) {
        case 0: for (int64_t j = 0; j < w; j++) d[j] = (uint8_t)c[j]; break;
        case 1: for (int64_t j = 0; j < w; j++) { uint16_t v = (uint16_t)c[j]; memcpy(d + 2 * j, &v, 2); } break;
        case 2: for (int64_t j = 0; j < w; j++) { uint32_t v = (uint32_t)c[j]; memcpy(d + 4 * j, &v, 4); } break;
        default: memcpy(d, c, (size_t)w * 8);
        }
        memset(b + size - 9, 0, 9);
        PyList_SET_ITEM(out, s, blob);
    }
    return out;
}

PyDoc_STRVAR(fold_doc,
"fold(ids, ts, values, logs, width, mode, apdex_t, slow_ms, floor, multiplier, accuracy, version,\n"
"     max_buckets, nseries) -> tuple or None\n\n"
"One family's pending columns (ids int64: lookup values, series id in the low 36 bits, flag bits above; ts,\n"
"values, logs = numpy's log of the values: float64) per (series, window) segment, in (series, window) order.\n"
"mode: 0 request, 1 external, 2 db, 3 cache, 4 task, 5 task.queue_wait, 6 metric. None (nothing done) when\n"
"a time is negative, NaN or past 2 ** 52, the width past 2 ** 52, a series id not below nseries or a bucket\n"
"key not finite: the numpy path does those. Else (every, tmin, tmax, then bytearrays: series int64, window\n"
"int64, counts int64, errors int64, sums, mins, maxs float64, positive bool, kmin, widths, base int64,\n"
"binned int64 bucket counts, extras float64 (per counter, nseg each), order int64 (the values' places\n"
"sorted by segment, stably: only when not every, else empty), then per segment its sketch's quick form\n"
"(bytes, see quick_forms) or None).");

typedef struct {
    int64_t sid, win, count, err, kmin, kmax;
    double sum, mn, mx, x[2];
    int pos;
} Seg;

static int seg_order(const void *a, const void *b) {
    const Seg *x = *(Seg *const *)a, *y = *(Seg *const *)b;
    if (x->sid != y->sid)
        return x->sid < y->sid ? -1 : 1;
    return x->win < y->win ? -1 : x->win > y->win;
}

static PyObject *fold(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError, "fold() takes 14 arguments");
        return NULL;
    }
    Py_buffer vw[4];
    int nv = 0;
    PyObject *result = NULL;
    Seg *segs = NULL, **sorted = NULL;
    int32_t *slots = NULL, *seg_of = NULL, *last_seg = NULL, *rank = NULL;
    int64_t *bkey = NULL, *last_win = NULL;
    PyObject *arrays[15] = {0};
    long long width = PyLong_AsLongLong(args[4]);
    int mode = (int)PyLong_AsLong(args[5]);
    double apdex = PyFloat_AsDouble(args[6]), slow = PyFloat_AsDouble(args[7]), floor_ = PyFloat_AsDouble(args[8]),
           mult = PyFloat_AsDouble(args[9]), accuracy = PyFloat_AsDouble(args[10]);
    long version = PyLong_AsLong(args[11]);
    long long max_buckets = PyLong_AsLongLong(args[12]);
    Py_ssize_t nseries = PyLong_AsSsize_t(args[13]);
    if (PyErr_Occurred())
        return NULL;
    if (mode < 0 || mode >= F_MODES || width <= 0 || nseries < 0) {
        PyErr_SetString(PyExc_ValueError, "fold: bad mode, width or series count");
        return NULL;
    }
    static const char *names[4] = {"ids", "ts", "values", "logs"};
    for (; nv < 4; nv++)
        if (view_of(args[nv], &vw[nv], 8, nv ? "d" : "qlQL", 0, names[nv]) < 0)
            goto done;
    Py_ssize_t n = vw[0].len / 8;
    if (n == 0 || vw[1].len / 8 != n || vw[2].len / 8 != n || vw[3].len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "fold: columns of one positive length");
        goto done;
    }
    const int64_t *ids = vw[0].buf;
    const double *ts = vw[1].buf, *val = vw[2].buf, *lg = vw[3].buf;
    if ((double)width >= EXACT_FLOAT)
        goto decline;
    Py_ssize_t cap = 64, nseg = 0, mask = 63;
    segs = malloc((size_t)cap / 2 * sizeof(Seg));
    slots = malloc((size_t)cap * sizeof(int32_t));
    seg_of = malloc((size_t)n * sizeof(int32_t));
    bkey = malloc((size_t)n * sizeof(int64_t));
    last_win = malloc((size_t)(nseries ? nseries : 1) * sizeof(int64_t));
    last_seg = malloc((size_t)(nseries ? nseries : 1) * sizeof(int32_t));
    if (segs == NULL || slots == NULL || seg_of == NULL || bkey == NULL || last_win == NULL || last_seg == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memset(slots, 0xff, (size_t)cap * sizeof(int32_t));
    for (Py_ssize_t j = 0; j < nseries; j++)
        last_win[j] = -1; /* no window: the windows are from 0 on */
    double tmin = ts[0], tmax = ts[0], wd = (double)width, tol = 4.0 * apdex;
    /* One pass: each event's window (floor(t) // width, as the numpy path takes it: the quotient in doubles,
     * then made exact), its segment (its series' last one, as the events come in time order, else the
     * segments' hash), the segment's sums. The segments are numbered as they come, sorted at the end. */
    for (Py_ssize_t i = 0; i < n; i++) {
        double t = ts[i];
        if (!(t >= 0.0 && t < EXACT_FLOAT))
            goto decline;
        if (t < tmin)
            tmin = t;
        if (t > tmax)
            tmax = t;
        int64_t whole = (int64_t)t, q = (int64_t)((double)whole / wd);
        if (q * width > whole)
            q--;
        else if ((q + 1) * width <= whole)
            q++;
        int64_t sid = ids[i] & INDEX_MASK;
        if (sid >= nseries)
            goto decline;
        int32_t s;
        if (last_win[sid] == q) {
            s = last_seg[sid];
        } else {
            uint64_t h = ((uint64_t)sid * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)q * 0xC2B2AE3D27D4EB4FULL);
            Py_ssize_t at = (Py_ssize_t)((h ^ (h >> 29)) & (uint64_t)mask);
            while (slots[at] >= 0 && (segs[slots[at]].sid != sid || segs[slots[at]].win != q))
                at = (at + 1) & mask;
            if (slots[at] >= 0) {
                s = slots[at];
            } else {
                if (2 * (nseg + 1) > cap) { /* grow: the segments and the hash */
                    Py_ssize_t bigger = 2 * cap;
                    Seg *more = realloc(segs, (size_t)bigger / 2 * sizeof(Seg));
                    int32_t *again = more == NULL ? NULL : malloc((size_t)bigger * sizeof(int32_t));
                    if (more != NULL)
                        segs = more;
                    if (again == NULL) {
                        PyErr_NoMemory();
                        goto done;
                    }
                    free(slots);
                    slots = again;
                    cap = bigger;
                    mask = cap - 1;
                    memset(slots, 0xff, (size_t)cap * sizeof(int32_t));
                    for (Py_ssize_t j = 0; j < nseg; j++) {
                        uint64_t g = ((uint64_t)segs[j].sid * 0x9E3779B97F4A7C15ULL)
                                     ^ ((uint64_t)segs[j].win * 0xC2B2AE3D27D4EB4FULL);
                        Py_ssize_t a = (Py_ssize_t)((g ^ (g >> 29)) & (uint64_t)mask);
                        while (slots[a] >= 0)
                            a = (a + 1) & mask;
                        slots[a] = (int32_t)j;
                    }
                    at = (Py_ssize_t)((h ^ (h >> 29)) & (uint64_t)mask);
                    while (slots[at] >= 0)
                        at = (at + 1) & mask;
                }
                s = (int32_t)nseg++;
                slots[at] = s;
                Seg *g = &segs[s];
                g->sid = sid;
                g->win = q;
                g->count = g->err = 0;
                g->kmin = INT64_MAX;
                g->kmax = INT64_MIN;
                g->sum = g->x[0] = g->x[1] = 0.0;
                g->mn = INFINITY;
                g->mx = -INFINITY;
                g->pos = 1;
            }
            last_win[sid] = q;
            last_seg[sid] = s;
        }
        seg_of[i] = s;
        Seg *g = &segs[s];
        double v = val[i];
        int bits = (int)((ids[i] >> BITS_SHIFT) & 0xF);
        g->count++;
        g->sum += v;
        switch (mode) {
        case F_REQUEST:
            g->err += (bits & 3) != 0;
            g->x[0] += v <= apdex;
            g->x[1] += v <= tol; /* all within 4T: the satisfied are taken off at the end */
            break;
        case F_EXTERNAL: g->err += (bits & 3) != 0; break;
        case F_DB:
            g->err += bits & 1;
            g->x[0] += v > slow;
            break;
        case F_CACHE:
            g->err += bits & 1;
            g->x[0] += (bits >> 1) & 1;
            g->x[1] += (bits >> 2) & 1;
            break;
        case F_TASK: {
            int failed = ((bits & 2) != 0) | (((bits & 8) != 0) & (bits & 1));
            g->err += failed;
            g->x[0] += failed;
            g->x[1] += (bits >> 2) & 1;
            break;
        }
        case F_METRIC: g->x[0] += bits & 1; break;
        default: break;
        }
        if (v > floor_) {
            if (v < g->mn)
                g->mn = v;
            if (v > g->mx)
                g->mx = v;
            double l = lg[i] * mult;
            /* a key past int32 (quick_forms takes none) or not finite: the numpy path. Past int64 the cast
             * below is undefined, and keys far apart make a segment's width (kmax - kmin + 1) overflow: the
             * bucket counts' offsets would then point outside their array */
            if (!(l > (double)INT32_MIN && l < (double)INT32_MAX))
                goto decline;
            int64_t key = (int64_t)ceil(l);
            bkey[i] = key;
            if (key < g->kmin)
                g->kmin = key;
            if (key > g->kmax)
                g->kmax = key;
        } else {
            g->pos = 0;
        }
    }
    /* The segments in (series, window) order. */
    sorted = malloc((size_t)nseg * sizeof(Seg *));
    rank = malloc((size_t)nseg * sizeof(int32_t));
    if (sorted == NULL || rank == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < nseg; j++)
        sorted[j] = &segs[j];
    qsort(sorted, (size_t)nseg, sizeof(Seg *), seg_order);
    for (Py_ssize_t j = 0; j < nseg; j++)
        rank[sorted[j] - segs] = (int32_t)j;
    int nextra = NEXTRA[mode];
    int64_t *o_series, *o_win, *o_count, *o_err, *o_kmin, *o_width, *o_base;
    double *o_sum, *o_min, *o_max, *o_extra;
    char *o_pos;
    void *p;
#define NEW(i, size, ptr)                                                                                         \
    do {                                                                                                          \
        if ((arrays[i] = new_bytes(size, &p)) == NULL)                                                            \
            goto done;                                                                                            \
        ptr = p;                                                                                                  \
    } while (0)
    NEW(0, nseg * 8, o_series);
    NEW(1, nseg * 8, o_win);
    NEW(2, nseg * 8, o_count);
    NEW(3, nseg * 8, o_err);
    NEW(4, nseg * 8, o_sum);
    NEW(5, nseg * 8, o_min);
    NEW(6, nseg * 8, o_max);
    NEW(7, nseg, o_pos);
    NEW(8, nseg * 8, o_kmin);
    NEW(9, nseg * 8, o_width);
    NEW(10, nseg * 8, o_base);
    NEW(12, nseg * nextra * 8, o_extra);
    int every = 1;
    int64_t total = 0;
    for (Py_ssize_t j = 0; j < nseg; j++) {
        const Seg *g = sorted[j];
        o_series[j] = g->sid;
        o_win[j] = g->win;
        o_count[j] = g->count;
        o_err[j] = g->err;
        o_sum[j] = g->sum;
        o_min[j] = g->mn;
        o_max[j] = g->mx;
        o_pos[j] = (char)g->pos;
        for (int e = 0; e < nextra; e++)
            o_extra[e * nseg + j] = g->x[e];
        if (mode == F_REQUEST)
            o_extra[nseg + j] -= g->x[0];
        int64_t w = 0;
        if (g->pos) {
            w = g->kmax - g->kmin + 1;
            o_kmin[j] = g->kmin;
        } else {
            every = 0;
            o_kmin[j] = 0;
        }
        o_width[j] = w;
        o_base[j] = total;
        total += w;
    }
    int64_t *o_binned, *o_order;
    NEW(11, total * 8, o_binned);
    memset(o_binned, 0, (size_t)total * 8);
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t j = rank[seg_of[i]];
        if (o_pos[j])
            o_binned[o_base[j] + bkey[i] - o_kmin[j]]++;
    }
    NEW(13, every ? 0 : n * 8, o_order);
    if (!every) { /* each segment's values in order, the segments in key order (a stable counting sort) */
        int64_t *next = bkey; /* read no more */
        int64_t pos = 0;
        for (Py_ssize_t j = 0; j < nseg; j++) {
            next[j] = pos;
            pos += o_count[j];
        }
        for (Py_ssize_t i = 0; i < n; i++)
            o_order[next[rank[seg_of[i]]]++] = i;
    }
#undef NEW
    if ((arrays[14] = quick_forms(nseg, o_pos, o_kmin, o_width, o_base, o_min, o_max, o_binned, accuracy, version,
                                  max_buckets)) == NULL)
        goto done;
    result = PyTuple_New(3 + 15);
    if (result == NULL)
        goto done;
    PyTuple_SET_ITEM(result, 0, PyBool_FromLong(every));
    PyObject *a = PyFloat_FromDouble(tmin), *b = PyFloat_FromDouble(tmax);
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_CLEAR(result);
        goto done;
    }
    PyTuple_SET_ITEM(result, 1, a);
    PyTuple_SET_ITEM(result, 2, b);
    for (int i = 0; i < 15; i++) {
        PyTuple_SET_ITEM(result, 3 + i, arrays[i]);
        arrays[i] = NULL;
    }
    goto done;
decline:
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < 15; i++)
        Py_XDECREF(arrays[i]);
    free(segs);
    free(sorted);
    free(slots);
    free(seg_of);
    free(rank);
    free(bkey);
    free(last_win);
    free(last_seg);
    for (int i = 0; i < nv; i++)
        PyBuffer_Release(&vw[i]);
    return result;
}

/* ---- the segments into the aggregates ------------------------------------------------------------------ */

PyDoc_STRVAR(merge_new_doc,
"merge_new(aggs, series, seg_series, windows, width, counts, errors, sums, mins, maxs, extras, names, blobs,\n"
"          aggregate, from_stored) -> list\n\n"
"WindowAccumulator._merge's loop for the segments whose sketch came made (blobs[s], bytes) and whose key\n"
"(family, tags, start) aggs has not: aggs[key] = aggregate(series[seg_series[s]], start, width, count,\n"
"errors, sum, min, max, {names[e]: extras[e * nseg + s]}, from_stored(blob)) (start = windows[s] * width; a\n"
"min not below inf is inf, a max not above -inf is -inf, as _merge takes them). Every other segment, in\n"
"order: its number in the list returned, for _merge; a new key gets None in aggs first (its place in the\n"
"dict's order). seg_series, windows, counts, errors: int64; sums, mins, maxs, extras: float64.");

static PyObject *merge_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "merge_new() takes 15 arguments");
        return NULL;
    }
    PyObject *aggs = args[0], *series = args[1], *names = args[11], *blobs = args[12], *aggregate = args[13],
             *from_stored = args[14], *width = args[4];
    if (!PyDict_Check(aggs) || !PyList_Check(series) || !PyTuple_Check(names) || !PyList_Check(blobs)
        || !PyLong_Check(width)) {
        PyErr_SetString(PyExc_TypeError, "merge_new: aggs a dict, series and blobs lists, names a tuple");
        return NULL;
    }
    long long w = PyLong_AsLongLong(width);
    if (w == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer v[9];
    int nv = 0;
    PyObject *todo = NULL, *result = NULL, *family_name = NULL, *tags_name = NULL;
    static const int arg_of[9] = {2, 3, 5, 6, 7, 8, 9, 10, 0};
    static const char *what[8] = {"seg_series", "windows", "counts", "errors", "sums", "mins", "maxs", "extras"};
    for (; nv < 8; nv++)
        if (view_of(args[arg_of[nv]], &v[nv], 8, nv < 4 ? "qlQL" : "d", 0, what[nv]) < 0)
            goto done;
    Py_ssize_t nseg = v[0].len / 8, nextra = PyTuple_GET_SIZE(names), nseries = PyList_GET_SIZE(series);
    for (int i = 1; i < 7; i++)
        if (v[i].len / 8 != nseg) {
            PyErr_SetString(PyExc_ValueError, "merge_new: columns of one length");
            goto done;
        }
    if (v[7].len / 8 != nseg * nextra || PyList_GET_SIZE(blobs) != nseg) {
        PyErr_SetString(PyExc_ValueError, "merge_new: extras or blobs not one per segment");
        goto done;
    }
    const int64_t *sid = v[0].buf, *win = v[1].buf, *count = v[2].buf, *err = v[3].buf;
    const double *sum = v[4].buf, *mn = v[5].buf, *mx = v[6].buf, *extra = v[7].buf;
    todo = PyList_New(0);
    family_name = PyUnicode_InternFromString("family");
    tags_name = PyUnicode_InternFromString("tags");
    if (todo == NULL || family_name == NULL || tags_name == NULL)
        goto done;
    for (Py_ssize_t s = 0; s < nseg; s++) {
        if (sid[s] < 0 || sid[s] >= nseries) {
            PyErr_SetString(PyExc_IndexError, "merge_new: a series out of range");
            goto done;
        }
        PyObject *sk = PyList_GET_ITEM(series, sid[s]), *blob = PyList_GET_ITEM(blobs, s);
        PyObject *fam = PyObject_GetAttr(sk, family_name);
        PyObject *tags = fam == NULL ? NULL : PyObject_GetAttr(sk, tags_name);
        PyObject *start = tags == NULL ? NULL : PyLong_FromLongLong(win[s] * w);
        PyObject *key = start == NULL ? NULL : PyTuple_Pack(3, fam, tags, start);
        Py_XDECREF(fam);
        Py_XDECREF(tags);
        if (key == NULL) {
            Py_XDECREF(start);
            goto done;
        }
        int has = PyDict_Contains(aggs, key);
        if (has < 0 || (has == 0 && blob == Py_None && PyDict_SetItem(aggs, key, Py_None) < 0)) {
            Py_DECREF(start);
            Py_DECREF(key);
            goto done;
        }
        if (has || blob == Py_None) { /* for _merge */
            Py_DECREF(start);
            Py_DECREF(key);
            PyObject *number = PyLong_FromSsize_t(s);
            int bad = number == NULL || PyList_Append(todo, number) < 0;
            Py_XDECREF(number);
            if (bad)
                goto done;
            continue;
        }
        PyObject *counters = PyDict_New(), *sketch = NULL, *agg = NULL;
        PyObject *fields[10] = {sk, start, width, NULL, NULL, NULL, NULL, NULL, counters, NULL};
        int bad = counters == NULL;
        for (Py_ssize_t e = 0; !bad && e < nextra; e++) {
            PyObject *x = PyFloat_FromDouble(extra[e * nseg + s]);
            bad = x == NULL || PyDict_SetItem(counters, PyTuple_GET_ITEM(names, e), x) < 0;
            Py_XDECREF(x);
        }
        if (!bad) {
            fields[3] = PyLong_FromLongLong(count[s]);
            fields[4] = PyLong_FromLongLong(err[s]);
            fields[5] = PyFloat_FromDouble(sum[s]);
            fields[6] = PyFloat_FromDouble(mn[s] < INFINITY ? mn[s] : INFINITY);
            fields[7] = PyFloat_FromDouble(mx[s] > -INFINITY ? mx[s] : -INFINITY);
            sketch = PyObject_CallOneArg(from_stored, blob);
            fields[9] = sketch;
            bad = fields[3] == NULL || fields[4] == NULL || fields[5] == NULL || fields[6] == NULL
                  || fields[7] == NULL || sketch == NULL;
        }
        if (!bad) {
            agg = PyObject_Vectorcall(aggregate, fields, 10, NULL);
            bad = agg == NULL || PyDict_SetItem(aggs, key, agg) < 0;
        }
        for (int f = 3; f < 8; f++)
            Py_XDECREF(fields[f]);
        Py_XDECREF(counters);
        Py_XDECREF(sketch);
        Py_XDECREF(agg);
        Py_DECREF(start);
        Py_DECREF(key);
        if (bad)
            goto done;
    }
    result = Py_NewRef(todo);
done:
    Py_XDECREF(todo);
    Py_XDECREF(family_name);
    Py_XDECREF(tags_name);
    for (int i = 0; i < nv; i++)
        PyBuffer_Release(&v[i]);
    return result;
}

/* ---- metric events ------------------------------------------------------------------------------------ */

/* A metric event's series key, as windows._metric_key makes it: ("metric", name, its tags' items sorted),
 * () for None or no tags. */
static PyObject *metric_key(PyObject *metric, PyObject *name, PyObject *tags) {
    PyObject *items;
    if (tags == Py_None || PyDict_GET_SIZE(tags) == 0) {
        items = PyTuple_New(0);
    } else {
        PyObject *list = PyDict_Items(tags);
        if (list == NULL)
            return NULL;
        if (PyList_GET_SIZE(list) > 1 && PyList_Sort(list) < 0) {
            Py_DECREF(list);
            return NULL;
        }
        items = PyList_AsTuple(list);
        Py_DECREF(list);
    }
    if (items == NULL)
        return NULL;
    PyObject *key = PyTuple_Pack(3, metric, name, items);
    Py_DECREF(items);
    return key;
}

PyDoc_STRVAR(metric_series_doc,
"metric_series(kind, lo, hi, name_codes, names, tags, index, metric_type, count_type, ts, metric_value,\n"
"              ids, out_ts, out_values) -> None or (places, keys, counted)\n\n"
"The metric events lo:hi of a block (kind int8, name_codes int32 into the list names, tags: the block's\n"
"metric_tags, one per metric event, metric_type int8, ts and metric_value float64): each one's series key\n"
"(windows._metric_key's) looked up in index (its series id) and written with its time and value to\n"
"ids / out_ts / out_values (int64, float64, float64; one per metric event): the series id, the count_type\n"
"flag (metric_type == count_type) at bit 36. The keys index has not: -1 in ids, and (places, keys,\n"
"counted) returned, in order. The keys index had are kept in a cache, looked up by the hashes of the name\n"
"and the tags' strings, then compared with the tags: no key built.");

#define METRICS_MAX (1 << 16) /* the keys metric_series' cache holds */

/* A hash of a metric event's name and tags that does not depend on the tags' order; -1: an error. */
static Py_hash_t metric_hash(PyObject *name, PyObject *tags) {
    Py_hash_t h = PyObject_Hash(name);
    if (h == -1)
        return -1;
    uint64_t sum = 0, n = 0;
    if (tags != Py_None) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(tags, &pos, &k, &v)) {
            Py_hash_t hk = PyObject_Hash(k), hv = hk == -1 ? -1 : PyObject_Hash(v);
            if (hv == -1)
                return -1;
            uint64_t x = ((uint64_t)hk * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)hv;
            sum += (x ^ (x >> 29)) * 0xBF58476D1CE4E5B9ULL;
            n++;
        }
    }
    uint64_t out = ((uint64_t)h ^ sum ^ (n << 56)) * 0x94D049BB133111EBULL;
    out ^= out >> 31;
    return (Py_hash_t)(out == (uint64_t)-1 ? 1 : out);
}

/* Whether an entry's key is the one of (name, tags): equal names, the same tag names with equal values
 * (what the key tuples' equality is: their items sorted by name); -1: an error. */
static int metric_match(const struct MetricEntry *e, PyObject *name, PyObject *tags) {
    Py_ssize_t n = PyTuple_GET_SIZE(e->items);
    if (n != (tags == Py_None ? 0 : PyDict_GET_SIZE(tags)))
        return 0;
    int same = PyObject_RichCompareBool(e->name, name, Py_EQ);
    for (Py_ssize_t j = 0; same == 1 && j < n; j++) {
        PyObject *item = PyTuple_GET_ITEM(e->items, j);
        PyObject *v = PyDict_GetItemWithError(tags, PyTuple_GET_ITEM(item, 0));
        if (v == NULL)
            return PyErr_Occurred() ? -1 : 0;
        same = PyObject_RichCompareBool(PyTuple_GET_ITEM(item, 1), v, Py_EQ);
    }
    return same;
}

/* The cache's slot for hash h and (name, tags): its entry, or the empty slot where it would go (NULL, an
 * exception set: an error). */
static struct MetricEntry *metric_slot(Router *self, Py_hash_t h, PyObject *name, PyObject *tags) {
    Py_ssize_t mask = self->metrics_cap - 1, at = (Py_ssize_t)((uint64_t)h & (uint64_t)mask);
    for (;;) {
        struct MetricEntry *e = &self->metrics[at];
        if (e->name == NULL)
            return e;
        if (e->hash == h) {
            int m = metric_match(e, name, tags);
            if (m < 0)
                return NULL;
            if (m)
                return e;
        }
        at = (at + 1) & mask;
    }
}

static PyObject *metric_series(Router *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError, "metric_series() takes 14 arguments");
        return NULL;
    }
    Py_buffer v[8];
    int nv = 0;
    PyObject *result = NULL, *places = NULL, *keys = NULL, *counted = NULL;
    PyObject *metric = PyUnicode_InternFromString("metric");
    Py_ssize_t lo = PyLong_AsSsize_t(args[1]), hi = PyLong_AsSsize_t(args[2]);
    long count_type = PyLong_AsLong(args[8]);
    if (metric == NULL || PyErr_Occurred())
        goto done;
    PyObject *names = args[4], *tags = args[5], *index = args[6];
    if (!PyList_Check(names) || !PyList_Check(tags) || !PyDict_Check(index)) {
        PyErr_SetString(PyExc_TypeError, "metric_series: names and tags are lists, index a dict");
        goto done;
    }
    static const int arg_of[8] = {0, 3, 7, 9, 10, 11, 12, 13};
    static const Py_ssize_t sizes[8] = {1, 4, 1, 8, 8, 8, 8, 8};
    static const char *codes[8] = {"bB", "iI", "bB", "d", "d", "qlQL", "d", "d"};
    static const char *what[8] = {"kind", "name_codes", "metric_type", "ts", "metric_value", "ids", "out_ts",
                                  "out_values"};
    for (; nv < 8; nv++)
        if (view_of(args[arg_of[nv]], &v[nv], sizes[nv], codes[nv], nv >= 5, what[nv]) < 0)
            goto done;
    Py_ssize_t n = v[0].len;
    const int8_t *kind = v[0].buf, *mtype = v[2].buf;
    const int32_t *name_code = v[1].buf;
    const double *ts = v[3].buf, *value = v[4].buf;
    int64_t *ids = v[5].buf;
    double *out_ts = v[6].buf, *out_values = v[7].buf;
    Py_ssize_t k = v[5].len / 8;
    if (lo < 0 || hi < lo || hi > n || v[1].len / 4 != n || v[2].len != n || v[3].len / 8 != n
        || v[4].len / 8 != n || v[6].len / 8 != k || v[7].len / 8 != k) {
        PyErr_SetString(PyExc_ValueError, "metric_series: bad range or column lengths");
        goto done;
    }
    Py_ssize_t first = 0, at = 0, nnames = PyList_GET_SIZE(names), ntags = PyList_GET_SIZE(tags);
    for (Py_ssize_t i = 0; i < lo; i++)
        first += kind[i] == METRIC;
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (kind[i] != METRIC)
            continue;
        int32_t c = name_code[i];
        if (at >= k || first + at >= ntags || c < -1 || c >= nnames) {
            PyErr_SetString(PyExc_ValueError, "metric_series: more metric events than outputs, tags or names");
            goto done;
        }
        PyObject *t = PyList_GET_ITEM(tags, first + at);
        if (t != Py_None && !PyDict_Check(t)) {
            PyErr_SetString(PyExc_TypeError, "metric_series: tags are a dict or None");
            goto done;
        }
        PyObject *name = c < 0 ? Py_None : PyList_GET_ITEM(names, c);
        int64_t flag = (int64_t)(mtype[i] == count_type) << BITS_SHIFT;
        /* The cache first (no key built: the hashes of the name and the tags' strings, a look at the tags
         * per name; the strings' hashes are kept by the strings), then the key in index. */
        Py_hash_t h = metric_hash(name, t);
        if (h == -1)
            goto done;
        struct MetricEntry *slot = NULL;
        if (self->metrics_cap) {
            if ((slot = metric_slot(self, h, name, t)) == NULL)
                goto done;
            if (slot->name != NULL) {
                ids[at] = slot->sid | flag;
                out_ts[at] = ts[i];
                out_values[at] = value[i];
                at++;
                continue;
            }
        }
        PyObject *key = metric_key(metric, name, t);
        if (key == NULL)
            goto done;
        PyObject *sid = PyDict_GetItemWithError(index, key);
        if (sid != NULL) {
            int64_t j = PyLong_AsLongLong(sid);
            if (j == -1 && PyErr_Occurred()) {
                Py_DECREF(key);
                goto done;
            }
            ids[at] = j | flag;
            if (self->metrics_used < METRICS_MAX) { /* index's entries never change: cached as they are */
                if (2 * (self->metrics_used + 1) > self->metrics_cap) {
                    Py_ssize_t cap = self->metrics_cap ? 2 * self->metrics_cap : 64;
                    struct MetricEntry *more = calloc((size_t)cap, sizeof(struct MetricEntry));
                    if (more == NULL) {
                        Py_DECREF(key);
                        PyErr_NoMemory();
                        goto done;
                    }
                    for (Py_ssize_t q = 0; q < self->metrics_cap; q++) {
                        struct MetricEntry *e = &self->metrics[q];
                        if (e->name == NULL)
                            continue;
                        Py_ssize_t a = (Py_ssize_t)((uint64_t)e->hash & (uint64_t)(cap - 1));
                        while (more[a].name != NULL)
                            a = (a + 1) & (cap - 1);
                        more[a] = *e;
                    }
                    free(self->metrics);
                    self->metrics = more;
                    self->metrics_cap = cap;
                    if ((slot = metric_slot(self, h, name, t)) == NULL) {
                        Py_DECREF(key);
                        goto done;
                    }
                }
                slot->hash = h;
                slot->name = Py_NewRef(name);
                slot->items = Py_NewRef(PyTuple_GET_ITEM(key, 2));
                slot->sid = j;
                self->metrics_used++;
            }
            Py_DECREF(key);
        } else {
            if (PyErr_Occurred()) {
                Py_DECREF(key);
                goto done;
            }
            if (keys == NULL && ((keys = PyList_New(0)) == NULL || (places = PyList_New(0)) == NULL
                                 || (counted = PyList_New(0)) == NULL)) {
                Py_DECREF(key);
                goto done;
            }
            PyObject *place = PyLong_FromSsize_t(at);
            int bad = place == NULL || PyList_Append(keys, key) < 0 || PyList_Append(places, place) < 0
                      || PyList_Append(counted, flag ? Py_True : Py_False) < 0;
            Py_XDECREF(place);
            Py_DECREF(key);
            if (bad)
                goto done;
            ids[at] = -1;
        }
        out_ts[at] = ts[i];
        out_values[at] = value[i];
        at++;
    }
    if (at != k) {
        PyErr_SetString(PyExc_ValueError, "metric_series: fewer metric events than outputs");
        goto done;
    }
    result = keys == NULL ? Py_NewRef(Py_None) : PyTuple_Pack(3, places, keys, counted);
done:
    Py_XDECREF(metric);
    Py_XDECREF(places);
    Py_XDECREF(keys);
    Py_XDECREF(counted);
    for (int i = 0; i < nv; i++)
        PyBuffer_Release(&v[i]);
    return result;
}

static PyMethodDef router_methods[] = {
    {"probe", (PyCFunction)(void (*)(void))router_probe, METH_FASTCALL, probe_doc},
    {"emit", (PyCFunction)(void (*)(void))router_emit, METH_FASTCALL, emit_doc},
    {"size", (PyCFunction)router_size, METH_NOARGS, "How many combinations the table holds."},
    {"metric_series", (PyCFunction)(void (*)(void))metric_series, METH_FASTCALL, metric_series_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RouterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aggregator._windows.Router",
    .tp_basicsize = sizeof(Router),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Router(kinds, outcomes, cache_hits, task_states): a WindowAccumulator's lookup of scanned columns.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)router_init,
    .tp_dealloc = (destructor)router_dealloc,
    .tp_methods = router_methods,
};

static PyMethodDef methods[] = {
    {"fold", (PyCFunction)(void (*)(void))fold, METH_FASTCALL, fold_doc},
    {"merge_new", (PyCFunction)(void (*)(void))merge_new, METH_FASTCALL, merge_new_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "aggregator._windows",
    "The window accumulator's per-event work in C (see aggregator/windows.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__windows(void) {
    if (PyType_Ready(&RouterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Router", (PyObject *)&RouterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
