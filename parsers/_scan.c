/* parsers._scan: a strict scanner from a block of schema-1 event lines straight to columns.
 *
 * ``scan(data, past_limit, future_limit, max_line_bytes)`` reads a block of JSON lines and returns the
 * columns of its events (see parsers/columns.py, whose docstring is the spec of the codes, and
 * parsers/scan.py, which wraps the result) for a range data[:stop] of whole lines, with stop (the tuple's
 * last item); or None whenever it is not 100% sure that the reference (``LineParser.parse`` then
 * ``columns.from_events``) reads that range as nothing but events and skipped lines, with exactly these
 * values. stop is len(data), or the start of the first declined line (below): the caller has the reference
 * read that line and scans on after it. None is never wrong: the caller then runs the reference parser.
 *
 * The block (as LineParser._parse_block requires): not empty, ending with a newline, no NUL, valid UTF-8
 * (as Python's decoder: no overlongs, no surrogates), every line an object (`{` ... `}`) shorter than
 * max_line_bytes, no Docker record (a line starting `{"log":"`).
 * A line is an event when it parses completely as ``parsers.event.Event`` under the rules below; a line
 * that does not is skipped when it does not hold the bytes `apm.schema` anywhere, and otherwise it is
 * declined: the range returned ends before it (the lines after it are not read). The block checks above
 * are made on the whole block; the rules that follow on the range returned, which is given up (None) when
 * its skipped lines all hold a backslash (one of them could be an event with an escaped key, which the
 * reference decodes when every line of the range does), or when it is `{"log":` records without any
 * event (the reference unwraps them).
 *
 * An event line mirrors msgspec decoding ``Event``: strict JSON (whitespace: space, tab, CR), unknown keys
 * skipped with their values validated (depth <= MAX_DEPTH), the same types, literals, ranges, lengths in
 * code points, the metric name's pattern, the same doubles (integer tokens converted from their integer, so
 * `-0` is 0.0; other numbers correctly rounded), then the kind's required fields and the timestamp as
 * ``parsers.timestamps`` reads it (same additions), inside [past_limit, future_limit].
 * It refuses more than msgspec in a few corners rather than reading them differently: duplicated known keys
 * (msgspec: the last one wins), escaped top-level keys, lone surrogates, integers of more than 18 digits,
 * nesting deeper than MAX_DEPTH, escaped timestamps, a metric name with a trailing newline (Python's `$`),
 * number tokens longer than MAX_NUMBER, duplicated metric tag keys.
 *
 * The block's checks and the lines' ends come from one pass over the bytes, 64 at a time (SSE2, or AVX2
 * when the CPU has it: checked at import; LOGAPM_SCAN_NO_AVX2=1 keeps SSE2, for the tests), made a segment
 * (SEGMENT bytes) ahead of the parse so that the parse finds the bytes still in the cache. Any check that
 * fails, in whatever segment, gives the whole block up, as when they were all made first.
 *
 * Plain CPython C API, no numpy: the columns are returned in one bytearray (an arena, reused from call to
 * call once nothing refers to it) at the offsets returned with it, which the wrapper views with numpy.
 *
 * The result: ``(lines, skipped, n, arena, offsets, tables, tags, stop)``; offsets: where each column's n
 * values start in the arena, the numeric ones in columns.NUMERIC_FIELDS' order then the codes in
 * STRING_FIELDS' order; tables: per string field, its table (a list of str; span_id's and trace_id's
 * Strings, read like one; parent_span_id's is span_id's).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
/* AVX2 (and BMI1/2) code paths, compiled by target attributes and chosen at import when the CPU has them */
#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 5))
#include <immintrin.h>
#define HAVE_AVX2_PASS 1
static int use_avx2;
static int use_avx2_parse; /* the parse's AVX2 build also needs BMI1 and BMI2 */
#endif

#define MAX_DEPTH 64      /* msgspec refuses nesting somewhere between 200 and 2000: stay well below */
#define MAX_NUMBER 64     /* longest number token read (longer: give up) */
#define MAX_STR 4096      /* Str and TagValue max_length (logging_apm.schema.MAX_STRING_LENGTH) */
#define MAX_DURATION_MS (7.0 * 24 * 3600 * 1000.0)
#define FINITE 1.7e308
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
/* Readable bytes past every line's '\n' that parse_line is given (the next lines', or a padded copy of the
 * block's end: see scan): its vector reads (up to 32 bytes from a byte of the line) need no bound checks. */
#define LINE_PAD 64

/* ---- string columns, in the order of columns.STRING_FIELDS ------------------------------------------- */
enum {
    S_SERVICE_NAME, S_DEPLOYMENT_ENVIRONMENT, S_TRACE_ID, S_SPAN_ID, S_PARENT_SPAN_ID,
    S_HTTP_REQUEST_METHOD, S_HTTP_ROUTE,
    S_DB_SYSTEM, S_DB_NAMESPACE, S_DB_OPERATION_NAME, S_DB_COLLECTION_NAME, S_DB_QUERY_TEXT,
    S_DB_QUERY_FINGERPRINT,
    S_CACHE_NAME, S_CACHE_OPERATION, S_PEER_SERVICE, S_EXTERNAL_OPERATION,
    S_TASK_NAME, S_MESSAGING_DESTINATION_NAME, S_METRIC_NAME,
    N_STR
};
static const char *const STRING_FIELDS[N_STR] = {
    "service_name", "deployment_environment", "trace_id", "span_id", "parent_span_id",
    "http_request_method", "http_route",
    "db_system", "db_namespace", "db_operation_name", "db_collection_name", "db_query_text",
    "db_query_fingerprint",
    "cache_name", "cache_operation", "peer_service", "external_operation",
    "task_name", "messaging_destination_name", "metric_name",
};
/* the table a field's codes index: span ids share one */
static int table_of(int f) { return f == S_PARENT_SPAN_ID ? S_SPAN_ID : f; }

/* ---- the keys of Event ------------------------------------------------------------------------------- */
enum {
    T_TIMESTAMP, T_SCHEMA, T_KIND, T_DURATION, T_OUTCOME,
    T_STR,      /* Str, a column */
    T_STR_V,    /* Str, validated only */
    T_TRACE, T_SPAN,
    T_STATUS, T_INT_GE_M1, T_INT_ANY, T_INT_GE0,
    T_BOOL_HIT, T_TASK_STATE, T_QUEUE, T_METRIC_NAME, T_METRIC_TYPE, T_METRIC_VALUE, T_TAGS,
    T_REFUSE,   /* the name of Event.ts */
};

typedef struct {
    const char *name;
    const char *attr;   /* the Event attribute (for the tests) */
    int type;
    int col;            /* string column, or -1 */
} KeyDef;

static const KeyDef KEYS[] = {
    {"timestamp", "timestamp", T_TIMESTAMP, -1},
    {"apm.schema", "schema", T_SCHEMA, -1},
    {"apm.kind", "kind", T_KIND, -1},
    {"duration_ms", "duration_ms", T_DURATION, -1},
    {"outcome", "outcome", T_OUTCOME, -1},
    {"service.name", "service_name", T_STR, S_SERVICE_NAME},
    {"deployment.environment", "deployment_environment", T_STR, S_DEPLOYMENT_ENVIRONMENT},
    {"service.version", "service_version", T_STR_V, -1},
    {"host.name", "host_name", T_STR_V, -1},
    {"trace_id", "trace_id", T_TRACE, S_TRACE_ID},
    {"span_id", "span_id", T_SPAN, S_SPAN_ID},
    {"parent_span_id", "parent_span_id", T_SPAN, S_PARENT_SPAN_ID},
    {"error.type", "error_type", T_STR_V, -1},
    {"http.request.method", "http_request_method", T_STR, S_HTTP_REQUEST_METHOD},
    {"http.route", "http_route", T_STR, S_HTTP_ROUTE},
    {"http.response.status_code", "http_response_status_code", T_STATUS, -1},
    {"db.system", "db_system", T_STR, S_DB_SYSTEM},
    {"db.namespace", "db_namespace", T_STR, S_DB_NAMESPACE},
    {"db.operation.name", "db_operation_name", T_STR, S_DB_OPERATION_NAME},
    {"db.collection.name", "db_collection_name", T_STR, S_DB_COLLECTION_NAME},
    {"db.query.text", "db_query_text", T_STR, S_DB_QUERY_TEXT},
    {"db.query.fingerprint", "db_query_fingerprint", T_STR, S_DB_QUERY_FINGERPRINT},
    {"db.response.returned_rows", "db_response_returned_rows", T_INT_GE_M1, -1},
    {"db.executemany", "db_executemany", T_INT_ANY, -1},
    {"cache.name", "cache_name", T_STR, S_CACHE_NAME},
    {"cache.operation", "cache_operation", T_STR, S_CACHE_OPERATION},
    {"cache.hit", "cache_hit", T_BOOL_HIT, -1},
    {"cache.keys", "cache_keys", T_INT_GE0, -1},
    {"peer.service", "peer_service", T_STR, S_PEER_SERVICE},
    {"external.operation", "external_operation", T_STR, S_EXTERNAL_OPERATION},
    {"server.address", "server_address", T_STR_V, -1},
    {"task.name", "task_name", T_STR, S_TASK_NAME},
    {"messaging.destination.name", "messaging_destination_name", T_STR, S_MESSAGING_DESTINATION_NAME},
    {"task.state", "task_state", T_TASK_STATE, -1},
    {"task.queue_wait_ms", "task_queue_wait_ms", T_QUEUE, -1},
    {"task.retries", "task_retries", T_INT_GE0, -1},
    {"metric.name", "metric_name", T_METRIC_NAME, S_METRIC_NAME},
    {"metric.type", "metric_type", T_METRIC_TYPE, -1},
    {"metric.value", "metric_value", T_METRIC_VALUE, -1},
    {"metric.tags", "metric_tags", T_TAGS, -1},
    {"@logapm.parsed_ts", "ts", T_REFUSE, -1},
};
#define N_KEYS ((int)(sizeof(KEYS) / sizeof(KEYS[0])))
/* KEYS' types and columns side by side, compact: the dispatch on a key's value reads a byte */
static uint8_t key_type[64];
static int8_t key_col[64];
#define K_TIMESTAMP 0
#define K_SCHEMA 1
#define K_KIND 2
#define BIT(k) ((uint64_t)1 << (k))

/* short byte strings equal (inline: most are under 40 bytes) */
static inline int same_bytes(const char *a, const char *b, size_t n) {
    uint64_t x, y;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y) return 0;
        }
        memcpy(&x, a + n - 8, 8); /* the last 8 (overlapping) */
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t u, v, w, z;
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        memcpy(&w, a + n - 4, 4);
        memcpy(&z, b + n - 4, 4);
        return u == v && w == z;
    }
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i]) return 0;
    }
    return 1;
}

/* key look-up: a small hash over length and a few bytes, chained; built at import */
#define KEY_BUCKETS 256
static int key_head[KEY_BUCKETS];
static size_t key_len[64];
static char key_name[64][32] __attribute__((aligned(16))); /* the names again, side by side, each with
                                                            * its closing quote and a colon */
static uint32_t key_need[64]; /* the bits of the name, quote and colon, for the 32-byte comparison */
static int key_next[64];

static inline unsigned key_hash(const unsigned char *s, size_t n) {
    return (unsigned)(n * 31u + s[0] * 7u + s[n - 1] * 3u + s[n / 2] * 5u + s[n - 2]) & (KEY_BUCKETS - 1);
}

static int find_key(const unsigned char *s, size_t n) {
    if (n < 2) return -1;
    for (int k = key_head[key_hash(s, n)]; k >= 0; k = key_next[k]) {
        if (key_len[k] == n && same_bytes(key_name[k], (const char *)s, n)) return k;
    }
    return -1;
}

/* Whether the bytes at p start with the n bytes of pat (a 32-byte pattern whose first n bytes are flagged in
 * need), compared in place at once. p is in a line: 32 bytes from it are readable (LINE_PAD); end is the
 * line's '\n' (for the bytewise comparison without SSE2). */
