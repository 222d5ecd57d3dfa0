/* aggregator.insights._opentable: the open traces' index (trace id hash -> slot) in C, optional:
 * aggregator/insights/opentraces.py has its Python twin (_DictIndex, a dict of the same hashes), which the tests
 * hold it to and which takes over wherever this is not built.
 *
 * Why: the parent's trace join tests each of a chunk's ~1,300 trace ids against the open traces and opens a few
 * hundred rests a chunk; a dict lookup per id from Python (map of dict.get) was the largest part of the join
 * once the open traces became columns. Here one call per chunk hashes the ids (str's own cached hash) and probes
 * a flat table of (hash, slot) pairs: no Python object per id.
 *
 * The table keys on the hash alone: the caller checks that a slot found holds the same trace id (a hash shared
 * by two open traces puts the second in the caller's overflow dict: insert reports it). Entries are never
 * removed; the caller clears and refills the table when it compacts its slots. ``bits`` < 64 keeps only the
 * low bits of each hash (the tests force collisions with it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int64_t hash;
    int64_t slot; /* -1: empty */
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *table;
    Py_ssize_t cap; /* a power of two */
    Py_ssize_t used;
    uint64_t keep; /* the hash bits kept */
} Index;

static inline Py_ssize_t home(const Index *ix, int64_t h) {
    /* Fibonacci hashing: the table's size comes from the top bits, which a tiny test hash also spreads */
    return (Py_ssize_t)(((uint64_t)h * 0x9E3779B97F4A7C15ULL) >> 17) & (ix->cap - 1);
}

static int resize(Index *ix, Py_ssize_t cap) {
    Entry *old = ix->table;
    Py_ssize_t oldcap = ix->cap;
    Entry *table = PyMem_Malloc((size_t)cap * sizeof(Entry));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < cap; i++) {
        table[i].slot = -1;
    }
    ix->table = table;
    ix->cap = cap;
    for (Py_ssize_t i = 0; i < oldcap; i++) {
        if (old[i].slot >= 0) {
            Py_ssize_t at = home(ix, old[i].hash);
            while (table[at].slot >= 0) {
                at = (at + 1) & (cap - 1);
            }
            table[at] = old[i];
        }
    }
    PyMem_Free(old);
    return 0;
}

static inline Py_ssize_t find(const Index *ix, int64_t h) {
    /* the entry of hash h, or the empty one where it would go */
    Py_ssize_t at = home(ix, h);
    while (ix->table[at].slot >= 0 && ix->table[at].hash != h) {
        at = (at + 1) & (ix->cap - 1);
    }
    return at;
}

static int Index_init(Index *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"bits", NULL};
    int bits = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|i", kwlist, &bits)) {
        return -1;
    }
    if (bits < 1 || bits > 64) {
        PyErr_SetString(PyExc_ValueError, "bits must be 1..64");
        return -1;
    }
    self->keep = bits == 64 ? ~0ULL : ((1ULL << bits) - 1);
    PyMem_Free(self->table);
    self->table = NULL;
    self->cap = 0;
    self->used = 0;
    return resize(self, 1024);
}

static void Index_dealloc(Index *self) {
    PyMem_Free(self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A C-contiguous writable-if-asked view of obj with items of `size` bytes (8: int64), or -1 with TypeError. */
static int view_of(PyObject *obj, Py_buffer *view, Py_ssize_t size, int writable, const char *what) {
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        return -1;
    }
    const char *f = view->format;
    int ok = view->itemsize == size;
    if (ok && size == 8) {
        ok = f != NULL && (strcmp(f, "l") == 0 || strcmp(f, "q") == 0 || strcmp(f, "<l") == 0
                           || strcmp(f, "<q") == 0 || strcmp(f, "=l") == 0 || strcmp(f, "=q") == 0);
    }
    if (!ok) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s: a C-contiguous array of %zd-byte items expected", what, size);
        return -1;
    }
    return 0;
}

/* The checks every method makes, then the buffers of args[first..want-1] (item sizes `sizes`, writable where
 * `writable`): 0 with every view held (release with release_views), or -1 with an exception set and none held. */
static int method_views(Index *self, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, int first,
                        Py_buffer *v, const Py_ssize_t *sizes, const int *writable, const char *const *names,
                        const char *usage) {
    if (self->table == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Index not initialised");
        return -1;
    }
    if (nargs != want || (first == 1 && !PyList_Check(args[0]))) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    for (int k = first; k < want; k++) {
        if (view_of(args[k], &v[k], sizes[k], writable[k], names[k]) < 0) {
            while (--k >= first) {
                PyBuffer_Release(&v[k]);
            }
            return -1;
        }
    }
    return 0;
}

