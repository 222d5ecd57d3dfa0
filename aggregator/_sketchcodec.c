/* aggregator._sketchcodec: the sketch's stored form (form 2) in C (optional: built when a compiler is there).
 *
 * Form 2 (``aggregator.sketch``'s docstring has the trade-offs; the Python twin there writes and reads the same
 * bytes, and tests/aggregator/test_sketch_codec.py holds the two to each other):
 *
 *   u8 2                  the form; a zlib stream (form 1) starts with 0x78, the quick form with 0
 *   u8 flags              bit 0: the accuracy is not 0.01 and follows; any other bit set is an error
 *   [f64 accuracy]
 *   f64 min, f64 max      little-endian IEEE
 *   varint zero count     LEB128, at most 64 bits, no redundant last byte (one way to write each number)
 *   the positive store, then the negative one, each:
 *     varint n            its buckets from the first to the last non-zero one; 0: empty, nothing follows
 *     varint offset       the first bucket's key, zigzag coded; within int32 (form 1's range)
 *     u8 w                bits per count, 0..64
 *     bitmap              ceil(n / 8) bytes: bit i (byte i / 8, bit i % 8) set = bucket offset + i is not zero;
 *                         bits 0 and n - 1 are set, the bits past n are 0
 *     counts              ceil(k w / 8) bytes, k the bits set: each non-zero count minus 1 in w bits, least
 *                         significant bit first, one after another; w is the bit length of the largest; the
 *                         bits past k w are 0
 *   u32 CRC-32          zlib's crc32 of every byte before it, little-endian (form 1 had zlib's adler32)
 *
 * A count is the int64 a store holds, coded as the uint64 of the same bits (a count past 2**63 that form 1's
 * uint64 held decodes to the same negative int64 that form 1's reader gives). Every sketch has exactly one
 * form 2 (the decoder refuses any other bytes), so decoding then encoding gives the bytes back.
 *
 * Functions (ValueError for bytes that are not what they should be; aggregator.sketch raises SketchError):
 *   encode(accuracy, min, max, zeros, pos_offset, pos_counts, neg_offset, neg_counts) -> bytes
 *       the counts: C-contiguous buffers of native int64 (a store's ``counts``), trimmed here
 *   encode_quick(quick) -> bytes       the form 2 of a quick form (b"\0" + form 1's body), not decoded to objects
 *   decode(data) -> (accuracy, min, max, zeros, pos_offset, pos_counts, neg_offset, neg_counts)
 *       form 2 only; the counts a bytearray of native int64 (empty for an empty store, offset 0)
 *   merge_quick(blobs) -> bytes | None | NotImplemented
 *       aggregator.sketch's ``merged_quick`` on quick forms (a list of bytes): the quick form of their sum, the
 *       same bytes; None where that declines (a form it does not take); NotImplemented where Python must
 *       decide (a zero count past 64 bits: its struct raises)
 *   decode_many(blobs, inflate) -> (meta, counts)
 *       for alerting.columns: per blob (form 2, quick, or form 1's zlib stream, which ``inflate`` turns into
 *       form 1's body) 8 native 8-byte fields in ``meta``: accuracy, min, max (f64), zero count (u64), the
 *       positive store's offset, its length, the negative store's length and where its counts start in
 *       ``counts`` (i64); ``counts`` every positive store's counts (int64), one after another.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FORM2 2
#define FLAG_ACCURACY 1
#define DEFAULT_ACCURACY 0.01
#define V1_HEADER 34 /* form 1's body: <BBdddQ: version, flags, accuracy, min, max, zero count */
#define V1_STORE 9   /* then per store <iIB: offset, length, count width code */

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static double le_double(const unsigned char *p) {
    uint64_t bits = le64(p);
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

static unsigned char *put_double(unsigned char *p, double d) {
    uint64_t bits;
    memcpy(&bits, &d, 8);
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(bits >> (8 * i));
    return p + 8;
}

static int varint_size(uint64_t v) {
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static unsigned char *put_varint(unsigned char *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

static int bad(const char *what) {
    PyErr_SetString(PyExc_ValueError, what);
    return -1;
}

/* The varint at *p (before end), moving *p past it; -1 with ValueError if there is none. */
static int get_varint(const unsigned char **p, const unsigned char *end, uint64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    const unsigned char *q = *p;
    for (;;) {
        if (q >= end) return bad("truncated sketch");
        unsigned b = *q++;
        if (shift == 63 && b > 1) return bad("corrupt sketch: a number past 64 bits");
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            if (b == 0 && shift) return bad("corrupt sketch: a number with a redundant byte");
            break;
        }
        shift += 7;
    }
    *p = q;
    *out = v;
    return 0;
}

/* CRC-32 (zlib's crc32: reflected, polynomial 0xEDB88320), a table of 4 x 256 filled at import: four bytes a step. */
static uint32_t crc_table[4][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 4; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = crc_table[0][crc_table[t - 1][i] & 0xff] ^ (crc_table[t - 1][i] >> 8);
}

static uint32_t crc32_of(const unsigned char *p, Py_ssize_t len) {
    uint32_t c = 0xFFFFFFFFu;
    for (; len >= 4; len -= 4, p += 4) {
        c ^= le32(p);
        c = crc_table[3][c & 0xff] ^ crc_table[2][(c >> 8) & 0xff] ^ crc_table[1][(c >> 16) & 0xff] ^
            crc_table[0][c >> 24];
    }
    for (; len > 0; len--) c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static int pop8(unsigned b) {
    b = b - ((b >> 1) & 0x55);
    b = (b & 0x33) + ((b >> 2) & 0x33);
    return (int)((b + (b >> 4)) & 0x0f);
}

/* --- encoding ---------------------------------------------------------------------------------------------- */

typedef struct {
    const int64_t *counts; /* from the first non-zero count */
    Py_ssize_t n, k;       /* buckets (0: empty store), non-zero ones */
    int w;
    int64_t offset;
} plan_t;

/* What a store of ``len`` counts from key ``offset`` writes; -1 with OverflowError for an offset past int32. */
static int plan(const int64_t *counts, Py_ssize_t len, int64_t offset, plan_t *pl) {
    Py_ssize_t lo = 0, hi = len - 1;
    pl->n = 0;
    while (lo < len && counts[lo] == 0) lo++;
    if (lo == len) return 0;
    while (counts[hi] == 0) hi--;
    uint64_t any = 0;
    Py_ssize_t k = 0;
    /* Without a branch per bucket: which buckets are empty is data, and most real windows' are mixed. */
    for (Py_ssize_t i = lo; i <= hi; i++) {
        uint64_t set = counts[i] != 0;
        any |= ((uint64_t)counts[i] - 1) & (0 - set);
        k += (Py_ssize_t)set;
    }
    int w = 0;
    while (w < 64 && any >> w) w++;
    int64_t first = offset > INT32_MAX ? offset : offset + (int64_t)lo; /* (no overflow) */
    if (first < INT32_MIN || first > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a sketch's first bucket key must be within int32");
        return -1;
    }
    pl->counts = counts + lo;
    pl->n = hi - lo + 1;
    pl->k = k;
    pl->w = w;
    pl->offset = first;
    return 0;
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static Py_ssize_t store_size(const plan_t *pl) {
    if (!pl->n) return 1;
    return varint_size((uint64_t)pl->n) + varint_size(zigzag(pl->offset)) + 1 + (pl->n + 7) / 8 +
           (pl->k * pl->w + 7) / 8;
}

static unsigned char *put_store(unsigned char *p, const plan_t *pl) {
    if (!pl->n) {
        *p++ = 0;
        return p;
    }
    Py_ssize_t n = pl->n;
    int w = pl->w;
    const int64_t *c = pl->counts;
    p = put_varint(p, (uint64_t)n);
    p = put_varint(p, zigzag(pl->offset));
    *p++ = (unsigned char)w;
    /* 64 buckets at a time: their bitmap word and their non-zero counts less 1, gathered without a branch per
     * bucket (which buckets are empty is data, and most real windows' are mixed), then packed. */
    unsigned char *map = p;
    p += (n + 7) / 8;
    uint64_t acc = 0, gathered[64]; /* ``acc``: the bits not yet written, ``held`` of them (< 64) */
    int held = 0;
    for (Py_ssize_t base = 0; base < n; base += 64) {
        int size = n - base < 64 ? (int)(n - base) : 64, m = 0;
        uint64_t word = 0;
        for (int i = 0; i < size; i++) {
            uint64_t count = (uint64_t)c[base + i], set = count != 0;
            word |= set << i;
            gathered[m] = count - 1;
            m += (int)set;
        }
        for (int b = 0; b < size; b += 8) *map++ = (unsigned char)(word >> b);
        if (!w) continue;
        for (int j = 0; j < m; j++) {
            uint64_t v = gathered[j];
            int at = held;
            acc |= v << at;
            held = at + w;
            if (held >= 64) {
                for (int b = 0; b < 8; b++) *p++ = (unsigned char)(acc >> (8 * b));
                held -= 64;
                acc = v >> 1 >> (63 - at); /* v's bits past the word: v >> (64 - at), 0 when at is 0 */
            }
        }
    }
    for (; held > 0; held -= 8) {
        *p++ = (unsigned char)acc;
        acc >>= 8;
    }
    return p;
}

static PyObject *encode_planned(double accuracy, double mn, double mx, uint64_t zeros, const plan_t *pos,
                                const plan_t *neg) {
    int custom = accuracy != DEFAULT_ACCURACY;
    Py_ssize_t size = 2 + (custom ? 8 : 0) + 16 + varint_size(zeros) + store_size(pos) + store_size(neg) + 4;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    unsigned char *start = (unsigned char *)PyBytes_AS_STRING(out), *p = start;
    *p++ = FORM2;
    *p++ = custom ? FLAG_ACCURACY : 0;
    if (custom) p = put_double(p, accuracy);
    p = put_double(p, mn);
    p = put_double(p, mx);
    p = put_varint(p, zeros);
    p = put_store(p, pos);
    p = put_store(p, neg);
    uint32_t crc = crc32_of(start, size - 4);
    for (int i = 0; i < 4; i++) *p++ = (unsigned char)(crc >> (8 * i));
    return out;
}

static int int64_buffer(PyObject *obj, Py_buffer *view) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->len % 8) {
        PyBuffer_Release(view);
        return bad("counts must be int64");
    }
    return 0;
}

static PyObject *encode(PyObject *self, PyObject *args) {
    double accuracy, mn, mx;
    PyObject *zeros_obj, *pos_obj, *neg_obj;
    long long pos_offset, neg_offset;
    if (!PyArg_ParseTuple(args, "dddOLOLO", &accuracy, &mn, &mx, &zeros_obj, &pos_offset, &pos_obj, &neg_offset,
                          &neg_obj))
        return NULL;
    PyObject *zeros_int = PyNumber_Index(zeros_obj);
    if (zeros_int == NULL) return NULL;
    uint64_t zeros = PyLong_AsUnsignedLongLong(zeros_int);
    Py_DECREF(zeros_int);
    if (zeros == (uint64_t)-1 && PyErr_Occurred()) return NULL;
    Py_buffer pos_view, neg_view;
    if (int64_buffer(pos_obj, &pos_view) < 0) return NULL;
    if (int64_buffer(neg_obj, &neg_view) < 0) {
        PyBuffer_Release(&pos_view);
        return NULL;
    }
    plan_t pos, neg;
    PyObject *out = NULL;
    if (plan((const int64_t *)pos_view.buf, pos_view.len / 8, pos_offset, &pos) == 0 &&
        plan((const int64_t *)neg_view.buf, neg_view.len / 8, neg_offset, &neg) == 0)
        out = encode_planned(accuracy, mn, mx, zeros, &pos, &neg);
    PyBuffer_Release(&pos_view);
    PyBuffer_Release(&neg_view);
    return out;
}

/* --- form 1's body (the quick form after its mark; a zlib stream inflated) -------------------------------- */

typedef struct {
    int64_t offset;
    Py_ssize_t n;
    int code; /* the counts' width: 1 << code bytes */
    const unsigned char *data;
} v1_store_t;

typedef struct {
    double accuracy, mn, mx;
    uint64_t zeros;
    v1_store_t pos, neg;
} v1_body_t;

static int v1_store(const unsigned char *b, Py_ssize_t len, Py_ssize_t *at, v1_store_t *st) {
    if (len - *at < V1_STORE) return bad("truncated sketch store header");
    const unsigned char *h = b + *at;
    *at += V1_STORE;
    st->offset = (int32_t)le32(h);
    st->n = (Py_ssize_t)le32(h + 4);
    st->code = h[8];
    st->data = b + *at;
    if (!st->n) {
        st->offset = 0;
        return 0;
    }
    if (st->code > 3) return bad("unknown count type");
    if ((len - *at) >> st->code < st->n) return bad("truncated sketch store");
    *at += st->n << st->code;
    return 0;
}

/* Form 1's body as aggregator.sketch's ``_body`` reads it (bytes after the negative store are ignored). */
static int v1_parse(const unsigned char *b, Py_ssize_t len, v1_body_t *out) {
    if (len < V1_HEADER) return bad("truncated sketch header");
    if (b[0] != 1) return bad("unknown sketch format version");
    out->accuracy = le_double(b + 2);
    out->mn = le_double(b + 10);
    out->mx = le_double(b + 18);
    out->zeros = le64(b + 26);
    Py_ssize_t at = V1_HEADER;
    if (v1_store(b, len, &at, &out->pos) < 0) return -1;
    return v1_store(b, len, &at, &out->neg);
}

/* A form 1 store's counts as the int64 its reader makes of them. */
static void v1_counts(const v1_store_t *st, int64_t *out) {
    const unsigned char *d = st->data;
    Py_ssize_t n = st->n;
    switch (st->code) {
    case 0:
        for (Py_ssize_t i = 0; i < n; i++) out[i] = d[i];
        break;
    case 1:
        for (Py_ssize_t i = 0; i < n; i++) out[i] = (int64_t)(d[2 * i] | d[2 * i + 1] << 8);
        break;
    case 2:
        for (Py_ssize_t i = 0; i < n; i++) out[i] = (int64_t)le32(d + 4 * i);
        break;
    default:
        for (Py_ssize_t i = 0; i < n; i++) out[i] = (int64_t)le64(d + 8 * i);
    }
}

static PyObject *encode_quick(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *b = view.buf;
    PyObject *out = NULL;
    int64_t *counts = NULL;
    v1_body_t body;
    if (view.len < 1 || b[0] != 0) {
        bad("not a sketch's quick form");
        goto done;
    }
    if (v1_parse(b + 1, view.len - 1, &body) < 0) goto done;
    counts = PyMem_Malloc((size_t)(body.pos.n + body.neg.n + 1) * sizeof(int64_t));
    if (counts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    v1_counts(&body.pos, counts);
    v1_counts(&body.neg, counts + body.pos.n);
    plan_t pos, neg;
    if (plan(counts, body.pos.n, body.pos.offset, &pos) == 0 &&
        plan(counts + body.pos.n, body.neg.n, body.neg.offset, &neg) == 0)
        out = encode_planned(body.accuracy, body.mn, body.mx, body.zeros, &pos, &neg);
done:
    PyMem_Free(counts);
    PyBuffer_Release(&view);
    return out;
}

/* --- merging quick forms (aggregator.sketch.merged_quick) ------------------------------------------------ */

#define MAX_BUCKETS 4096
#define QUICK_MIN (1 + V1_HEADER + 2 * V1_STORE)

static const unsigned char *quick_bytes(PyObject *o, Py_ssize_t *len) {
    if (!PyBytes_Check(o)) return NULL;
    *len = PyBytes_GET_SIZE(o);
    return (const unsigned char *)PyBytes_AS_STRING(o);
}

/* The quick form of the sum of the quick forms ``blobs`` (a list of bytes), as merged_quick makes it: each
 * one version 1, of the first's accuracy, with a non-empty positive store and an empty negative one and nothing
 * after; the extremes folded in order as the builtin min / max do (the first unless the next compares below /
 * above), the zero counts summed, the counts summed in int64 (wrapping as numpy's do) over the union of the
 * ranges; then the store as _Store.to_bytes writes it (edge zeros trimmed, the narrowest width for its peak). */
static PyObject *merge_quick(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "merge_quick takes a list of bytes");
        return NULL;
    }
    Py_ssize_t m = PyList_GET_SIZE(arg);
    if (m == 0) Py_RETURN_NONE;
    double accuracy = 0.0, mn = 0.0, mx = 0.0;
    uint64_t zeros = 0;
    int64_t key_lo = 0, key_hi = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        Py_ssize_t len;
        const unsigned char *b = quick_bytes(PyList_GET_ITEM(arg, i), &len);
        if (b == NULL || len < QUICK_MIN || b[0] != 0) Py_RETURN_NONE;
        const unsigned char *h = b + 1;
        double acc = le_double(h + 2), lo = le_double(h + 10), hi = le_double(h + 18);
        uint64_t z = le64(h + 26);
        if (i == 0) accuracy = acc;
        int64_t offset = (int32_t)le32(h + V1_HEADER);
        uint32_t length = le32(h + V1_HEADER + 4);
        unsigned code = h[V1_HEADER + 8];
        if (h[0] != 1 || acc != accuracy || !length || code > 3) Py_RETURN_NONE;
        Py_ssize_t at = 1 + V1_HEADER + V1_STORE;
        if ((uint64_t)(len - at) < ((uint64_t)length << code)) Py_RETURN_NONE;
        Py_ssize_t end = at + ((Py_ssize_t)length << code);
        if (len != end + V1_STORE) Py_RETURN_NONE;
        for (int k = 0; k < V1_STORE; k++)
            if (b[end + k]) Py_RETURN_NONE;
        if (i == 0) {
            mn = lo;
            mx = hi;
            zeros = z;
            key_lo = offset;
            key_hi = offset + length;
        } else {
            if (zeros + z < zeros) Py_RETURN_NOTIMPLEMENTED; /* Python's struct refuses the sum */
            zeros += z;
            if (lo < mn) mn = lo;
            if (hi > mx) mx = hi;
            if (offset < key_lo) key_lo = offset;
            if (offset + (int64_t)length > key_hi) key_hi = offset + length;
        }
    }
    int64_t width = key_hi - key_lo;
    if (width > MAX_BUCKETS || !(0.0 < accuracy && accuracy < 1.0)) Py_RETURN_NONE;
    uint64_t counts[MAX_BUCKETS];
    memset(counts, 0, (size_t)width * sizeof(uint64_t));
    for (Py_ssize_t i = 0; i < m; i++) {
        Py_ssize_t len;
        const unsigned char *b = quick_bytes(PyList_GET_ITEM(arg, i), &len);
        const unsigned char *h = b + 1;
        v1_store_t st;
        st.offset = (int32_t)le32(h + V1_HEADER);
        st.n = (Py_ssize_t)le32(h + V1_HEADER + 4);
        st.code = h[V1_HEADER + 8];
        st.data = b + 1 + V1_HEADER + V1_STORE;
        uint64_t *c = counts + (st.offset - key_lo);
        const unsigned char *d = st.data;
        Py_ssize_t n = st.n;
        switch (st.code) {
        case 0:
            for (Py_ssize_t j = 0; j < n; j++) c[j] += d[j];
            break;
        case 1:
            for (Py_ssize_t j = 0; j < n; j++) c[j] += (uint64_t)(d[2 * j] | d[2 * j + 1] << 8);
            break;
        case 2:
            for (Py_ssize_t j = 0; j < n; j++) c[j] += le32(d + 4 * j);
            break;
        default:
            for (Py_ssize_t j = 0; j < n; j++) c[j] += le64(d + 8 * j);
        }
    }
    /* _Store.to_bytes: the empty edge buckets trimmed (a sum that wrapped to zero), the width of the peak */
    int64_t first = 0, last = width - 1;
    while (first <= last && counts[first] == 0) first++;
    while (last >= first && counts[last] == 0) last--;
    Py_ssize_t n = first > last ? 0 : (Py_ssize_t)(last - first + 1);
    if (n && key_lo + first > INT32_MAX) Py_RETURN_NOTIMPLEMENTED; /* Python's struct refuses the offset */
    int64_t peak = 0;
    for (Py_ssize_t j = 0; j < n; j++)
        if (j == 0 || (int64_t)counts[first + j] > peak) peak = (int64_t)counts[first + j];
    unsigned code = peak < (1 << 8) ? 0 : peak < (1 << 16) ? 1 : peak < ((int64_t)1 << 32) ? 2 : 3;
    Py_ssize_t size = 1 + V1_HEADER + V1_STORE + (n << code) + V1_STORE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    memset(p, 0, (size_t)size);
    p[1] = 1; /* version; flags 0 */
    put_double(p + 3, accuracy);
    put_double(p + 11, mn);
    put_double(p + 19, mx);
    for (int k = 0; k < 8; k++) p[27 + k] = (unsigned char)(zeros >> (8 * k));
    unsigned char *s = p + 1 + V1_HEADER;
    if (n) {
        uint32_t off = (uint32_t)(int32_t)(key_lo + first);
        for (int k = 0; k < 4; k++) s[k] = (unsigned char)(off >> (8 * k));
        for (int k = 0; k < 4; k++) s[4 + k] = (unsigned char)((uint32_t)n >> (8 * k));
        s[8] = (unsigned char)code;
        unsigned char *q = s + V1_STORE;
        int w = 1 << code;
        for (Py_ssize_t j = 0; j < n; j++) {
            uint64_t v = counts[first + j];
            for (int k = 0; k < w; k++) *q++ = (unsigned char)(v >> (8 * k));
        }
    }
    return out; /* the empty negative store: V1_STORE zero bytes, left by the memset */
}