static inline int starts_with(const unsigned char *p, const char *pat, uint32_t need, size_t n,
                              const unsigned char *end) {
#if defined(__SSE2__)
    (void)n;
    (void)end;
    __m128i a0 = _mm_loadu_si128((const __m128i *)p), a1 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i b0 = _mm_load_si128((const __m128i *)pat), b1 = _mm_load_si128((const __m128i *)(pat + 16));
    uint32_t eq = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a0, b0)) |
                  ((uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a1, b1)) << 16);
    return (eq & need) == need;
#else
    (void)need;
    return (size_t)(end - p) >= n && same_bytes(pat, (const char *)p, n);
#endif
}

/* Whether the key at ks (after its opening quote) is KEYS[k] followed at once by its colon: the name, the
 * closing quote and the colon (a key and its colon with whitespace between them take the general path). */
static inline int predicted_key(int k, const unsigned char *ks, const unsigned char *end) {
    return starts_with(ks, key_name[k], key_need[k], key_len[k] + 2, end);
}

/* Whether the bytes at p (just past a value) are the writers' separator and KEYS[k] with its colon,
 * `,"name":` (a separator with whitespace takes the general path). */
static char key_entry[64][32] __attribute__((aligned(16))); /* `,"name":` per key */
static uint32_t entry_need[64];

static inline int predicted_entry(int k, const unsigned char *p, const unsigned char *end) {
    return starts_with(p, key_entry[k], entry_need[k], key_len[k] + 4, end);
}

/* kinds, in parsers.columns.KIND_CODES order (kind_of below hard-codes the same codes), and what each
 * requires (parsers.event.REQUIRED_BY_KIND) */
static const char *const KINDS[6] = {"request", "db", "cache", "external", "task", "metric"};

static const char *const REQUIRED_NAMES[6][4] = {
    {"duration_ms", "http.request.method", "http.route", NULL},
    {"duration_ms", "db.system", NULL},
    {"duration_ms", "cache.name", "cache.operation", NULL},
    {"duration_ms", "peer.service", NULL},
    {"duration_ms", "task.name", NULL},
    {"metric.name", "metric.type", "metric.value", NULL},
};
static uint64_t required_mask[6];

/* ---- buffers kept from one call to the next ------------------------------------------------------------
 * A block's buffers are a few hundred kB: fresh ones would be fresh pages (page faults) on every call.
 * ``take`` hands out the kept buffer of a slot when it is large enough (else a new one), ``give`` keeps
 * the larger of the two (up to KEEP_MAX bytes). Taken buffers are the caller's alone: a nested call (from a
 * finalizer, say) finds the slot empty and allocates its own. */
#define KEEP_MAX ((size_t)16 << 20)
enum { B_SCRATCH, B_ENDS, B_SLOTS, B_ENTRIES = B_SLOTS + N_STR, N_KEPT = B_ENTRIES + N_STR };
static struct {
    void *p;
    size_t size;
} kept[N_KEPT];

static void *take(int slot, size_t need, size_t *got) {
    if (kept[slot].p && kept[slot].size >= need) {
        void *p = kept[slot].p;
        *got = kept[slot].size;
        kept[slot].p = NULL;
        return p;
    }
    void *p = PyMem_Malloc(need ? need : 1);
    *got = p ? need : 0;
    return p;
}

static void give(int slot, void *p, size_t size) {
    if (!p) return;
    if (size <= KEEP_MAX && (!kept[slot].p || kept[slot].size < size)) {
        PyMem_Free(kept[slot].p);
        kept[slot].p = p;
        kept[slot].size = size;
    } else {
        PyMem_Free(p);
    }
}

/* ---- the columns' memory ------------------------------------------------------------------------------
 * One bytearray (an arena) holds every column of a call's result, at the offsets the result gives; the
 * wrapper views it with numpy, without a copy (the columns were copied into a bytearray each). A fresh
 * arena per block (about 120 bytes a line) could be fresh pages every time (glibc hands freed memory back to
 * the kernel, page faults take it again: ~15% of the time when each block's columns are dropped before the
 * next call, a few % when they are held until after it). So the last ARENAS arenas are kept and
 * one is reused as soon as nothing but this module refers to it (refcount 1: every numpy view, and so every
 * column still in use, holds a reference). Several, because a caller typically still holds the previous
 * block's columns while it parses the next one (the engine's loop variables). An arena is the caller's alone
 * while a call fills it: a nested call (from a finalizer, say) does not find it in its slot. */
#define ARENAS 3
static PyObject *arenas[ARENAS];
static unsigned arena_turn; /* the slot replaced next when every slot holds an arena */

static PyObject *take_arena(size_t need) {
    for (int i = 0; i < ARENAS; i++) {
        PyObject *a = arenas[i];
        if (a && Py_REFCNT(a) == 1 && (size_t)PyByteArray_GET_SIZE(a) >= need) {
            arenas[i] = NULL;
            return a;
        }
    }
    /* some room over: the next block is often a few lines longer */
    return PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(need + need / 16 + 64));
}

/* Keep the arena (a reference the caller gives up), or let it go when it is too large to keep. */
static void keep_arena(PyObject *a) {
    if ((size_t)PyByteArray_GET_SIZE(a) > KEEP_MAX) {
        Py_DECREF(a);
        return;
    }
    for (int i = 0; i < ARENAS; i++) {
        if (!arenas[i]) {
            arenas[i] = a;
            return;
        }
    }
    unsigned i = arena_turn++ % ARENAS;
    Py_SETREF(arenas[i], a);
}

/* ---- a per-table string intern table ------------------------------------------------------------------ */
typedef struct {
    uint64_t hash;
    const char *ptr;   /* the value's UTF-8: in the data (alive for the call) or in obj */
    Py_ssize_t len;
    PyObject *obj;     /* the value as a str (a reference owned here until interner_list), or NULL: a lazy
                        * table's value in the data (its str made only when read, see Strings) */
} Entry;

typedef struct {
    uint64_t *slots;   /* open addressing: (hash >> 32) << 32 | (code + 1); 0 is an empty slot */
    size_t cap;        /* power of two */
    size_t slots_size; /* bytes allocated */
    Entry *entries;    /* by code */
    size_t entries_cap;
    size_t entries_size;
    int id;            /* the table's number (for the kept buffers) */
    size_t used;       /* the codes given: entries[:used] */
    PyObject *list;    /* the table (str values in order of first appearance), made at the end by
                        * interner_list: one allocation instead of a list grown value by value */
    int lazy;          /* the table is a Strings (no str per value), not a list */
} Interner;

static inline uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull), v;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&v, s + i, 8);
            h = (h ^ v) * 0xC2B2AE3D27D4EB4Full;
            h ^= h >> 29;
        }
        memcpy(&v, s + n - 8, 8); /* the last 8 (overlapping): no variable-length copy */
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        v = (uint64_t)a << 32 | b;
    } else {
        v = 0;
        for (size_t i = 0; i < n; i++) v = v << 8 | (unsigned char)s[i];
    }
    h = (h ^ v) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 32;
    return h;
}

static int interner_init(Interner *t, int id, size_t expect) {
    t->id = id;
    t->cap = 64;
    while (t->cap < 2 * expect) t->cap *= 2;
    t->entries_cap = t->cap / 2 + 1; /* codes up to cap / 2: the table grows past half full */
    t->slots = (uint64_t *)take(B_SLOTS + id, t->cap * sizeof(uint64_t), &t->slots_size);
    t->entries = (Entry *)take(B_ENTRIES + id, t->entries_cap * sizeof(Entry), &t->entries_size);
    t->used = 0;
    t->list = NULL;
    t->lazy = 0;
    if (!t->slots || !t->entries) return -1;
    memset(t->slots, 0, t->cap * sizeof(uint64_t));
    return 0;
}

static void interner_free(Interner *t) {
    for (size_t code = 0; code < t->used; code++) Py_XDECREF(t->entries[code].obj);
    t->used = 0;
    give(B_SLOTS + t->id, t->slots, t->slots_size);
    give(B_ENTRIES + t->id, t->entries, t->entries_size);
    t->slots = NULL;
    t->entries = NULL;
    Py_CLEAR(t->list);
}

/* ---- Strings: a table whose str are made when read ----------------------------------------------------
 * Nearly every event has its own span id, and nobody in the columns path reads them (the codes and the
 * table's size are what the trace summary uses): a str per span id (PyUnicode_New, and its dealloc with the
 * list's) was ~15% of a worker's samples at 5M events. The trace ids (about one an 8 events) are a Strings
 * too: the worker sends them joined (join, below). A Strings holds the values' UTF-8 bytes one after the
 * other in one buffer of its own (a copy: ~16 bytes an id, so it outlives the scanned data and the scan's
 * tail buffer) and makes a value's str when it is read. It reads like the list it replaces: len, index
 * (negative too), slices (a list), iteration, == / != with a list or another Strings, pickled as a list. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    uint32_t *off;   /* n + 1 offsets into buf */
    char *buf;
} Strings;

static PyTypeObject StringsType;

static void strings_dealloc(Strings *self) {
    PyMem_Free(self->off);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t strings_len(Strings *self) { return self->n; }

static inline int is_ascii(const char *s, Py_ssize_t n);

/* the bytes were valid UTF-8 when scanned (the block's rule, or decoded once when escaped) */
static PyObject *strings_str(Strings *self, Py_ssize_t i) {
    const char *s = self->buf + self->off[i];
    Py_ssize_t n = (Py_ssize_t)(self->off[i + 1] - self->off[i]);
    if (is_ascii(s, n)) {
        PyObject *str = PyUnicode_New(n, 127);
        if (str) memcpy(PyUnicode_DATA(str), s, (size_t)n);
        return str;
    }
    return PyUnicode_DecodeUTF8(s, n, "strict");
}

static PyObject *strings_item(Strings *self, Py_ssize_t i) {
    if (i < 0 || i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return NULL;
    }
    return strings_str(self, i);
}

/* the values start, start + step, ... (len of them) as a list of str */
static PyObject *strings_range(Strings *self, Py_ssize_t start, Py_ssize_t step, Py_ssize_t len) {
    PyObject *list = PyList_New(len);
    if (!list) return NULL;
    for (Py_ssize_t k = 0, i = start; k < len; k++, i += step) {
        PyObject *s = strings_str(self, i);
        if (!s) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, s);
    }
    return list;
}

static PyObject *strings_list(Strings *self) { return strings_range(self, 0, 1, self->n); }

static PyObject *strings_subscript(Strings *self, PyObject *key) {
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) return NULL;
        if (i < 0) i += self->n;
        return strings_item(self, i);
    }
    if (PySlice_Check(key)) {
        Py_ssize_t start, stop, step;
        if (PySlice_Unpack(key, &start, &stop, &step) < 0) return NULL;
        Py_ssize_t len = PySlice_AdjustIndices(self->n, &start, &stop, step);
        return strings_range(self, start, step, len);
    }
    PyErr_Format(PyExc_TypeError, "list indices must be integers or slices, not %.200s", Py_TYPE(key)->tp_name);
    return NULL;
}