static void release_views(Py_buffer *v, int first, int want) {
    for (int k = first; k < want; k++) {
        PyBuffer_Release(&v[k]);
    }
}

PyDoc_STRVAR(lookup_doc,
"lookup(ids, slots, hashes) -> None\n\n"
"For each of the list ``ids``: its hash (``hash(id)``, its low ``bits``) into ``hashes`` and the slot of that\n"
"hash into ``slots`` (-1: none); both writable int64 arrays at least as long as ``ids``.");

static PyObject *Index_lookup(Index *self, PyObject *const *args, Py_ssize_t nargs) {
    static const Py_ssize_t sizes[3] = {0, 8, 8};
    static const int writable[3] = {0, 1, 1};
    static const char *const names[3] = {"ids", "slots", "hashes"};
    Py_buffer v[3];
    if (method_views(self, args, nargs, 3, 1, v, sizes, writable, names, "lookup(ids: list, slots, hashes)") < 0) {
        return NULL;
    }
    PyObject *result = NULL, *ids = args[0];
    Py_ssize_t n = PyList_GET_SIZE(ids);
    if (v[1].len / 8 < n || v[2].len / 8 < n) {
        PyErr_SetString(PyExc_ValueError, "lookup: the arrays are shorter than the ids");
        goto done;
    }
    int64_t *s = v[1].buf, *hs = v[2].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* an id's __hash__ may run Python code that shrinks the list (the arrays are held: they cannot): the item
         * held while it hashes, the size checked before the next (a str's hash runs none: the caller's ids) */
        if (PyList_GET_SIZE(ids) != n) {
            PyErr_SetString(PyExc_RuntimeError, "lookup: ids changed size during the call");
            goto done;
        }
        PyObject *id = Py_NewRef(PyList_GET_ITEM(ids, i));
        Py_hash_t h = PyObject_Hash(id);
        Py_DECREF(id);
        if (h == -1 && PyErr_Occurred()) {
            goto done;
        }
        int64_t k = (int64_t)((uint64_t)h & self->keep);
        hs[i] = k;
        s[i] = self->table[find(self, k)].slot;
    }
    result = Py_NewRef(Py_None);
done:
    release_views(v, 1, 3);
    return result;
}

PyDoc_STRVAR(get_doc,
"get(hashes, slots) -> None\n\n"
"The slot of each hash (int64 array, as ``lookup`` gives them) into ``slots`` (-1: none).");

static PyObject *Index_get(Index *self, PyObject *const *args, Py_ssize_t nargs) {
    static const Py_ssize_t sizes[2] = {8, 8};
    static const int writable[2] = {0, 1};
    static const char *const names[2] = {"hashes", "slots"};
    Py_buffer v[2];
    if (method_views(self, args, nargs, 2, 0, v, sizes, writable, names, "get(hashes, slots)") < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = v[0].len / 8;
    if (v[1].len / 8 < n) {
        PyErr_SetString(PyExc_ValueError, "get: slots is shorter than hashes");
        goto done;
    }
    const int64_t *hs = v[0].buf;
    int64_t *s = v[1].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        s[i] = self->table[find(self, hs[i])].slot;
    }
    result = Py_NewRef(Py_None);
done:
    release_views(v, 0, 2);
    return result;
}

PyDoc_STRVAR(insert_doc,
"insert(hashes, slots, alive, taken) -> int\n\n"
"For each i in order: hash ``hashes[i]`` points to slot ``slots[i]`` from now on, unless it points to a slot s\n"
"with ``alive[s]`` (a live trace of the same hash: then ``taken[i]`` is set to 1, else 0). ``hashes`` and\n"
"``slots``: int64 arrays of one length; ``alive``: the caller's bool column; ``taken``: a writable bool array as\n"
"long. Returns how many were taken.");

static PyObject *Index_insert(Index *self, PyObject *const *args, Py_ssize_t nargs) {
    static const Py_ssize_t sizes[4] = {8, 8, 1, 1};
    static const int writable[4] = {0, 0, 0, 1};
    static const char *const names[4] = {"hashes", "slots", "alive", "taken"};
    Py_buffer v[4];
    if (method_views(self, args, nargs, 4, 0, v, sizes, writable, names, "insert(hashes, slots, alive, taken)") < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = v[0].len / 8, nalive = v[2].len;
    if (v[1].len / 8 != n || v[3].len < n) {
        PyErr_SetString(PyExc_ValueError, "insert: arrays of different lengths");
        goto done;
    }
    const int64_t *hs = v[0].buf, *ss = v[1].buf;
    const uint8_t *alive = v[2].buf;
    uint8_t *taken = v[3].buf;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ss[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "insert: a negative slot");
            goto done;
        }
        if ((self->used + 1) * 2 > self->cap && resize(self, self->cap * 2) < 0) {
            goto done;
        }
        Py_ssize_t at = find(self, hs[i]);
        int64_t s = self->table[at].slot;
        if (s >= 0 && s < nalive && alive[s]) {
            taken[i] = 1;
            count++;
            continue;
        }
        taken[i] = 0;
        if (s < 0) {
            self->used++;
            self->table[at].hash = hs[i];
        }
        self->table[at].slot = ss[i];
    }
    result = PyLong_FromSsize_t(count);
