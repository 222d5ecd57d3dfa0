/* alerting._columns: the alert catch-up's loop over a chunk's sketches in C (optional: alerting/columns.py has
 * its Python twin, which the tests hold it to, and which takes over wherever this returns None).
 *
 * A 1M-event hour's catch-up adds ~5,200 sketches' runs of counts (a few hundred each) into its chunks'
 * matrices: one numpy slice-add per run from Python, ~1.5 us each; here one loop.
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

static PyMethodDef methods[] = {
    {"add_runs", (PyCFunction)(void (*)(void))add_runs, METH_FASTCALL, add_runs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "alerting._columns",
                                    "The alert catch-up's loop over a chunk's sketches in C.", -1, methods};

PyMODINIT_FUNC PyInit__columns(void) {
    return PyModule_Create(&module);
}