static PyObject *strings_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || !(PyList_Check(b) || PyObject_TypeCheck(b, &StringsType)))
        Py_RETURN_NOTIMPLEMENTED;
    Strings *self = (Strings *)a;
    Py_ssize_t n = PyObject_Length(b);
    if (n < 0) return NULL;
    int same = n == self->n;
    for (Py_ssize_t i = 0; same && i < n; i++) {
        PyObject *x = strings_str(self, i);
        if (!x) return NULL;
        PyObject *y = PySequence_GetItem(b, i);
        if (!y) {
            Py_DECREF(x);
            return NULL;
        }
        same = PyObject_RichCompareBool(x, y, Py_EQ);
        Py_DECREF(x);
        Py_DECREF(y);
        if (same < 0) return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static PyObject *strings_reduce(Strings *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *list = strings_list(self);
    if (!list) return NULL;
    return Py_BuildValue("(O(N))", (PyObject *)&PyList_Type, list);
}

static PyObject *strings_repr(Strings *self) {
    PyObject *list = strings_list(self);
    if (!list) return NULL;
    PyObject *r = PyObject_Repr(list);
    Py_DECREF(list);
    return r;
}

/* sep.join(self) (sep a str) from the bytes, with no str per value: the trace ids go to the parent as one
 * string (aggregator/insights/columns.py, ScannedIds), and a str per distinct id made only to be joined
 * (made, listed, copied into the join, freed) cost ~200 instructions an id, 0.6% of a worker's (callgrind,
 * process_part and its pickle over the 5M log's first six parts). The values and sep are valid UTF-8, so
 * their concatenation decodes to the join; when it is all ASCII (trace ids, nearly always) it is written
 * straight into the result. */
static PyObject *strings_join(Strings *self, PyObject *sep) {
    if (!PyUnicode_Check(sep)) {
        PyErr_Format(PyExc_TypeError, "join() separator must be str, not %.200s", Py_TYPE(sep)->tp_name);
        return NULL;
    }
    Py_ssize_t slen;
    const char *s = PyUnicode_AsUTF8AndSize(sep, &slen);
    if (!s) return NULL;
    Py_ssize_t n = self->n, bytes = n ? (Py_ssize_t)self->off[n] : 0;
    if (!n) return PyUnicode_New(0, 0);
    if (slen > (PY_SSIZE_T_MAX - bytes) / n) return PyErr_NoMemory();
    Py_ssize_t total = bytes + slen * (n - 1);
    int ascii = is_ascii(self->buf, bytes) && is_ascii(s, slen);
    PyObject *out = NULL;
    char *d = ascii ? NULL : (char *)PyMem_Malloc((size_t)total + 1);
    if (ascii) {
        out = PyUnicode_New(total, 127);
        if (!out) return NULL;
        d = (char *)PyUnicode_DATA(out);
    } else if (!d) {
        return PyErr_NoMemory();
    }
    char *at = d;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i) {
            memcpy(at, s, (size_t)slen);
            at += slen;
        }
        size_t len = self->off[i + 1] - self->off[i];
        memcpy(at, self->buf + self->off[i], len);
        at += len;
    }
    if (!ascii) {
        out = PyUnicode_DecodeUTF8(d, total, "strict");
        PyMem_Free(d);
    }
    return out;
}

static PySequenceMethods strings_as_sequence = {
    .sq_length = (lenfunc)strings_len,
    .sq_item = (ssizeargfunc)strings_item,
};
static PyMappingMethods strings_as_mapping = {
    .mp_length = (lenfunc)strings_len,
    .mp_subscript = (binaryfunc)strings_subscript,
};
static PyMethodDef strings_methods[] = {
    {"__reduce__", (PyCFunction)strings_reduce, METH_NOARGS, "pickled as the list it reads as"},
    {"join", (PyCFunction)strings_join, METH_O, "sep.join(self), made from the bytes (no str per value)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StringsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "parsers._scan.Strings",
    .tp_basicsize = sizeof(Strings),
    .tp_dealloc = (destructor)strings_dealloc,
    .tp_repr = (reprfunc)strings_repr,
    .tp_as_sequence = &strings_as_sequence,
    .tp_as_mapping = &strings_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A scanned string table read like a list of str, each str made when read (see parsers/_scan.c).",
    .tp_richcompare = strings_richcompare,
    .tp_iter = PySeqIter_New,
    .tp_methods = strings_methods,
};

static int valid_utf8(const unsigned char *s, size_t n);

/* Whether the n bytes at s are all ASCII: 64 bytes a step with SSE2. Over the span and trace ids' copies
 * (interner_strings) it is +0.31% of scan's instructions on the 5M-event log's first 8 MB (callgrind); is_ascii's
 * word at a time was +0.68% over the span ids alone. */
static int all_ascii(const char *s, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    __m128i a = _mm_setzero_si128(), b = a, c = a, d = a;
    for (; i + 64 <= n; i += 64) {
        a = _mm_or_si128(a, _mm_loadu_si128((const __m128i *)(s + i)));
        b = _mm_or_si128(b, _mm_loadu_si128((const __m128i *)(s + i + 16)));
        c = _mm_or_si128(c, _mm_loadu_si128((const __m128i *)(s + i + 32)));
        d = _mm_or_si128(d, _mm_loadu_si128((const __m128i *)(s + i + 48)));
    }
    if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d)))) return 0;
#endif
    return is_ascii(s + i, (Py_ssize_t)(n - i)); /* the last 63 bytes or fewer, a word at a time */
}

/* t->list: a Strings of the entries' bytes (their str, of escaped values, released); -1 on error, 1 (no
 * exception, the table unchanged) when the bytes copied are not valid UTF-8. They were when scanned (the
 * block's rule), but a value in the data is copied only now: the bytes of a mapped file (aggregator/_filemap.c)
 * can change under the scan when the file is cut and written again, and such a table would raise
 * UnicodeDecodeError far from here, whenever a value is read (indexing, ==, pickling, join). Checked on
 * the copy, which is what is decoded: all_ascii over it, a value at a time only when it holds a byte that is
 * not ASCII. */
static int interner_strings(Interner *t) {
    size_t total = 0;
    for (size_t code = 0; code < t->used; code++) total += (size_t)t->entries[code].len;
    if (total >= UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a string table over 4 GiB");
        return -1;
    }
    Strings *s = PyObject_New(Strings, &StringsType);
    if (!s) return -1;
    s->n = (Py_ssize_t)t->used;
    s->off = (uint32_t *)PyMem_Malloc((t->used + 1) * sizeof(uint32_t));
    s->buf = (char *)PyMem_Malloc(total ? total : 1);
    if (!s->off || !s->buf) {
        Py_DECREF(s);
        PyErr_NoMemory();
        return -1;
    }
    uint32_t at = 0;
    for (size_t code = 0; code < t->used; code++) {
        Entry *e = &t->entries[code];
        s->off[code] = at;
        memcpy(s->buf + at, e->ptr, (size_t)e->len);
        at += (uint32_t)e->len;
    }
    s->off[t->used] = at;
    if (!all_ascii(s->buf, at)) {
        for (size_t code = 0; code < t->used; code++) {
            if (!valid_utf8((const unsigned char *)s->buf + s->off[code], s->off[code + 1] - s->off[code])) {
                Py_DECREF(s);
                return 1;
            }
        }
    }
    for (size_t code = 0; code < t->used; code++) Py_CLEAR(t->entries[code].obj);
    t->used = 0;
    t->list = (PyObject *)s;
    return 0;
}

/* t->list made from the entries' str (their references move to it); -1 when out of memory, 1: see
 * interner_strings */
static int interner_list(Interner *t) {
    if (t->lazy) return interner_strings(t);
    PyObject *list = PyList_New((Py_ssize_t)t->used);
    if (!list) return -1;
    for (size_t code = 0; code < t->used; code++) PyList_SET_ITEM(list, (Py_ssize_t)code, t->entries[code].obj);
    t->used = 0;
    t->list = list;
    return 0;
}

static int interner_grow(Interner *t) {
    size_t ncap = t->cap * 2, used = t->used;
    uint64_t *ns = (uint64_t *)PyMem_Calloc(ncap, sizeof(uint64_t));
    if (!ns) {
        PyErr_NoMemory();
        return -1;
    }
    if ((ncap / 2 + 1) * sizeof(Entry) > t->entries_size) {
        size_t size = (ncap / 2 + 1) * sizeof(Entry);
        Entry *ne = (Entry *)PyMem_Realloc(t->entries, size);
        if (!ne) {
            PyMem_Free(ns);
            PyErr_NoMemory();
            return -1;
        }
        t->entries = ne;
        t->entries_size = size;
    }
    Entry *ne = t->entries;
    t->entries_cap = ncap / 2 + 1;
    for (size_t code = 0; code < used; code++) {
        uint64_t h = ne[code].hash;
        size_t j = h & (ncap - 1);
        while (ns[j]) j = (j + 1) & (ncap - 1);
        ns[j] = (h >> 32 << 32) | (uint64_t)(code + 1);
    }
    PyMem_Free(t->slots);
    t->slots = ns;
    t->slots_size = ncap * sizeof(uint64_t);
    t->cap = ncap;
    return 0;
}

static inline int is_ascii(const char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    uint64_t acc = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, s + i, 8);
        acc |= v;
    }
    for (; i < n; i++) acc |= (unsigned char)s[i];
    return !(acc & HIGHS);
}

/* Whether the string is the value of ``last`` (a code, or -1). */
static inline int is_last(const Interner *t, Py_ssize_t last, const char *s, Py_ssize_t n) {
    if (last < 0) return 0;
    const Entry *le = &t->entries[last];
    return le->len == n && same_bytes(le->ptr, s, (size_t)n);
}

/* The code of the string (valid UTF-8, no lone surrogates), adding it to the table when new; -2 on error.
 * ``*last``: the code the caller's field had last time (checked first; updated), or -1. ``in_data``: s points
 * into the scanned data (alive for the call), not into the scratch buffer. ``hash``: NULL, or the string's
 * hash_bytes when the caller has found it is not the last value already (see prefetch_slot). */
static inline int32_t intern(Interner *t, Py_ssize_t *last, const char *s, Py_ssize_t n, int in_data,
                      const uint64_t *hash) {
    /* the previous value again (service names, environments, routes...): no hashing */
    if (!hash && is_last(t, *last, s, n)) return (int32_t)*last;
    uint64_t h = hash ? *hash : hash_bytes(s, (size_t)n);
    uint64_t tag = h >> 32 << 32;
    size_t mask = t->cap - 1;
    size_t j = h & mask;
    for (;;) {
        uint64_t sl = t->slots[j];
        if (!sl) break;
        if ((sl & 0xFFFFFFFF00000000ull) == tag) {
            Py_ssize_t code = (Py_ssize_t)(sl & 0xFFFFFFFFu) - 1;
            const Entry *e = &t->entries[code];
            if (e->len == n && same_bytes(e->ptr, s, (size_t)n)) {
                *last = code;
                return (int32_t)code;
            }
        }
        j = (j + 1) & mask;
    }
    PyObject *str;
    const char *ptr = s;
    if (t->lazy && in_data) {
        str = NULL; /* valid UTF-8 (the block's rule): its str is made when read */
    } else if (is_ascii(s, n)) {
        str = PyUnicode_New(n, 127);
        if (!str) return -2;
        memcpy(PyUnicode_DATA(str), s, (size_t)n);
        if (!in_data) ptr = (const char *)PyUnicode_DATA(str);
    } else {
        str = PyUnicode_DecodeUTF8(s, n, "strict");
        if (!str) return -2;
        if (!in_data) {
            Py_ssize_t ulen;
            ptr = PyUnicode_AsUTF8AndSize(str, &ulen);
            if (!ptr || ulen != n) {
                Py_DECREF(str);
                return -2;
            }
        }
    }
    Py_ssize_t code = (Py_ssize_t)t->used;
    if (code >= INT32_MAX - 1) {
        Py_XDECREF(str);
        PyErr_SetString(PyExc_OverflowError, "too many distinct strings in one block");
        return -2;
    }
    Entry *e = &t->entries[code];
    e->hash = h;
    e->ptr = ptr;
    e->len = n;
    e->obj = str;
    t->used++;
    t->slots[j] = tag | (uint64_t)(code + 1);
    *last = code;
    if ((size_t)(code + 1) * 2 > t->cap && interner_grow(t) < 0) return -2;
    return (int32_t)code;
}

/* ---- the bytes -------------------------------------------------------------------------------------- */
typedef const unsigned char *cp;

/* character classes for the string scan: 1 for '"', '\\' and control characters */
static unsigned char str_stop[256];

/* 1 for the whitespace JSON allows inside a line (space, tab, CR): a table is one load and test where the
 * three comparisons were several instructions at each of the four places a key and its value pass */
static unsigned char ws[256];
/* 1 for those and 'n': what a value may start with other than its own first byte (whitespace, null) */
static unsigned char ws_or_n[256];
/* '\n' is never skipped: it ends the line and stops every scan (a sentinel) */
#define SKIP_WS(p) while (ws[*(p)]) (p)++