done:
    release_views(v, 0, 4);
    return result;
}

PyDoc_STRVAR(hash_pieces_doc,
"hash_pieces(joined, hashes, starts=None) -> int\n\n"
"``hash(piece)`` of each piece of ``joined.split(\"\\0\")`` into the writable int64 array ``hashes``, from the\n"
"joined string's bytes (no str made per piece), and where each piece starts into ``starts`` (one more: the\n"
"length + 1 last, so that piece k is ``joined[starts[k]:starts[k + 1] - 1]``): how many pieces, or -1 (the arrays\n"
"unchanged) when ``joined`` is not ASCII (a piece's hash then depends on its own width) or an array is too short.");

static PyObject *hash_pieces(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hash_pieces(joined: str, hashes, starts=None)");
        return NULL;
    }
    PyObject *joined = args[0];
    Py_buffer out, at;
    int with_starts = nargs == 3 && args[2] != Py_None;
    if (view_of(args[1], &out, 8, 1, "hashes") < 0) {
        return NULL;
    }
    if (with_starts && view_of(args[2], &at, 8, 1, "starts") < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    Py_ssize_t count = -1;
    if (PyUnicode_IS_ASCII(joined)) {
        /* str's hash of a 1-byte-wide string is _Py_HashBytes of its bytes (unicode_hash), "" -> 0 */
        const char *p = (const char *)PyUnicode_DATA(joined);
        Py_ssize_t len = PyUnicode_GET_LENGTH(joined), pieces = 1;
        for (Py_ssize_t i = 0; i < len; i++) {
            pieces += p[i] == '\0';
        }
        if (pieces <= out.len / 8 && (!with_starts || pieces < at.len / 8)) {
            int64_t *h = out.buf, *st = with_starts ? at.buf : NULL;
            Py_ssize_t start = 0;
            count = 0;
            for (Py_ssize_t i = 0; i <= len; i++) {
                if (i == len || p[i] == '\0') {
                    if (st != NULL) {
                        st[count] = start;
                    }
                    h[count++] = (int64_t)_Py_HashBytes(p + start, i - start);
                    start = i + 1;
                }
            }
            if (st != NULL) {
                st[count] = len + 1;
            }
        }
    }
    PyBuffer_Release(&out);
    if (with_starts) {
        PyBuffer_Release(&at);
    }
    return PyLong_FromSsize_t(count);
}

static PyObject *Index_clear(Index *self, PyObject *Py_UNUSED(ignored)) {
    if (self->table == NULL) {
        Py_RETURN_NONE;
    }
    for (Py_ssize_t i = 0; i < self->cap; i++) {
        self->table[i].slot = -1;
    }
    self->used = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t Index_len(Index *self) {
    return self->used;
}

static PyMethodDef Index_methods[] = {
    {"lookup", (PyCFunction)(void (*)(void))Index_lookup, METH_FASTCALL, lookup_doc},
    {"get", (PyCFunction)(void (*)(void))Index_get, METH_FASTCALL, get_doc},
    {"insert", (PyCFunction)(void (*)(void))Index_insert, METH_FASTCALL, insert_doc},
    {"clear", (PyCFunction)Index_clear, METH_NOARGS, "Empty the table."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Index_as_sequence = {
    .sq_length = (lenfunc)Index_len,
};

static PyTypeObject IndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aggregator.insights._opentable.Index",
    .tp_basicsize = sizeof(Index),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Index(bits=64): trace id hash -> slot (see the module docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Index_init,
    .tp_dealloc = (destructor)Index_dealloc,
    .tp_methods = Index_methods,
    .tp_as_sequence = &Index_as_sequence,
};

static PyMethodDef module_methods[] = {
    {"hash_pieces", (PyCFunction)(void (*)(void))hash_pieces, METH_FASTCALL, hash_pieces_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_methods = module_methods,
    .m_name = "aggregator.insights._opentable",
    .m_doc = "The open traces' index in C (see aggregator/insights/_opentable.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__opentable(void) {
    if (PyType_Ready(&IndexType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Index", (PyObject *)&IndexType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
