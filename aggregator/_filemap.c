/* aggregator._filemap: a plain file's bytes read where they lie in the page cache (mmap), safely.
 *
 * Why: read() copies every byte of a log from the page cache into the chunk's bytes object; on the 5M-event
 * benchmark log that copy (the kernel's _copy_to_iter) was 12% of the workers' CPU. A mapping of the chunk's
 * pages lets the scanner read them in place (aggregator/sources.py, FileSource.read_mapped, has the figures).
 *
 * Why here and not Python's mmap module: a mapped file that shrinks (logrotate's copytruncate, a rewrite)
 * raises SIGBUS on the first access to a page past its new end, and SIGBUS kills the process. A mapping made
 * here is registered for this module's SIGBUS handler (installed the first time a process maps a file, never
 * before): a fault in a registered mapping has the rest of that mapping, from the faulting page on, replaced
 * by zeros (an anonymous mapping over it, MAP_FIXED), its ``faulted`` flag set, and the access retried; the
 * reader then throws away what it made of that mapping and reads the range again with read(), which sees the
 * truncation as it always did. A SIGBUS anywhere else goes to the handler that was there before (faulthandler,
 * say), or takes its default action, as without this module. A handler installed after the first map comes
 * before this one (faulthandler.enable() then: a page gone is its fatal error, its re-raise by raise() is not
 * a fault here, and the process ends, checked); nothing in logapm installs one, and taking the first place
 * back at the next map would have two handlers that chain to each other raise back and forth.
 *
 *   map(fd, offset, length) -> Mapping
 *       the file's bytes [offset, offset + length) (offset any: the mapping starts at the page holding it),
 *       populated at once (MAP_POPULATE: no page fault per 64 KB as the scanner advances); OSError when the
 *       file cannot be mapped (or MAX_MAPPINGS are alive)
 *   Mapping: a read-only buffer of length bytes (memoryview(m), bytes(m), len(m)); unmapped when the last
 *       reference to it (a memoryview on it included) goes. ``faulted``: a page of it was gone (SIGBUS) and
 *       reads as zeros. ``find_newline(lo, hi)`` / ``rfind_newline(lo, hi)``: the first / last b"\n" in
 *       [lo, hi), or -1 (memchr / memrchr, no copy).
 *   live() -> int: the mappings alive in this process (the tests check that none outlives its chunk).
 *
 * The registry is a fixed array that the handler reads without a lock: a slot's end is set before its start
 * (start != 0 marks it alive) and its start cleared before the pages are unmapped; slots change only with the
 * GIL held. mmap is not on POSIX's list of async-signal-safe functions but is one system call on Linux (and
 * what a SIGBUS handler of this kind does everywhere it exists).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* a worker holds one or two chunks' mappings at a time; several threads (a Dask worker's) a few each */
#define MAX_MAPPINGS 256

typedef struct {
    volatile uintptr_t start; /* 0: free */
    volatile uintptr_t end;
    volatile sig_atomic_t faulted;
} Slot;

static Slot slots[MAX_MAPPINGS];
static int live_count;
static volatile sig_atomic_t handler_installed;
static struct sigaction previous;
static uintptr_t page_size;

static void on_sigbus(int sig, siginfo_t *info, void *ctx) {
    uintptr_t a = (uintptr_t)info->si_addr;
    if (info->si_code > 0) { /* sent by the kernel for a fault, not by kill() */
        for (int i = 0; i < MAX_MAPPINGS; i++) {
            uintptr_t s = __atomic_load_n(&slots[i].start, __ATOMIC_ACQUIRE);
            if (!s || a < s) continue;
            uintptr_t e = __atomic_load_n(&slots[i].end, __ATOMIC_RELAXED);
            if (a >= e) continue;
            uintptr_t from = a & ~(page_size - 1);
            void *r = mmap((void *)from, e - from, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (r == MAP_FAILED) break; /* cannot repair it: as if it were not ours */
            slots[i].faulted = 1;
            return; /* the access is retried and reads zeros */
        }
    }
    /* Not ours: out of the way. A fault is retried under the action that was there before (faulthandler's, or
     * the default: the end); a SIGBUS sent by kill() is raised again for it (SA_NODEFER: at once). A later
     * map() installs this handler again. */
    sigaction(SIGBUS, &previous, NULL);
    handler_installed = 0;
    if (info->si_code <= 0) raise(sig);
}

static int install_handler(void) {
    if (handler_installed) return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &previous) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    handler_installed = 1;
    return 0;
}

typedef struct {
    PyObject_HEAD
    char *base;     /* the mapping (page aligned) */
    size_t size;    /* its length */
    char *data;     /* the bytes asked for: base + offset % page */
    Py_ssize_t len;
    int slot;
} Mapping;

static PyTypeObject MappingType;

static void mapping_dealloc(Mapping *self) {
    if (self->base) {
        __atomic_store_n(&slots[self->slot].start, 0, __ATOMIC_RELEASE);
        slots[self->slot].faulted = 0;
        munmap(self->base, self->size);
        live_count--;
    }
    PyObject_Free(self);
}

/* a memoryview holds a reference to the Mapping: no page is unmapped while a buffer of it is out */
static int mapping_getbuffer(Mapping *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->len, 1, flags);
}