static inline uint64_t has_zero(uint64_t v) { return (v - ONES) & ~v & HIGHS; }

/* The first '"', '\\' or control character at or after p, a byte of a line: the line's '\n' stops the scan
 * at the latest, and the lowest flagged byte of a vector is exact, whatever the bytes after it. With SSE2,
 * 16 bytes at a time without a bound (LINE_PAD bytes past the '\n' are readable); else 8 at a time up to
 * ``limit``. */
#if defined(__SSE2__)
/* bit i: byte i of v is '"', '\\' or a control character */
static inline unsigned stop_mask(__m128i v) {
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1F);
    __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                             _mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v)); /* v <= 0x1F */
    return (unsigned)_mm_movemask_epi8(m);
}
#endif

static inline cp scan_plain(cp p, cp limit) {
#if defined(__SSE2__)
    (void)limit;
    for (;;) {
        unsigned mask = stop_mask(_mm_loadu_si128((const __m128i *)p));
        if (mask) return p + __builtin_ctz(mask);
        p += 16;
    }
#else
    while (p + 8 <= limit) {
        uint64_t v;
        memcpy(&v, p, 8);
        uint64_t stop = has_zero(v ^ (ONES * '"')) | has_zero(v ^ (ONES * '\\')) |
                        ((v - ONES * 0x20) & ~v & HIGHS);
        if (stop) return p + (__builtin_ctzll(stop) >> 3);
        p += 8;
    }
    while (!str_stop[*p]) p++;
    return p;
#endif
}

/* A decoded string: its UTF-8 bytes (in the line or in the scratch buffer). */
typedef struct {
    const char *ptr;
    Py_ssize_t len;
    int escaped;
} Str;

/* Parse a JSON string at p (pointing at the opening quote); limit is the data's end. Decodes escapes into
 * *scratch (advanced) when there are any. Returns the position after the closing quote, or NULL. */
static cp parse_escaped(cp s, cp p, Str *out, unsigned char **scratch);

static inline cp parse_string(cp p, cp limit, Str *out, unsigned char **scratch) {
    cp s = ++p;
    p = scan_plain(p, limit);
    if (*p == '"') {
        out->ptr = (const char *)s;
        out->len = p - s;
        out->escaped = 0;
        return p + 1;
    }
    if (*p != '\\') return NULL; /* a control character (the line's '\n' included) */
    return parse_escaped(s, p, out, scratch);
}

/* The rest of a string with escapes (s: its first byte, p: its first backslash), decoded into scratch.
 * With SSE2 the plain bytes are copied 16 at a time, up to 15 bytes written past the decoded ones: the
 * scratch has room (decoded bytes are never more than the raw ones: see scan), and the reads stay within
 * the line's LINE_PAD. */
static __attribute__((noinline)) cp parse_escaped(cp s, cp p, Str *out, unsigned char **scratch) {
    unsigned char *w = *scratch;
    unsigned char *w0 = w;
#if defined(__SSE2__)
    for (cp r = s; r < p; r += 16, w += 16) _mm_storeu_si128((__m128i *)w, _mm_loadu_si128((const __m128i *)r));
    w = w0 + (p - s);
#else
    memcpy(w, s, (size_t)(p - s));
    w += p - s;
#endif
    for (;;) {
        unsigned char c = *p;
        if (c != '\\') {
#if defined(__SSE2__)
            for (;;) { /* the plain bytes up to the next '"', '\\' or control character */
                __m128i v = _mm_loadu_si128((const __m128i *)p);
                _mm_storeu_si128((__m128i *)w, v);
                unsigned mask = stop_mask(v);
                if (mask) {
                    unsigned n = (unsigned)__builtin_ctz(mask);
                    p += n;
                    w += n;
                    break;
                }
                p += 16;
                w += 16;
            }
            c = *p;
#endif
            if (c == '"') break;
            if (c < 0x20) return NULL;
            if (c != '\\') {
                *w++ = c;
                p++;
                continue;
            }
        }
        c = p[1];
        p += 2;
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            uint32_t u = 0;
            for (int i = 0; i < 4; i++) {
                unsigned char h = p[i];
                uint32_t d;
                if (h >= '0' && h <= '9') d = h - '0';
                else if (h >= 'a' && h <= 'f') d = h - 'a' + 10;
                else if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
                else return NULL;
                u = u * 16 + d;
            }
            p += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {
                /* a high surrogate: a low one must follow */
                if (p[0] != '\\' || p[1] != 'u') return NULL;
                uint32_t l = 0;
                for (int i = 0; i < 4; i++) {
                    unsigned char h = p[2 + i];
                    uint32_t d;
                    if (h >= '0' && h <= '9') d = h - '0';
                    else if (h >= 'a' && h <= 'f') d = h - 'a' + 10;
                    else if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
                    else return NULL;
                    l = l * 16 + d;
                }
                if (l < 0xDC00 || l > 0xDFFF) return NULL;
                p += 6;
                u = 0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00);
            } else if (u >= 0xDC00 && u <= 0xDFFF) {
                return NULL; /* a lone low surrogate */
            }
            if (u < 0x80) {
                *w++ = (unsigned char)u;
            } else if (u < 0x800) {
                *w++ = (unsigned char)(0xC0 | (u >> 6));
                *w++ = (unsigned char)(0x80 | (u & 0x3F));
            } else if (u < 0x10000) {
                *w++ = (unsigned char)(0xE0 | (u >> 12));
                *w++ = (unsigned char)(0x80 | ((u >> 6) & 0x3F));
                *w++ = (unsigned char)(0x80 | (u & 0x3F));
            } else {
                *w++ = (unsigned char)(0xF0 | (u >> 18));
                *w++ = (unsigned char)(0x80 | ((u >> 12) & 0x3F));
                *w++ = (unsigned char)(0x80 | ((u >> 6) & 0x3F));
                *w++ = (unsigned char)(0x80 | (u & 0x3F));
            }
            break;
        }
        default:
            return NULL;
        }
    }
    out->ptr = (const char *)w0;
    out->len = w - w0;
    out->escaped = 1;
    *scratch = w;
    return p + 1;
}

/* code points of valid UTF-8 */
static Py_ssize_t code_points(const char *s, Py_ssize_t n) {
    Py_ssize_t cont = 0;
    for (Py_ssize_t i = 0; i < n; i++) cont += ((unsigned char)s[i] & 0xC0) == 0x80;
    return n - cont;
}

static inline int str_is_n(const Str *s, const char *lit, size_t n) {
    return (size_t)s->len == n && memcmp(s->ptr, lit, n) == 0;
}
#define str_is(s, lit) str_is_n((s), (lit), sizeof(lit) - 1)

/* The kind's code (KINDS), or -1. The kinds' names differ in length. */
static inline __attribute__((always_inline)) int8_t kind_of(const Str *s) {
    switch (s->len) {
    case 7: return str_is(s, "request") ? 0 : -1;
    case 2: return str_is(s, "db") ? 1 : -1;
    case 5: return str_is(s, "cache") ? 2 : -1;
    case 8: return str_is(s, "external") ? 3 : -1;
    case 4: return str_is(s, "task") ? 4 : -1;
    case 6: return str_is(s, "metric") ? 5 : -1;
    default: return -1;
    }
}


/* A JSON number token at p. Returns the end, or NULL when it is not strict JSON. *is_int: no fraction
 * and no exponent. */
static cp number_token(cp p, int *is_int) {
    cp q = p;
    if (*q == '-') q++;
    if (*q == '0') {
        q++;
    } else if (*q >= '1' && *q <= '9') {
        while (*q >= '0' && *q <= '9') q++;
    } else {
        return NULL;
    }
    *is_int = 1;
    if (*q == '.') {
        q++;
        if (!(*q >= '0' && *q <= '9')) return NULL;
        while (*q >= '0' && *q <= '9') q++;
        *is_int = 0;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-') q++;
        if (!(*q >= '0' && *q <= '9')) return NULL;
        while (*q >= '0' && *q <= '9') q++;
        *is_int = 0;
    }
    return q;
}

#define IS_DIGIT(c) ((unsigned)((c) - '0') < 10u)

/* An integer token of at most 18 digits: number_token's syntax with neither fraction nor exponent, in one
 * pass (a token with either is no integer: NULL, as a longer one). Inline: the schema's `1` and the status
 * codes cost a call and a second pass over the digits before (about 60 instructions each). */
static inline cp parse_int(cp p, int64_t *out) {
    cp q = p;
    int neg = *q == '-';
    q += neg;
    uint64_t v = 0; /* unsigned: more than 18 digits wrap before they are refused */
    if (*q == '0') {
        q++;
    } else if (IS_DIGIT(*q)) {
        cp d = q;
        do v = v * 10 + (uint64_t)(*q++ - '0');
        while (IS_DIGIT(*q));
        if (q - d > 18) return NULL;
    } else {
        return NULL;
    }
    if (*q == '.' || *q == 'e' || *q == 'E') return NULL;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return q;
}

static const double POW10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The rest of parse_float past the digits (q at the byte after them), out of line: an exponent, more digits
 * than one division makes exact; with Clinger's fast path (the digits an exact integer of a double, at most
 * 2^53, and a power of ten up to 22, exact too: one correctly rounded multiplication or division), else
 * CPython's correctly rounded parser. */
static __attribute__((noinline)) cp parse_float_rest(cp p, cp q, uint64_t mant, int int_digits, int frac, int neg,
                                                     double *out) {
    int exp = 0, eneg = 0, edigits = 0;
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-') eneg = *q++ == '-';
        if (!IS_DIGIT(*q)) return NULL;
        for (; IS_DIGIT(*q); q++, edigits++) {
            if (edigits < 5) exp = exp * 10 + (*q - '0');
        }
    }
    if (q - p > MAX_NUMBER) return NULL;
    if (int_digits + frac <= 19 && mant <= ((uint64_t)1 << 53) && edigits <= 5) {
        int e10 = (eneg ? -exp : exp) - frac;
        if (e10 >= -22 && e10 <= 22) {
            double v = (double)mant;
            v = e10 < 0 ? v / POW10[-e10] : v * POW10[e10];
            *out = neg ? -v : v;
            return q;
        }
    }
    char buf[MAX_NUMBER + 1];
    memcpy(buf, p, (size_t)(q - p));
    buf[q - p] = 0;
    char *e = NULL;
    double v = PyOS_string_to_double(buf, &e, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    if (e != buf + (q - p)) return NULL;
    *out = v;
    return q;
}

/* A number as msgspec reads it into a float field: an integer token as its int converted (so "-0" is
 * 0.0), any other token correctly rounded. One pass checks the token's syntax and gathers its digits (mant:
 * the fraction's included, as one integer; exact while there are at most 19 of them: 10^19 fits in 64 bits).
 * Inline for the writers' numbers (an integer; a fraction without exponent whose digits make an exact
 * double: one correctly rounded division); parse_float_rest for the others. */
static inline __attribute__((always_inline)) cp parse_float(cp p, double *out) {
    cp q = p;
    int neg = *q == '-';
    q += neg;
    uint64_t mant = 0;
    cp digits = q;
    if (*q == '0') {
        q++;
    } else if (IS_DIGIT(*q)) {
        do mant = mant * 10 + (uint64_t)(*q++ - '0');
        while (IS_DIGIT(*q));
    } else {
        return NULL;
    }
    int int_digits = (int)(q - digits), frac = 0;
    if (*q == '.') {
        cp f = ++q;
        if (!IS_DIGIT(*q)) return NULL;
        do mant = mant * 10 + (uint64_t)(*q++ - '0');
        while (IS_DIGIT(*q));
        frac = (int)(q - f);
        if (int_digits + frac <= 19 && mant <= ((uint64_t)1 << 53) && *q != 'e' && *q != 'E') {
            double v = (double)mant / POW10[frac];
            *out = neg ? -v : v;
            return q;
        }
    } else if (*q != 'e' && *q != 'E') {
        /* an integer token */
        if (int_digits > 18) return NULL; /* as parse_int */
        *out = (double)(neg ? -(int64_t)mant : (int64_t)mant);
        return q;
    }
    return parse_float_rest(p, q, mant, int_digits, frac, neg, out);
}