/* --- decoding form 2 ------------------------------------------------------------------------------------- */

typedef struct {
    int64_t offset;
    Py_ssize_t n, k;
    int w;
    const unsigned char *map, *values;
} store2_t;

typedef struct {
    double accuracy, mn, mx;
    uint64_t zeros;
    store2_t pos, neg;
} body2_t;

static int store2(const unsigned char **p, const unsigned char *end, store2_t *st) {
    uint64_t n, zz;
    memset(st, 0, sizeof(*st));
    if (get_varint(p, end, &n) < 0) return -1;
    if (!n) return 0;
    if (get_varint(p, end, &zz) < 0) return -1;
    int64_t offset = (int64_t)(zz >> 1) ^ -(int64_t)(zz & 1);
    if (offset < INT32_MIN || offset > INT32_MAX) return bad("corrupt sketch: a bucket key past int32");
    if (*p >= end) return bad("truncated sketch");
    int w = *(*p)++;
    if (w > 64) return bad("corrupt sketch: a count wider than 64 bits");
    uint64_t map_bytes = (n + 7) / 8;
    if (n > (uint64_t)(end - *p) * 8 || map_bytes > (uint64_t)(end - *p)) return bad("truncated sketch");
    const unsigned char *map = *p;
    Py_ssize_t k = 0;
    for (uint64_t i = 0; i < map_bytes; i++) k += pop8(map[i]);
    unsigned tail = (unsigned)(n & 7);
    if (!(map[0] & 1) || !(map[(n - 1) >> 3] >> ((n - 1) & 7) & 1) || (tail && map[map_bytes - 1] >> tail))
        return bad("corrupt sketch: a store's edges or padding");
    *p += map_bytes;
    uint64_t value_bytes = ((uint64_t)k * (uint64_t)w + 7) / 8;
    if (value_bytes > (uint64_t)(end - *p)) return bad("truncated sketch");
    st->values = *p;
    *p += value_bytes;
    st->offset = offset;
    st->n = (Py_ssize_t)n;
    st->k = k;
    st->w = w;
    st->map = map;
    return 0;
}

