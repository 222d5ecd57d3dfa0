/* alerting._columns: the alert catch-up's loops over a chunk's counts in C (optional: alerting/columns.py has
 * their Python twins, which the tests hold them to, and which take over wherever these return False).
 *
 * A 1M-event hour's catch-up adds ~5,200 sketches' runs of counts (a few hundred each) into its chunks'
 * matrices: one numpy slice-add per run from Python, ~1.5 us each; here one loop (add_runs). The matrices are
 * then summed along each row and over the rows (summed): the 2.1M cells of the 5M-event benchmark log's hour
 * took 5.3 ms with numpy (~2.5 ns a cell: its cumsum is a serial accumulate through memory), 1.9 ms here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A C-contiguous int64 view of obj (writable if asked): 0, or -1 (no exception set: not such an array). */
static int int64_view(PyObject *obj, Py_buffer *view, int writable) {
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Clear();
        return -1;
    }
    const char *f = view->format;
    if (view->itemsize != 8 || f == NULL || (strcmp(f, "l") != 0 && strcmp(f, "q") != 0
                                             && strcmp(f, "<l") != 0 && strcmp(f, "<q") != 0
                                             && strcmp(f, "=l") != 0 && strcmp(f, "=q") != 0)) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(add_runs_doc,
"add_runs(flat, runs, places, starts, lengths) -> bool\n\n"
"alerting.columns._add_runs: for each i in order, flat[places[i]:places[i] + lengths[i]] +=\n"
"runs[starts[i]:starts[i] + lengths[i]], adding as numpy adds int64s (wrapping). All five are int64 arrays,\n"
"the last three of one length. False, with flat unchanged, when one is not a C-contiguous int64 array (flat\n"
"writable) or a run lies outside flat or runs: the caller's loop then does what it does.");

static PyObject *add_runs(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "add_runs() takes 5 arguments");
        return NULL;
    }
    Py_buffer views[5];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 5; got++) {
        if (int64_view(args[got], &views[got], got == 0) < 0) {
            result = Py_NewRef(Py_False);
            goto done;
        }
    }
    uint64_t *flat = (uint64_t *)views[0].buf;
    const uint64_t *runs = (const uint64_t *)views[1].buf;
    const int64_t *places = views[2].buf, *starts = views[3].buf, *lengths = views[4].buf;
    Py_ssize_t cells = views[0].len / 8, counts = views[1].len / 8, n = views[2].len / 8;
    if (views[3].len / 8 != n || views[4].len / 8 != n) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) { /* every run checked before flat changes */
        int64_t place = places[i], start = starts[i], len = lengths[i];
        if (len < 0 || place < 0 || start < 0 || len > cells || place > cells - len || len > counts
            || start > counts - len) {
            result = Py_NewRef(Py_False);
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t *into = flat + places[i];
        const uint64_t *from = runs + starts[i];
        for (int64_t k = 0, len = lengths[i]; k < len; k++) {
            into[k] += from[k]; /* unsigned: wraps modulo 2**64, as numpy's int64 addition does */
        }
    }
    result = Py_NewRef(Py_True);
done:
    for (int k = 0; k < got; k++) {
        PyBuffer_Release(&views[k]);
    }
    return result;
}

PyDoc_STRVAR(summed_doc,
"summed(flat, rows, width) -> bool\n\n"
"alerting.columns._summed_counts' sums, in place: flat, a C-contiguous writable int64 array of rows x width\n"
"cells, summed along each row (numpy.cumsum(axis=1)) and then over the rows (each row plus the one before,\n"
"from the second on), adding as numpy adds int64s (wrapping): the same int64s. False, with flat unchanged,\n"
"when it is not such an array of exactly rows x width cells (rows, width >= 0): the caller's numpy then\n"
"does it.");

static PyObject *summed(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "summed() takes 3 arguments");
        return NULL;
    }
    Py_ssize_t rows = PyLong_AsSsize_t(args[1]);
    if (rows == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t width = PyLong_AsSsize_t(args[2]);
    if (width == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (int64_view(args[0], &view, 1) < 0) {
        Py_RETURN_FALSE;
    }
    Py_ssize_t cells = view.len / 8;
    if (rows < 0 || width < 0 || (width && rows > cells / width) || rows * width != cells) {
        PyBuffer_Release(&view);
        Py_RETURN_FALSE;
    }
    uint64_t *row = (uint64_t *)view.buf; /* unsigned: wraps modulo 2**64, as numpy's int64 addition does */
    const uint64_t *above = NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++, above = row, row += width) {
        uint64_t along = 0;
        if (above == NULL) {
            for (Py_ssize_t c = 0; c < width; c++) {
                along += row[c];
                row[c] = along;
            }
        } else {
            for (Py_ssize_t c = 0; c < width; c++) {
                along += row[c];
                row[c] = along + above[c];
            }
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"add_runs", (PyCFunction)(void (*)(void))add_runs, METH_FASTCALL, add_runs_doc},
    {"summed", (PyCFunction)(void (*)(void))summed, METH_FASTCALL, summed_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "alerting._columns",
                                    "The alert catch-up's loops over a chunk's counts in C.", -1, methods};

PyMODINIT_FUNC PyInit__columns(void) {
    return PyModule_Create(&module);
}