/* Skip any JSON value, validating it. */
static cp skip_value(cp p, cp end, cp limit, int depth, unsigned char *scratch) {
    Str s;
    unsigned char *sc;
    switch (*p) {
    case '"':
        sc = scratch;
        return parse_string(p, limit, &s, &sc);
    case '{':
        if (depth >= MAX_DEPTH) return NULL;
        p++;
        SKIP_WS(p);
        if (*p == '}') return p + 1;
        for (;;) {
            if (*p != '"') return NULL;
            sc = scratch;
            p = parse_string(p, limit, &s, &sc);
            if (!p) return NULL;
            SKIP_WS(p);
            if (*p != ':') return NULL;
            p++;
            SKIP_WS(p);
            p = skip_value(p, end, limit, depth + 1, scratch);
            if (!p) return NULL;
            SKIP_WS(p);
            if (*p == '}') return p + 1;
            if (*p != ',') return NULL;
            p++;
            SKIP_WS(p);
        }
    case '[':
        if (depth >= MAX_DEPTH) return NULL;
        p++;
        SKIP_WS(p);
        if (*p == ']') return p + 1;
        for (;;) {
            p = skip_value(p, end, limit, depth + 1, scratch);
            if (!p) return NULL;
            SKIP_WS(p);
            if (*p == ']') return p + 1;
            if (*p != ',') return NULL;
            p++;
            SKIP_WS(p);
        }
    case 't':
        return (end - p >= 4 && memcmp(p, "true", 4) == 0) ? p + 4 : NULL;
    case 'f':
        return (end - p >= 5 && memcmp(p, "false", 5) == 0) ? p + 5 : NULL;
    case 'n':
        return (end - p >= 4 && memcmp(p, "null", 4) == 0) ? p + 4 : NULL;
    default: {
        int is_int;
        return number_token(p, &is_int);
    }
    }
}

static inline cp literal_null(cp p, cp end) {
    return (end - p >= 4 && memcmp(p, "null", 4) == 0) ? p + 4 : NULL;
}

/* ---- timestamps (parsers.timestamps) ------------------------------------------------------------------- */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static inline int dig(unsigned char c) { return c >= '0' && c <= '9' ? c - '0' : -1; }

/* The epoch of the last minute prefix read (``YYYY-MM-DDTHH:MM``), checked once. */
typedef struct {
    unsigned char prefix[16];
    double base;
    int valid;
} MinuteCache;

static int minute_epoch(const unsigned char *t, double *base);

static __attribute__((noinline)) int read_timestamp_any(const Str *s, double *out, MinuteCache *mc) {
    const unsigned char *t = (const unsigned char *)s->ptr;
    Py_ssize_t n = s->len;
    if (s->escaped || n < 20 || n > 30) return -1;
    if (!(mc->valid && memcmp(t, mc->prefix, 16) == 0)) {
        mc->valid = 0;
        if (minute_epoch(t, &mc->base) < 0) return -1;
        memcpy(mc->prefix, t, 16);
        mc->valid = 1;
    }
    int d1 = dig(t[17]), d2 = dig(t[18]);
    if (t[16] != ':' || d1 < 0 || d2 < 0) return -1;
    int whole = d1 * 10 + d2;
    if (whole > 60) return -1;
    Py_ssize_t i = 19;
    int64_t frac = 0;
    int k = 0;
    if (t[i] == '.') {
        i++;
        while (i < n && dig(t[i]) >= 0) {
            frac = frac * 10 + dig(t[i]);
            k++;
            i++;
        }
        if (k < 1 || k > 9) return -1;
    }
    if (i != n - 1 || t[i] != 'Z') return -1;
    double sec = k ? (double)whole + (double)frac / POW10[k] : (double)whole;
    *out = mc->base + sec;
    return 0;
}

/* The timestamp as read_timestamp_any reads it, inline for the writers' form (milliseconds: 24 bytes, a
 * minute already seen): the same checks and the same arithmetic, so the same double; any other form the
 * general way. About 110 instructions -> 40 per line. */
static inline int read_timestamp(const Str *s, double *out, MinuteCache *mc) {
    const unsigned char *t = (const unsigned char *)s->ptr;
    if (s->len == 24 && !s->escaped && mc->valid && t[16] == ':' && t[19] == '.' && t[23] == 'Z' &&
        memcmp(t, mc->prefix, 16) == 0) {
        unsigned d1 = t[17] - '0', d2 = t[18] - '0', f1 = t[20] - '0', f2 = t[21] - '0', f3 = t[22] - '0';
        if (((d1 > 9) | (d2 > 9) | (f1 > 9) | (f2 > 9) | (f3 > 9)) == 0) {
            int whole = (int)(d1 * 10 + d2);
            if (whole > 60) return -1;
            int64_t frac = (int64_t)(f1 * 100 + f2 * 10 + f3);
            *out = mc->base + ((double)whole + (double)frac / POW10[3]);
            return 0;
        }
    }
    return read_timestamp_any(s, out, mc);
}

/* ``YYYY-MM-DDTHH:MM`` (16 bytes) to epoch seconds, as timestamps._minute_epoch checks it. */
static int minute_epoch(const unsigned char *t, double *base) {
    static const unsigned char SEP[16] = {0, 0, 0, 0, '-', 0, 0, '-', 0, 0, 'T', 0, 0, ':', 0, 0};
    int v[16];
    for (int i = 0; i < 16; i++) {
        if (SEP[i]) {
            if (t[i] != SEP[i]) return -1;
        } else if ((v[i] = dig(t[i])) < 0) {
            return -1;
        }
    }
    int year = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3];
    int month = v[5] * 10 + v[6], day = v[8] * 10 + v[9];
    int hour = v[11] * 10 + v[12], minute = v[14] * 10 + v[15];
    if (!(1 <= month && month <= 12 && hour <= 23 && minute <= 59 && year >= 1970)) return -1;
    static const int MDAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int mdays = MDAYS[month - 1] + (month == 2 && leap);
    if (day < 1 || day > mdays) return -1;
    *base = (double)(days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60);
    return 0;
}

/* ---- one event line ----------------------------------------------------------------------------------- */
typedef struct {
    int8_t kind, outcome, cache_hit, task_state, metric_type;
    int16_t status;
    double ts, duration, queue_wait, metric_value;
    Str strs[N_STR];
    uint32_t has_str; /* bit f: strs[f] is set */
    uint32_t hashed;  /* bit f: hash[f] is strs[f]'s hash_bytes, and strs[f] is not field f's last value */
    int32_t parent_code; /* the code of parent_span_id when it is the previous line's span id, else -1 */
    uint64_t hash[N_STR];
    PyObject *tags; /* new reference or NULL */
} Row;

static int metric_name_ok(const Str *s) {
    if (s->len < 1 || s->len > 200) return 0;
    unsigned char c = (unsigned char)s->ptr[0];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) return 0;
    for (Py_ssize_t i = 1; i < s->len; i++) {
        c = (unsigned char)s->ptr[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.'))
            return 0;
    }
    return 1;
}

/* metric.tags: a flat object of str -> str (values at most MAX_STR code points), no key twice. */
static cp parse_tags(cp p, cp limit, unsigned char *scratch, PyObject **out) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    p++;
    SKIP_WS(p);
    if (*p == '}') {
        *out = d;
        return p + 1;
    }
    for (;;) {
        Str k, v;
        unsigned char *sc = scratch;
        if (*p != '"') goto fail;
        p = parse_string(p, limit, &k, &sc);
        if (!p) goto fail;
        SKIP_WS(p);
        if (*p != ':') goto fail;
        p++;
        SKIP_WS(p);
        if (*p != '"') goto fail;
        p = parse_string(p, limit, &v, &sc);
        if (!p) goto fail;
        if (v.len > MAX_STR && code_points(v.ptr, v.len) > MAX_STR) goto fail;
        PyObject *ko = PyUnicode_DecodeUTF8(k.ptr, k.len, "strict");
        if (!ko) goto fail;
        PyObject *vo = PyUnicode_DecodeUTF8(v.ptr, v.len, "strict");
        if (!vo) {
            Py_DECREF(ko);
            goto fail;
        }
        Py_ssize_t before = PyDict_GET_SIZE(d);
        int rc = PyDict_SetItem(d, ko, vo);
        Py_DECREF(ko);
        Py_DECREF(vo);
        if (rc < 0 || PyDict_GET_SIZE(d) != before + 1) goto fail;
        SKIP_WS(p);
        if (*p == '}') break;
        if (*p != ',') goto fail;
        p++;
        SKIP_WS(p);
    }
    *out = d;
    return p + 1;
fail:
    Py_DECREF(d);
    return NULL;
}

static double quiet_nan(void) {
    uint64_t bits = 0x7FF8000000000000ull;
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

/* Whether the n bytes at s (16 or 32: a span or trace id) are printable ASCII but '"' and '\\', and s[n] is
 * '"': then they are the whole string, n code points, without escapes; else the general path decides (a
 * non-ASCII id of n code points, an escaped one, a wrong length). Ids are not read as hex: the schema
 * requires their length alone. One vector step per 16 bytes: a signed
 * comparison with 0x20 flags the control characters and every byte >= 0x80 at once. */
static inline int plain_id(cp s, Py_ssize_t n) {
    if (s[n] != '"') return 0; /* s is in the line, n <= 32: readable (LINE_PAD) */
#if defined(__SSE2__)
    const __m128i space = _mm_set1_epi8(0x20), quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    __m128i bad = _mm_setzero_si128();
    for (Py_ssize_t i = 0; i < n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
        bad = _mm_or_si128(bad, _mm_or_si128(_mm_cmplt_epi8(v, space),
                                             _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash))));
    }
    return _mm_movemask_epi8(bad) == 0;
#else
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < 0x20 || s[i] >= 0x80 || s[i] == '"' || s[i] == '\\') return 0;
    }
    return 1;
#endif
}

/* The string tables and each field's last code, for prefetch_slot. */
typedef struct {
    Interner *tables;
    Py_ssize_t *last;
} Coding;

/* Ids (trace, span): a new value is looked up in a table of about one entry per line (span ids), which is
 * larger than the L2 cache: the slot is a cache miss. When the value is not the field's last one, its hash is
 * taken now and its slot fetched while the rest of the line is parsed (the line is interned after it). */
static inline __attribute__((always_inline)) void prefetch_slot(const Coding *coding, Row *row, int f) {
    const Interner *t = &coding->tables[table_of(f)];
    const Str *o = &row->strs[f];
    if (is_last(t, coding->last[f], o->ptr, o->len)) return;
    /* a parent is nearly always the span of the line before (the writers log a span's children after it:
     * 7,255 of 7,257 parents in the benchmark log's first 8 MB): its code is that span's, without a look-up
     * (whose slot, in a table of one entry per line, is a cache miss) */
    if (f == S_PARENT_SPAN_ID && is_last(t, coding->last[S_SPAN_ID], o->ptr, o->len)) {
        row->parent_code = (int32_t)coding->last[S_SPAN_ID];
        return;
    }
    uint64_t h = hash_bytes(o->ptr, (size_t)o->len);
    row->hash[f] = h;
    row->hashed |= 1u << f;
    __builtin_prefetch(&t->slots[h & (t->cap - 1)]);
}

/* Parse one line [p, end) (p at '{', end at its '\n') into row. 0 on success, -1 when it is not an
 * event this scanner is sure of. Strings with escapes are decoded into scratch. limit: the end of the
 * readable bytes, at least LINE_PAD past end. Out of line, intern inline:
 * the layout 6cc7966 measured (when scan() grew, gcc had inlined this one into it and called intern). */