static int parse2(const unsigned char *b, Py_ssize_t len, body2_t *out) {
    if (len < 2 || b[0] != FORM2) return bad("not a sketch of form 2");
    if (len < 6 || crc32_of(b, len - 4) != le32(b + len - 4)) return bad("corrupt sketch: its checksum differs");
    const unsigned char *p = b, *end = b + len - 4;
    unsigned flags = b[1];
    p += 2;
    if (flags & ~(unsigned)FLAG_ACCURACY) return bad("corrupt sketch: unknown flags");
    Py_ssize_t fixed = (flags & FLAG_ACCURACY ? 8 : 0) + 16;
    if (end - p < fixed) return bad("truncated sketch header");
    out->accuracy = DEFAULT_ACCURACY;
    if (flags & FLAG_ACCURACY) {
        out->accuracy = le_double(p);
        p += 8;
        /* one form per sketch: the default accuracy is never written out */
        if (out->accuracy == DEFAULT_ACCURACY) return bad("corrupt sketch: the default accuracy written out");
    }
    out->mn = le_double(p);
    out->mx = le_double(p + 8);
    p += 16;
    if (get_varint(&p, end, &out->zeros) < 0) return -1;
    if (store2(&p, end, &out->pos) < 0 || store2(&p, end, &out->neg) < 0) return -1;
    if (p != end) return bad("corrupt sketch: bytes after its stores");
    return 0;
}