static Py_ssize_t mapping_length(Mapping *self) { return self->len; }

static PyObject *mapping_faulted(Mapping *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(slots[self->slot].faulted);
}

/* the offset of the first (last: rfind) b"\n" in [lo, hi), clipped to the mapping, or -1 */
static PyObject *newline(Mapping *self, PyObject *args, int rfind) {
    Py_ssize_t lo, hi = self->len;
    if (!PyArg_ParseTuple(args, "n|n", &lo, &hi)) return NULL;
    if (lo < 0) lo = 0;
    if (hi > self->len) hi = self->len;
    if (lo >= hi) return PyLong_FromLong(-1);
    size_t n = (size_t)(hi - lo);
    const char *p = rfind ? memrchr(self->data + lo, '\n', n) : memchr(self->data + lo, '\n', n);
    return PyLong_FromSsize_t(p ? p - self->data : -1);
}

static PyObject *mapping_find_newline(Mapping *self, PyObject *args) { return newline(self, args, 0); }

static PyObject *mapping_rfind_newline(Mapping *self, PyObject *args) { return newline(self, args, 1); }

static PyMethodDef mapping_methods[] = {
    {"find_newline", (PyCFunction)mapping_find_newline, METH_VARARGS,
     "find_newline(lo, hi=len) -> the offset of the first b'\\n' in [lo, hi), or -1"},
    {"rfind_newline", (PyCFunction)mapping_rfind_newline, METH_VARARGS,
     "rfind_newline(lo, hi=len) -> the offset of the last b'\\n' in [lo, hi), or -1"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mapping_getset[] = {
    {"faulted", (getter)mapping_faulted, NULL, "a page was gone (SIGBUS): the rest of the mapping reads zeros",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyBufferProcs mapping_as_buffer = {
    (getbufferproc)mapping_getbuffer,
    NULL,
};

static PySequenceMethods mapping_as_sequence = {
    .sq_length = (lenfunc)mapping_length,
};

static PyTypeObject MappingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aggregator._filemap.Mapping",
    .tp_basicsize = sizeof(Mapping),
    .tp_dealloc = (destructor)mapping_dealloc,
    .tp_as_sequence = &mapping_as_sequence,
    .tp_as_buffer = &mapping_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A read-only mapping of a file's bytes (see aggregator/_filemap.c).",
    .tp_methods = mapping_methods,
    .tp_getset = mapping_getset,
};

static PyObject *filemap_map(PyObject *module, PyObject *args) {
    int fd;
    long long offset, length;
    (void)module;
    if (!PyArg_ParseTuple(args, "iLL", &fd, &offset, &length)) return NULL;
    if (offset < 0 || length <= 0 || length > PY_SSIZE_T_MAX - (long long)page_size) {
        PyErr_SetString(PyExc_ValueError, "map: offset must be >= 0 and length > 0");
        return NULL;
    }
    if (install_handler() < 0) return NULL;
    int slot = -1;
    for (int i = 0; i < MAX_MAPPINGS; i++) {
        if (!slots[i].start) {
            slot = i;
            break;
        }
    }
    if (slot < 0) {
        errno = EMFILE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    size_t skip = (size_t)offset % page_size;
    size_t size = skip + (size_t)length;
    /* with the GIL held: the slot is taken only once the mapping is made */
    void *base = mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, (off_t)(offset - (long long)skip));
    if (base == MAP_FAILED) return PyErr_SetFromErrno(PyExc_OSError);
    Mapping *m = PyObject_New(Mapping, &MappingType);
    if (!m) {
        munmap(base, size);
        return NULL;
    }
    m->base = (char *)base;
    m->size = size;
    m->data = (char *)base + skip;
    m->len = (Py_ssize_t)length;
    m->slot = slot;
    slots[slot].faulted = 0;
    __atomic_store_n(&slots[slot].end, (uintptr_t)base + size, __ATOMIC_RELAXED);
    __atomic_store_n(&slots[slot].start, (uintptr_t)base, __ATOMIC_RELEASE);
    live_count++;
    return (PyObject *)m;
}

static PyObject *filemap_live(PyObject *module, PyObject *noargs) {
    (void)module;
    (void)noargs;
    return PyLong_FromLong(live_count);
}

static PyMethodDef methods[] = {
    {"map", filemap_map, METH_VARARGS,
     "map(fd, offset, length) -> Mapping of the file's bytes [offset, offset + length) (see aggregator/_filemap.c)"},
    {"live", filemap_live, METH_NOARGS, "live() -> the number of mappings alive in this process"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "aggregator._filemap",
    "A plain file's bytes read in place (mmap), a truncation while mapped read as zeros and flagged, never a "
    "SIGBUS: see aggregator/_filemap.c.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__filemap(void) {
    long ps = sysconf(_SC_PAGESIZE);
    page_size = ps > 0 ? (uintptr_t)ps : 4096;
    if (PyType_Ready(&MappingType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    Py_INCREF(&MappingType);
    if (PyModule_AddObject(m, "Mapping", (PyObject *)&MappingType) < 0) {
        Py_DECREF(&MappingType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