static inline __attribute__((always_inline)) int parse_line_body(cp p, cp end, cp limit, Row *row,
                                                                 unsigned char *scratch, double past,
                                                                 double future, int (*pred)[N_KEYS + 2], MinuteCache *mc,
                                                                 const Coding *coding) {
    uint64_t seen = 0, nulls = 0; /* keys read; those of them null */
    int prev = N_KEYS;
    int *pk = pred[0]; /* the predictions of the line's kind (none known yet: row 0) */
    double nan = quiet_nan();
    row->kind = -1;
    row->outcome = row->cache_hit = row->task_state = row->metric_type = -1;
    row->status = -1;
    row->duration = row->queue_wait = row->metric_value = nan;
    row->has_str = 0;
    row->hashed = 0;
    row->parent_code = -1;
    row->tags = NULL;
    unsigned char *tmp = scratch + (end - p) + 8; /* beyond any decoded string of this line */

    p++;
    SKIP_WS(p);
    if (*p != '"') goto fail;
    int k;
    goto key;
    for (;;) {
        /* p past a value. The writers' separator and the key that followed this one last time (writers keep
         * an order), `,"name":`, compared in place at once */
        k = pk[prev];
        if (k >= 0 && predicted_entry(k, p, end)) {
            p += key_len[k] + 4; /* past the colon */
        } else {
            SKIP_WS(p);
            if (*p == ',') {
                p++;
                SKIP_WS(p);
                if (*p != '"') goto fail;
            } else {
                if (*p != '}') goto fail;
                p++;
                break;
            }
        key:;
            /* the key: raw bytes, no escapes */
            cp ks = ++p;
            k = pk[prev];
            if (k >= 0 && predicted_key(k, ks, end)) {
                p = ks + key_len[k] + 2; /* past the colon */
            } else {
                p = scan_plain(p, limit);
                if (*p != '"') goto fail;
                k = find_key(ks, (size_t)(p - ks));
                pk[prev] = k;
                p++;
                SKIP_WS(p);
                if (*p != ':') goto fail;
                p++;
            }
        }
        prev = k >= 0 ? k : N_KEYS + 1;
        if (k < 0) {
            SKIP_WS(p);
            p = skip_value(p, end, limit, 1, tmp);
            if (!p) goto fail;
        } else {
            int type = key_type[k], col = key_col[k];
            if (seen & BIT(k)) goto fail; /* msgspec: the last one wins; here: not sure */
            seen |= BIT(k);
            /* whitespace before the value, or null: one test of the value's first byte */
            if (ws_or_n[*p]) {
                SKIP_WS(p);
                if (*p == 'n') {
                    p = literal_null(p, end);
                    if (!p || k == K_TIMESTAMP || k == K_SCHEMA || k == K_KIND || type == T_REFUSE) goto fail;
                    nulls |= BIT(k);
                    continue;
                }
            }
            {
                Str s;
                int64_t iv;
                double dv;
                switch (type) {
                case T_TIMESTAMP:
                    if (*p != '"' || !(p = parse_string(p, limit, &s, &scratch))) goto fail;
                    if (read_timestamp(&s, &row->ts, mc) < 0) goto fail;
                    if (!(past <= row->ts && row->ts <= future)) goto fail;
                    break;
                case T_SCHEMA:
                    if (!(p = parse_int(p, &iv)) || iv != 1) goto fail;
                    break;
                case T_KIND:
                    if (*p != '"' || !(p = parse_string(p, limit, &s, &scratch))) goto fail;
                    if ((row->kind = kind_of(&s)) < 0) goto fail;
                    pk = pred[row->kind + 1];
                    break;
                case T_DURATION:
                    if (!(p = parse_float(p, &dv)) || !(dv >= 0.0 && dv <= MAX_DURATION_MS)) goto fail;
                    row->duration = dv;
                    break;
                case T_QUEUE:
                    if (!(p = parse_float(p, &dv)) || !(dv >= 0.0 && dv <= FINITE)) goto fail;
                    row->queue_wait = dv;
                    break;
                case T_METRIC_VALUE:
                    if (!(p = parse_float(p, &dv)) || !(dv >= -FINITE && dv <= FINITE)) goto fail;
                    row->metric_value = dv;
                    break;
                case T_OUTCOME:
                    if (*p != '"' || !(p = parse_string(p, limit, &s, &scratch))) goto fail;
                    if (str_is(&s, "success")) row->outcome = 0;
                    else if (str_is(&s, "failure")) row->outcome = 1;
                    else goto fail;
                    break;
                case T_TASK_STATE:
                    if (*p != '"' || !(p = parse_string(p, limit, &s, &scratch))) goto fail;
                    if (str_is(&s, "success")) row->task_state = 0;
                    else if (str_is(&s, "failure")) row->task_state = 1;
                    else if (str_is(&s, "retry")) row->task_state = 2;
                    else goto fail;
                    break;
                case T_METRIC_TYPE:
                    if (*p != '"' || !(p = parse_string(p, limit, &s, &scratch))) goto fail;
                    if (str_is(&s, "count")) row->metric_type = 0;
                    else if (str_is(&s, "gauge")) row->metric_type = 1;
                    else goto fail;
                    break;
                case T_STR: {
                    Str *o = &row->strs[col];
                    if (*p != '"' || !(p = parse_string(p, limit, o, &scratch))) goto fail;
                    if (o->len > MAX_STR && code_points(o->ptr, o->len) > MAX_STR) goto fail;
                    row->has_str |= 1u << col;
                    break;
                }
                case T_STR_V:
                    if (*p != '"' || !(p = parse_string(p, limit, &s, &scratch))) goto fail;
                    if (s.len > MAX_STR && code_points(s.ptr, s.len) > MAX_STR) goto fail;
                    break;
                case T_TRACE:
                case T_SPAN: {
                    Py_ssize_t want = type == T_TRACE ? 32 : 16;
                    Str *o = &row->strs[col];
                    if (*p != '"') goto fail;
                    if (plain_id(p + 1, want)) {
                        o->ptr = (const char *)p + 1;
                        o->len = want;
                        o->escaped = 0;
                        p += want + 2;
                    } else {
                        if (!(p = parse_string(p, limit, o, &scratch))) goto fail;
                        if (o->len < want || o->len > 4 * want) goto fail;
                        /* want code points: want bytes all ASCII, or more bytes counted */
                        if (o->len == want ? !is_ascii(o->ptr, o->len) : code_points(o->ptr, o->len) != want)
                            goto fail;
                    }
                    row->has_str |= 1u << col;
                    prefetch_slot(coding, row, col);
                    break;
                }
                case T_METRIC_NAME:
                    if (*p != '"' || !(p = parse_string(p, limit, &s, &scratch))) goto fail;
                    if (!metric_name_ok(&s)) goto fail;
                    row->strs[col] = s;
                    row->has_str |= 1u << col;
                    break;
                case T_STATUS:
                    if (!(p = parse_int(p, &iv)) || iv < 100 || iv > 599) goto fail;
                    row->status = (int16_t)iv;
                    break;
                case T_INT_GE_M1:
                    if (!(p = parse_int(p, &iv)) || iv < -1) goto fail;
                    break;
                case T_INT_GE0:
                    if (!(p = parse_int(p, &iv)) || iv < 0) goto fail;
                    break;
                case T_INT_ANY:
                    if (!(p = parse_int(p, &iv))) goto fail;
                    break;
                case T_BOOL_HIT:
                    if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
                        row->cache_hit = 1;
                        p += 4;
                    } else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
                        row->cache_hit = 0;
                        p += 5;
                    } else {
                        goto fail;
                    }
                    break;
                case T_TAGS:
                    if (*p != '{' || !(p = parse_tags(p, limit, tmp, &row->tags))) goto fail;
                    break;
                case T_REFUSE:
                    goto fail;
                default:
                    __builtin_unreachable(); /* key_type holds nothing else: no bounds check */
                }
            }
        }
    }
    if (p != end) goto fail; /* anything after the object */
    uint64_t present = seen & ~nulls;
    if ((present & (BIT(K_TIMESTAMP) | BIT(K_SCHEMA) | BIT(K_KIND))) !=
        (BIT(K_TIMESTAMP) | BIT(K_SCHEMA) | BIT(K_KIND)))
        goto fail;
    if ((present & required_mask[row->kind]) != required_mask[row->kind]) goto fail;
    if (row->kind != 5) Py_CLEAR(row->tags);
    return 0;
fail:
    Py_CLEAR(row->tags);
    return -1;
}

#define PARSE_LINE_ARGS                                                                                       \
    cp p, cp end, cp limit, Row *row, unsigned char *scratch, double past, double future,                       \
        int (*pred)[N_KEYS + 2],                                                                               \
        MinuteCache *mc, const Coding *coding
static __attribute__((noinline)) int parse_line_base(PARSE_LINE_ARGS) {
    return parse_line_body(p, end, limit, row, scratch, past, future, pred, mc, coding);
}

/* The same parse compiled for AVX2 with BMI1/2, chosen at import when the CPU has all three (and
 * LOGAPM_SCAN_NO_AVX2 is unset): the vector code in three-operand form (no register copies), shifts by a
 * register without the count in CL; the same results. */
#if defined(HAVE_AVX2_PASS)
static __attribute__((noinline, target("avx2,bmi,bmi2"))) int parse_line_avx2(PARSE_LINE_ARGS) {
    return parse_line_body(p, end, limit, row, scratch, past, future, pred, mc, coding);
}
#endif

static inline int parse_line(PARSE_LINE_ARGS) {
#if defined(HAVE_AVX2_PASS)
    if (use_avx2_parse) return parse_line_avx2(p, end, limit, row, scratch, past, future, pred, mc, coding);
#endif
    return parse_line_base(p, end, limit, row, scratch, past, future, pred, mc, coding);
}

/* ---- the block ---------------------------------------------------------------------------------------- */