/* The store's n counts into out; -1 with ValueError for counts that are not the one way to write them. The k
 * values are unpacked to out[0 .. k - 1], then spread to their buckets from the last one down (a value's bucket
 * is at or after its place), without a branch per bucket: which buckets are empty is data. */
static int counts2(const store2_t *st, int64_t *out) {
    Py_ssize_t n = st->n, k = st->k;
    int w = st->w;
    const unsigned char *map = st->map, *q = st->values;
    uint64_t mask = w == 64 ? ~(uint64_t)0 : ((uint64_t)1 << w) - 1;
    uint64_t acc = 0, any = 0, all = ~(uint64_t)0; /* ``acc``: the ``held`` bits of the last byte read not yet used */
    int held = 0;
    for (Py_ssize_t j = 0; j < k; j++) {
        uint64_t v = 0;
        if (w) {
            if (held >= w) {
                v = acc & mask;
                acc >>= w; /* (held < 8: w < 8 here) */
                held -= w;
            } else {
                int got = held;
                v = acc;
                acc = 0;
                held = 0;
                while (got < w) {
                    uint64_t byte = *q++;
                    v |= byte << got;
                    int need = w - got;
                    if (need >= 8) {
                        got += 8;
                    } else {
                        acc = byte >> need;
                        held = 8 - need;
                        got = w;
                    }
                }
                v &= mask;
            }
        }
        any |= v;
        all &= ~v;
        out[j] = (int64_t)(v + 1);
    }
    if (acc) return bad("corrupt sketch: a store's padding");
    if (w && !(any >> (w - 1))) return bad("corrupt sketch: counts wider than they need");
    if (w == 64 && !all) { /* some value is all ones: its count would be 0 */
        for (Py_ssize_t j = 0; j < k; j++)
            if (out[j] == 0) return bad("corrupt sketch: a count past 64 bits");
    }
    Py_ssize_t j = k - 1; /* bucket 0 is marked (checked): j stays >= 0 */
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        int64_t set = map[i >> 3] >> (i & 7) & 1;
        out[i] = out[j] & -set;
        j -= set;
    }
    return 0;
}