/* Strict UTF-8 (as Python's decoder: no overlongs, no surrogates, at most U+10FFFF). */
static int valid_utf8(cp s, size_t n) {
    size_t i = 0;
    while (i < n) {
        while (i + 32 <= n) {
            uint64_t a, b, c2, d;
            memcpy(&a, s + i, 8);
            memcpy(&b, s + i + 8, 8);
            memcpy(&c2, s + i + 16, 8);
            memcpy(&d, s + i + 24, 8);
            if ((a | b | c2 | d) & HIGHS) break;
            i += 32;
        }
        if (i >= n) break; /* the ASCII loop reached the end: s[n] is past the buffer */
        if (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (!(v & HIGHS)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n) return 0;
            unsigned char c1 = s[i + 1], c2 = s[i + 2];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && c1 < 0xA0) return 0;
            if (c == 0xED && c1 > 0x9F) return 0;
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n) return 0;
            unsigned char c1 = s[i + 1], c2 = s[i + 2], c3 = s[i + 3];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80 || (c3 & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && c1 < 0x90) return 0;
            if (c == 0xF4 && c1 > 0x8F) return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

static const unsigned char MARK[] = "apm.schema";

/* ---- the first look at the bytes -----------------------------------------------------------------------
 * The newlines' offsets, no NUL byte, whether any byte is not ASCII: one pass, made a segment at a time just
 * ahead of the parse (see scan), so that the parse reads bytes this pass has just brought into the cache
 * rather than a 4 MB block's bytes again from memory. */
typedef struct {
    uint32_t *at;      /* the newlines' offsets found so far */
    size_t n, cap;
    size_t size;       /* bytes allocated */
} Ends;

static int ends_reserve(Ends *e, size_t more) {
    if (e->n + more <= e->cap) return 0;
    size_t cap = e->cap * 2 + more;
    uint32_t *at = (uint32_t *)PyMem_Realloc(e->at, cap * sizeof(uint32_t));
    if (!at) {
        PyErr_NoMemory();
        return -1;
    }
    e->at = at;
    e->cap = cap;
    e->size = cap * sizeof(uint32_t);
    return 0;
}

/* The newlines of one 64-byte piece (bit i: data[base + i]) appended. */
static inline int push_newlines(Ends *e, uint64_t m, size_t base) {
    if (ends_reserve(e, 64) < 0) return -1;
    uint32_t *at = e->at;
    size_t n = e->n;
    for (; m; m &= m - 1) at[n++] = (uint32_t)(base + (size_t)__builtin_ctzll(m));
    e->n = n;
    return 0;
}

/* How far ahead of itself the pass asks for the bytes (__builtin_prefetch, one cache line per 64 bytes read): the
 * hardware prefetchers stop at every 4 KB page's end, and the pass is the first to read a mapped file's pages
 * (aggregator.sources' read_mapped), from memory, not a copy read() has just made in the cache. 5M-event log,
 * 2-core machine under load from other jobs: the workers' CPU x0.931 and x0.944 (medians of 7 interleaved
 * logapm runs against none), process_part over 16 parts x0.910 mapped and x0.967 read; 1 KB ahead x0.947,
 * 4 KB x0.901, 8 KB x0.917. A prefetch never faults, so asking past the block's end is harmless. */
#define PREFETCH_AHEAD 2048

/* The pass over data[i:to): its newlines appended to e, *high set when a byte is not ASCII. 1 when there is a
 * NUL byte, -1 out of memory, else 0. The vector versions below do 64 bytes at a time and leave the rest
 * (under 64 bytes, at the block's end) to this one. */
static int prepass_bytes(cp data, size_t i, size_t to, Ends *e, int *high) {
    int hi = 0;
    for (; i < to; i++) {
        unsigned char ch = data[i];
        hi |= ch & 0x80;
        if (!ch) return 1;
        if (ch != '\n') continue;
        if (ends_reserve(e, 1) < 0) return -1;
        e->at[e->n++] = (uint32_t)i;
    }
    if (hi) *high = 1;
    return 0;
}

#if defined(__SSE2__)
static int prepass_sse2(cp data, size_t i, size_t to, Ends *e, int *high) {
    const __m128i zero = _mm_setzero_si128(), newline = _mm_set1_epi8('\n');
    /* the NUL and non-ASCII tests accumulated in vectors, read once at the end (as prepass_avx2) */
    __m128i low = _mm_set1_epi8(-1), any = zero;
    for (; i + 64 <= to; i += 64) {
        __builtin_prefetch(data + i + PREFETCH_AHEAD);
        __m128i a = _mm_loadu_si128((const __m128i *)(data + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(data + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(data + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(data + i + 48));
        low = _mm_min_epu8(low, _mm_min_epu8(_mm_min_epu8(a, b), _mm_min_epu8(c, d))); /* a NUL: 0 */
        any = _mm_or_si128(any, _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d)));
        uint64_t m = (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(a, newline)) |
                     (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(b, newline)) << 16 |
                     (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(c, newline)) << 32 |
                     (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(d, newline)) << 48;
        if (m && push_newlines(e, m, i) < 0) return -1;
    }
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(low, zero))) return 1;
    if (_mm_movemask_epi8(any)) *high = 1;
    return prepass_bytes(data, i, to, e, high);
}
#endif

/* AVX2 where the CPU has it (checked at import): the same pass in half the instructions. The function is
 * compiled for AVX2 by its target attribute alone, so the module builds with the compiler's defaults. */
#if defined(HAVE_AVX2_PASS)
__attribute__((target("avx2"))) static int prepass_avx2(cp data, size_t i, size_t to, Ends *e, int *high) {
    const __m256i zero = _mm256_setzero_si256(), newline = _mm256_set1_epi8('\n');
    /* the NUL and non-ASCII tests accumulated in vectors, read once at the end (a NUL gives the whole block
     * up: the newlines past it do no harm) */
    __m256i low = _mm256_set1_epi8(-1), any = zero;
    for (; i + 64 <= to; i += 64) {
        __builtin_prefetch(data + i + PREFETCH_AHEAD);
        __m256i a = _mm256_loadu_si256((const __m256i *)(data + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(data + i + 32));
        low = _mm256_min_epu8(low, _mm256_min_epu8(a, b));
        any = _mm256_or_si256(any, _mm256_or_si256(a, b));
        uint64_t m = (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(a, newline)) |
                     (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(b, newline)) << 32;
        if (m && push_newlines(e, m, i) < 0) return -1;
    }
    if (_mm256_movemask_epi8(_mm256_cmpeq_epi8(low, zero))) return 1;
    if (_mm256_movemask_epi8(any)) *high = 1;
    return prepass_bytes(data, i, to, e, high);
}
#endif

static int prepass(cp data, size_t i, size_t to, Ends *e, int *high) {
#if defined(HAVE_AVX2_PASS)
    if (use_avx2) return prepass_avx2(data, i, to, e, high);
#endif
#if defined(__SSE2__)
    return prepass_sse2(data, i, to, e, high);
#else
    return prepass_bytes(data, i, to, e, high);
#endif
}

/* bytes per segment of the pass: well inside the L2 cache with the parse's own tables (a test build sets
 * 100, so that the tests cross segments everywhere: test_scan.py's test_pass_in_small_segments) */
#ifndef SCAN_SEGMENT
#define SCAN_SEGMENT (128 << 10)
#endif
#define SEGMENT ((size_t)(SCAN_SEGMENT))

/* ---- the columns ---------------------------------------------------------------------------------------- */
typedef struct {
    size_t cap, n;
    size_t filled; /* rows whose codes are -1 so far (see cols_fill) */
    int8_t *kind, *outcome, *cache_hit, *task_state, *metric_type;
    int16_t *status;
    double *ts, *duration, *queue_wait, *metric_value;
    int32_t *codes[N_STR];
} Cols;

#define ROW_BYTES (5 * sizeof(int8_t) + sizeof(int16_t) + 4 * sizeof(double) + N_STR * sizeof(int32_t))

/* Columns for cap rows in a fresh arena (the doubles first, aligned; the narrower ones after), the rows so far
 * copied over; the old arena goes back to the kept ones. The block's line count is not known when its first
 * lines are parsed (the pass is a segment ahead): the first arena is sized from the first segment's lines,
 * and this grows it when the block has more. */
static int cols_alloc(Cols *c, PyObject **arena, size_t cap) {
    PyObject *a = take_arena(cap * ROW_BYTES);
    if (!a) return -1;
    Cols o = *c;
    char *p = PyByteArray_AS_STRING(a);
    size_t n = c->n;
#define PLACE(col, type)                                      \
    c->col = (type *)p;                                       \
    if (n) memcpy(p, o.col, n * sizeof(type));                \
    p += cap * sizeof(type)
    PLACE(ts, double);
    PLACE(duration, double);
    PLACE(queue_wait, double);
    PLACE(metric_value, double);
    for (int f = 0; f < N_STR; f++) {
        PLACE(codes[f], int32_t);
    }
    PLACE(status, int16_t);
    PLACE(kind, int8_t);
    PLACE(outcome, int8_t);
    PLACE(cache_hit, int8_t);
    PLACE(task_state, int8_t);
    PLACE(metric_type, int8_t);
#undef PLACE
    c->cap = cap;
    c->filled = n;
    if (*arena) keep_arena(*arena);
    *arena = a;
    return 0;
}

/* The codes of the next rows (up to `rows` of them, at least one: the caller has room for a row) set to -1,
 * absent until a row sets them: just before those rows are written, a segment's lines at a time, so that the
 * row's writes find the lines in the cache (filled for the whole block first, they were written to memory
 * and read back for each row). */
static void cols_fill(Cols *c, size_t rows) {
    size_t k = c->cap - c->n < rows ? c->cap - c->n : rows;
    for (int f = 0; f < N_STR; f++) memset(c->codes[f] + c->n, 0xFF, k * sizeof(int32_t));
    c->filled = c->n + k;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer buf;
    double past, future;
    Py_ssize_t max_line;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*ddn", &buf, &past, &future, &max_line)) return NULL;

    PyObject *result = NULL, *tags = NULL;
    Interner tables[N_STR];
    int ntables = 0;
    Cols c;
    memset(&c, 0, sizeof(c));
    unsigned char *scratch = NULL;
    unsigned char *tail = NULL; /* the block's end, from tail_from, copied with LINE_PAD bytes after it */
    size_t tail_from = 0;
    PyObject *arena = NULL;
    Ends e = {NULL, 0, 0, 0};
    size_t scratch_size = 0;

    cp data = (cp)buf.buf;
    size_t size = (size_t)buf.len;
    cp data_end = data + size;

    /* block preconditions (LineParser._parse_block) */
    if (size < 2 || data[0] != '{' || data[size - 1] != '\n') goto give_up;
    if (size >= UINT32_MAX) goto give_up;
    e.at = (uint32_t *)take(B_ENDS, (size / 256 + 16) * sizeof(uint32_t), &e.size);
    e.cap = e.size / sizeof(uint32_t);
    if (!e.at) {
        PyErr_NoMemory();
        goto error;
    }

    size_t lines = 0, skipped = 0, plain_skipped = 0, stop = size;
    int stopped = 0; /* a line was declined: the lines after it are checked (the block's rules), not read */
    /* per kind (row 0 before the kind is read), the key that followed each key last time: the writers
     * keep an order per kind (the kinds' own keys follow the common ones) */
    int pred[7][N_KEYS + 2];
    Py_ssize_t last[N_STR]; /* per field: the code of its previous value (span ids: each its own) */
    for (int f = 0; f < N_STR; f++) last[f] = -1;
    memset(pred, 0xFF, sizeof(pred)); /* -1: none yet */
    MinuteCache mc;
    mc.valid = 0;
    Coding coding = {tables, last};
    Row row;
    /* The block's rules (no NUL, valid UTF-8, every line an object shorter than max_line_bytes, no Docker
     * record) hold for the whole block or it is given up, whatever was read before: checked a segment at a
     * time, on the way. */
    size_t scanned = 0; /* bytes passed over */
    size_t checked = 0; /* bytes checked as UTF-8: up to a line's start */
    size_t line = 0;    /* the next line to read */
    int high = 0;       /* a byte past `checked` is not ASCII */
    while (scanned < size) {
        size_t to = size - scanned > SEGMENT ? scanned + SEGMENT : size;
        int rc = prepass(data, scanned, to, &e, &high);
        if (rc > 0) goto give_up;
        if (rc < 0) goto error;
        scanned = to;
        if (e.n == line) continue; /* no line ends in this segment */
        size_t upto = (size_t)e.at[e.n - 1] + 1;
        if (high) {
            /* whole lines: a newline is never inside a UTF-8 sequence */
            if (!valid_utf8(data + checked, upto - checked)) goto give_up;
            high = 0;
            for (size_t j = upto; j < scanned; j++) high |= data[j] & 0x80; /* the next line's start */
        }
        checked = upto;
        if (!arena) {
            /* as many lines as the first segment promises, a few over (more: the columns grow) */
            size_t expect = (size_t)((double)e.n * ((double)size / (double)upto) * 1.0625) + 16;
            if (cols_alloc(&c, &arena, expect) < 0) goto error;
            for (ntables = 0; ntables < N_STR; ntables++) {
                /* ids: about one distinct value per line (span ids) or per few lines (trace ids) */
                size_t ids = ntables == S_SPAN_ID ? expect : ntables == S_TRACE_ID ? expect / 4 : 0;
                if (interner_init(&tables[ntables], ntables, ids) < 0) {
                    ntables++;
                    PyErr_NoMemory();
                    goto error;
                }
                tables[ntables].lazy = ntables == S_SPAN_ID || ntables == S_TRACE_ID;
            }
            tags = PyList_New(0);
            if (!tags) goto error;
        }
        for (; line < e.n; line++) {
            cp p = line ? data + e.at[line - 1] + 1 : data;
            cp nl = data + e.at[line];
            size_t len = (size_t)(nl - p);
            /* every line an object (framing.object_lines), shorter than max_line_bytes, no Docker record */
            if (len < 2 || p[0] != '{' || nl[-1] != '}') goto give_up;
            if ((Py_ssize_t)len >= max_line) goto give_up;
            if (len >= 8 && memcmp(p, "{\"log\":\"", 8) == 0) goto give_up;
            if (stopped) continue;
            /* room for the line's strings decoded (never longer than raw) at scratch, its ignored values' and
             * tags' at scratch + len + 8 (parse_line's tmp), each with a vector step (16 bytes) over */
            if (2 * len + 64 > scratch_size) {
                give(B_SCRATCH, scratch, scratch_size);
                scratch = (unsigned char *)take(B_SCRATCH, 2 * len + 64, &scratch_size);
                if (!scratch) {
                    PyErr_NoMemory();
                    goto error;
                }
            }
            if (c.n == c.cap && cols_alloc(&c, &arena, c.cap + c.cap / 2 + 16) < 0) goto error;
            if (c.n == c.filled) cols_fill(&c, e.n - line);
            /* parse_line reads up to LINE_PAD bytes past a line's '\n': the lines that end closer to the
             * block's end than that are read from a padded copy (their strings stay there for the call) */
            cp lp = p, lnl = nl, llimit = data_end;
            if ((size_t)(data_end - nl) < LINE_PAD) {
                if (!tail) {
                    tail_from = (size_t)(p - data);
                    tail = (unsigned char *)PyMem_Malloc(size - tail_from + LINE_PAD);
                    if (!tail) {
                        PyErr_NoMemory();
                        goto error;
                    }
                    memcpy(tail, p, size - tail_from);
                    memset(tail + (size - tail_from), 0, LINE_PAD);
                }
                lp = tail + ((size_t)(p - data) - tail_from);
                lnl = lp + len;
                llimit = tail + (size - tail_from) + LINE_PAD;
            }
            if (parse_line(lp, lnl, llimit, &row, scratch, past, future, pred, &mc, &coding) < 0) {
                if (PyErr_Occurred()) goto error; /* out of memory building a metric's tags: not a verdict */
                /* not an event: skipped only when the line does not mention the marker at all; a line that
                 * does is declined: the range returned ends before it (the caller has the reference read
                 * it) */
                if (memmem(p, len, MARK, sizeof(MARK) - 1)) {
                    stop = (size_t)(p - data);
                    stopped = 1;
                    continue;
                }
                lines++;
                skipped++;
                if (!memchr(p, '\\', len)) plain_skipped++;
                continue;
            }
            lines++;
            size_t i = c.n++;
            c.kind[i] = row.kind;
            c.ts[i] = row.ts;
            c.duration[i] = row.duration;
            c.outcome[i] = row.outcome;
            c.status[i] = row.status;
            c.cache_hit[i] = row.cache_hit;
            c.task_state[i] = row.task_state;
            c.queue_wait[i] = row.queue_wait;
            c.metric_type[i] = row.metric_type;
            c.metric_value[i] = row.metric_value;
            /* the codes are -1 (absent) until set. The span ids last: their table slots are being fetched
             * (prefetch_slot), the parent's only since the end of the line (the writers put it last); the
             * other fields' tables are their own, so their order does not matter. A span id is coded before
             * its parent: they share a table, whose codes follow the order of first appearance. */
            const uint32_t spans = 1u << S_SPAN_ID | 1u << S_PARENT_SPAN_ID;
            uint32_t m = row.has_str & ~spans, later = row.has_str & spans;
            if (row.parent_code >= 0) { /* the previous line's span id (prefetch_slot): its code */
                later &= ~(1u << S_PARENT_SPAN_ID);
                c.codes[S_PARENT_SPAN_ID][i] = row.parent_code;
                last[S_PARENT_SPAN_ID] = row.parent_code;
            }
            for (;;) {
                if (!m) {
                    if (!later) break;
                    m = later;
                    later = 0;
                }
                int f = __builtin_ctz(m);
                m &= m - 1;
                int32_t code = intern(&tables[table_of(f)], &last[f], row.strs[f].ptr, row.strs[f].len,
                                      !row.strs[f].escaped, row.hashed >> f & 1 ? &row.hash[f] : NULL);
                if (code < 0) {
                    Py_CLEAR(row.tags);
                    goto error;
                }
                c.codes[f][i] = code;
            }
            if (row.kind == 5) {
                PyObject *t = row.tags ? row.tags : Py_None;
                int rc2 = PyList_Append(tags, t);
                Py_CLEAR(row.tags);
                if (rc2 < 0) goto error;
            }
        }
    }
    /* The block-level rules below hold for the range returned, data[:stop] (the reference reads it alone).
     * An unmarked line that is an event with escaped keys ("apm\u002eschema") would be an event to
     * msgspec when every line of the block decodes: be sure some skipped line is plainly no event. */
    if (skipped && !plain_skipped) goto give_up;
    /* No event at all in a block of {"log": ...} records: the reference unwraps them. */
    if (!c.n && stop >= 7 && memcmp(data, "{\"log\":", 7) == 0) goto give_up;
    if (!arena) goto give_up; /* never: the block ends with a newline, so some segment ends a line */

    {
        const char *base = PyByteArray_AS_STRING(arena);
        /* where each column starts in the arena: the numeric ones in columns.NUMERIC_FIELDS' order, then the
         * codes in STRING_FIELDS' order */
        const void *starts[10 + N_STR] = {c.kind, c.ts, c.duration, c.outcome, c.status, c.cache_hit,
                                          c.task_state, c.queue_wait, c.metric_type, c.metric_value};
        for (int f = 0; f < N_STR; f++) starts[10 + f] = c.codes[f];
        PyObject *offsets = PyTuple_New(10 + N_STR), *tabs = PyTuple_New(N_STR);
        if (!offsets || !tabs) {
            Py_XDECREF(offsets);
            Py_XDECREF(tabs);
            goto error;
        }
        for (int i = 0; i < 10 + N_STR; i++) {
            PyObject *o = PyLong_FromSsize_t((const char *)starts[i] - base);
            if (!o) {
                Py_DECREF(offsets);
                Py_DECREF(tabs);
                goto error;
            }
            PyTuple_SET_ITEM(offsets, i, o);
        }
        for (int f = 0; f < N_STR; f++) {
            int rc = table_of(f) == f ? interner_list(&tables[f]) : 0;
            if (rc) {
                Py_DECREF(offsets);
                Py_DECREF(tabs);
                if (rc > 0) goto give_up; /* the bytes changed while read */
                goto error;
            }
        }
        for (int f = 0; f < N_STR; f++) {
            PyObject *t = tables[table_of(f)].list;
            Py_INCREF(t);
            PyTuple_SET_ITEM(tabs, f, t);
        }
        result = Py_BuildValue("(nnnONNNn)", (Py_ssize_t)lines, (Py_ssize_t)skipped, (Py_ssize_t)c.n, arena,
                               offsets, tabs, tags, (Py_ssize_t)stop);
        tags = NULL; /* stolen by "N" */
    }
    goto done;

give_up:
    result = Py_None;
    Py_INCREF(result);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(tags);
    for (int i = 0; i < ntables; i++) interner_free(&tables[i]);
    PyMem_Free(tail); /* after the tables: their entries may point into it */
    if (arena) keep_arena(arena);
    give(B_SCRATCH, scratch, scratch_size);
    give(B_ENDS, e.at, e.size);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(data, past_limit, future_limit, max_line_bytes) -> (lines, skipped, n, arena, offsets, tables, tags, "
     "stop) | None: see the top of parsers/_scan.c and parsers/scan.py (stop: the offset where the range read "
     "ends, len(data) or the start of a declined line)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "parsers._scan",
                                    "Native strict scanner of event lines into columns (see parsers/scan.py).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__scan(void) {
#if defined(HAVE_AVX2_PASS)
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") && getenv("LOGAPM_SCAN_NO_AVX2") == NULL;
    /* every CPU with AVX2 has BMI1/2, but a virtual machine may hide them */
    use_avx2_parse = use_avx2 && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
#endif
    for (int i = 0; i < 256; i++) {
        str_stop[i] = i < 0x20 || i == '"' || i == '\\';
        ws[i] = i == ' ' || i == '\t' || i == '\r';
        ws_or_n[i] = ws[i] || i == 'n';
    }
    for (int i = 0; i < KEY_BUCKETS; i++) key_head[i] = -1;
    for (int k = 0; k < N_KEYS; k++) {
        key_len[k] = strlen(KEYS[k].name);
        if (key_len[k] + 4 > sizeof(key_entry[k])) {
            PyErr_SetString(PyExc_ImportError, "parsers._scan: a key name is too long");
            return NULL;
        }
        memcpy(key_name[k], KEYS[k].name, key_len[k]);
        key_name[k][key_len[k]] = '"';
        key_name[k][key_len[k] + 1] = ':';
        key_need[k] = (uint32_t)((1ull << (key_len[k] + 2)) - 1);
        key_type[k] = (uint8_t)KEYS[k].type;
        key_col[k] = (int8_t)KEYS[k].col;
        key_entry[k][0] = ',';
        key_entry[k][1] = '"';
        memcpy(key_entry[k] + 2, key_name[k], key_len[k] + 2);
        entry_need[k] = (uint32_t)((1ull << (key_len[k] + 4)) - 1);
    }
    for (int k = N_KEYS - 1; k >= 0; k--) {
        const unsigned char *s = (const unsigned char *)KEYS[k].name;
        unsigned h = key_hash(s, strlen(KEYS[k].name));
        key_next[k] = key_head[h];
        key_head[h] = k;
    }
    for (int kind = 0; kind < 6; kind++) {
        required_mask[kind] = 0;
        for (int j = 0; REQUIRED_NAMES[kind][j]; j++) {
            int k = find_key((const unsigned char *)REQUIRED_NAMES[kind][j], strlen(REQUIRED_NAMES[kind][j]));
            if (k < 0) {
                PyErr_SetString(PyExc_ImportError, "parsers._scan: a required field is no key");
                return NULL;
            }
            required_mask[kind] |= BIT(k);
        }
    }
    if (PyType_Ready(&StringsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&StringsType);
    if (PyModule_AddObject(m, "Strings", (PyObject *)&StringsType) < 0) {
        Py_DECREF(&StringsType);
        Py_DECREF(m);
        return NULL;
    }
    /* the tables the tests hold against parsers.event and parsers.columns */
    PyObject *fields = PyTuple_New(N_STR), *keys = PyDict_New(), *req = PyDict_New();
    if (!fields || !keys || !req) goto fail;
    for (int f = 0; f < N_STR; f++) PyTuple_SET_ITEM(fields, f, PyUnicode_FromString(STRING_FIELDS[f]));
    for (int k = 0; k < N_KEYS; k++) {
        PyObject *v = PyUnicode_FromString(KEYS[k].attr);
        if (!v || PyDict_SetItemString(keys, KEYS[k].name, v) < 0) {
            Py_XDECREF(v);
            goto fail;
        }
        Py_DECREF(v);
    }
    for (int kind = 0; kind < 6; kind++) {
        int nreq = 0;
        while (REQUIRED_NAMES[kind][nreq]) nreq++;
        PyObject *t = PyTuple_New(nreq);
        if (!t) goto fail;
        for (int j = 0; j < nreq; j++) {
            int k = find_key((const unsigned char *)REQUIRED_NAMES[kind][j], strlen(REQUIRED_NAMES[kind][j]));
            PyTuple_SET_ITEM(t, j, PyUnicode_FromString(KEYS[k].attr));
        }
        if (PyDict_SetItemString(req, KINDS[kind], t) < 0) {
            Py_DECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    if (PyModule_AddObject(m, "STRING_FIELDS", fields) < 0) goto fail;
    fields = NULL;
    if (PyModule_AddObject(m, "KEYS", keys) < 0) goto fail;
    keys = NULL;
    if (PyModule_AddObject(m, "REQUIRED_BY_KIND", req) < 0) goto fail;
    req = NULL;
    if (PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "SEGMENT", (long)SEGMENT) < 0) goto fail;
#if defined(HAVE_AVX2_PASS)
    if (PyModule_AddIntConstant(m, "AVX2", use_avx2) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "AVX2_PARSE", use_avx2_parse) < 0) goto fail;
#else
    if (PyModule_AddIntConstant(m, "AVX2", 0) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "AVX2_PARSE", 0) < 0) goto fail;
#endif
    return m;
fail:
    Py_XDECREF(fields);
    Py_XDECREF(keys);
    Py_XDECREF(req);
    Py_DECREF(m);
    return NULL;
}