static PyObject *counts_bytes(const store2_t *st) {
    PyObject *out = PyByteArray_FromStringAndSize(NULL, st->n * 8);
    if (out == NULL) return NULL;
    if (st->n && counts2(st, (int64_t *)PyByteArray_AS_STRING(out)) < 0) Py_CLEAR(out);
    return out;
}

static PyObject *decode(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    body2_t body;
    PyObject *out = NULL, *pos = NULL, *neg = NULL;
    if (parse2(view.buf, view.len, &body) == 0 && (pos = counts_bytes(&body.pos)) != NULL &&
        (neg = counts_bytes(&body.neg)) != NULL)
        out = Py_BuildValue("dddKLOLO", body.accuracy, body.mn, body.mx, (unsigned long long)body.zeros,
                            (long long)body.pos.offset, pos, (long long)body.neg.offset, neg);
    Py_XDECREF(pos);
    Py_XDECREF(neg);
    PyBuffer_Release(&view);
    return out;
}

/* --- many blobs at once (alerting.columns) ---------------------------------------------------------------- */

enum { F_ACCURACY, F_MIN, F_MAX, F_ZEROS, F_OFFSET, F_LENGTH, F_NEGATIVE, F_START, FIELDS };

typedef struct {
    PyObject *held; /* a form 1 body inflate made, or the blob itself */
    Py_buffer view;
    int form; /* 1 or 2 */
    v1_body_t v1;
    body2_t v2;
} parsed_t;

static PyObject *decode_many(PyObject *self, PyObject *args) {
    PyObject *blobs, *inflate;
    if (!PyArg_ParseTuple(args, "OO", &blobs, &inflate)) return NULL;
    PyObject *seq = PySequence_Fast(blobs, "blobs must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq), done = 0, total = 0;
    PyObject *meta = NULL, *counts = NULL, *result = NULL;
    parsed_t *parsed = PyMem_Calloc((size_t)count + 1, sizeof(parsed_t));
    if (parsed == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (; done < count; done++) {
        parsed_t *pb = &parsed[done];
        PyObject *blob = PySequence_Fast_GET_ITEM(seq, done);
        if (PyObject_GetBuffer(blob, &pb->view, PyBUF_SIMPLE) < 0) goto out;
        const unsigned char *b = pb->view.buf;
        Py_ssize_t len = pb->view.len;
        if (len && b[0] == FORM2) {
            pb->form = 2;
            if (parse2(b, len, &pb->v2) < 0) goto fail_one;
            total += pb->v2.pos.n;
        } else {
            pb->form = 1;
            if (len && b[0] == 0) {
                b++;
                len--;
            } else { /* form 1's zlib stream: its body, held until the counts are read */
                PyObject *body = PyObject_CallOneArg(inflate, blob);
                if (body == NULL) goto fail_one;
                PyBuffer_Release(&pb->view);
                int got = PyObject_GetBuffer(body, &pb->view, PyBUF_SIMPLE);
                Py_DECREF(body);
                if (got < 0) {
                    pb->form = 0;
                    goto out;
                }
                b = pb->view.buf;
                len = pb->view.len;
            }
            if (v1_parse(b, len, &pb->v1) < 0) goto fail_one;
            total += pb->v1.pos.n;
        }
        continue;
    fail_one:
        done++; /* its view is released below */
        goto out;
    }
    meta = PyByteArray_FromStringAndSize(NULL, count * FIELDS * 8);
    counts = PyByteArray_FromStringAndSize(NULL, total * 8);
    if (meta == NULL || counts == NULL) goto out;
    int64_t *c = (int64_t *)PyByteArray_AS_STRING(counts);
    unsigned char *m = (unsigned char *)PyByteArray_AS_STRING(meta);
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        parsed_t *pb = &parsed[i];
        double f[3];
        int64_t g[FIELDS];
        uint64_t zeros;
        Py_ssize_t n;
        if (pb->form == 2) {
            f[0] = pb->v2.accuracy, f[1] = pb->v2.mn, f[2] = pb->v2.mx, zeros = pb->v2.zeros;
            n = pb->v2.pos.n;
            g[F_OFFSET] = pb->v2.pos.offset;
            g[F_NEGATIVE] = pb->v2.neg.n;
            if (n && counts2(&pb->v2.pos, c + start) < 0) goto out;
            if (pb->v2.neg.n) { /* checked as decode checks it, into scratch past the positive counts */
                int64_t *scratch = PyMem_Malloc((size_t)pb->v2.neg.n * sizeof(int64_t));
                if (scratch == NULL) {
                    PyErr_NoMemory();
                    goto out;
                }
                int got = counts2(&pb->v2.neg, scratch);
                PyMem_Free(scratch);
                if (got < 0) goto out;
            }
        } else {
            f[0] = pb->v1.accuracy, f[1] = pb->v1.mn, f[2] = pb->v1.mx, zeros = pb->v1.zeros;
            n = pb->v1.pos.n;
            g[F_OFFSET] = pb->v1.pos.offset;
            g[F_NEGATIVE] = pb->v1.neg.n;
            v1_counts(&pb->v1.pos, c + start);
        }
        g[F_LENGTH] = n;
        g[F_START] = start;
        memcpy(m, f, 24);
        memcpy(m + 24, &zeros, 8);
        memcpy(m + 32, &g[F_OFFSET], 32);
        m += FIELDS * 8;
        start += n;
    }
    result = PyTuple_Pack(2, meta, counts);
out:
    for (Py_ssize_t i = 0; i < done; i++)
        if (parsed[i].view.obj != NULL) PyBuffer_Release(&parsed[i].view);
    PyMem_Free(parsed);
    Py_XDECREF(meta);
    Py_XDECREF(counts);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef functions[] = {
    {"encode", encode, METH_VARARGS, "A sketch's form 2 from its fields and stores (see _sketchcodec.c)."},
    {"encode_quick", encode_quick, METH_O, "The form 2 of a sketch's quick form (see _sketchcodec.c)."},
    {"merge_quick", merge_quick, METH_O, "The quick form of quick forms' sum (see _sketchcodec.c)."},
    {"decode", decode, METH_O, "A form 2 sketch's fields and counts (see _sketchcodec.c)."},
    {"decode_many", decode_many, METH_VARARGS, "Stored sketches' fields and positive counts (see _sketchcodec.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "aggregator._sketchcodec",
                                    "The sketch's stored form in C (see aggregator/_sketchcodec.c).", -1, functions};

PyMODINIT_FUNC PyInit__sketchcodec(void) {
    crc_init();
    return PyModule_Create(&module);
}
