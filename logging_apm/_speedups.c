/* logging_apm._speedups: the request event's line and the new traces' root spans in C (optional: built when a
 * compiler is there).
 *
 * ``RequestLine(formatter, fallback, tails, millis, fractions)`` is a callable that
 * ``OrjsonFormatter.__init__`` installs as the formatter's ``format_request``: called with a pending request
 * event (``logging_apm.emit.REQUEST``'s 9-tuple) it returns the bytes ``fallback(formatter, pending)``
 * returns (``OrjsonFormatter.format_request``, the Python reference), or that call's result itself whenever
 * this is not the plain case it writes: every value of the exact type the middleware gives (float duration
 * below 1e12 and end time, int status, str ids, a span tuple), no error type, the formatter's request
 * template made for this emitter, the (method, route, status) tail already cached in ``tails``, the
 * emitter clock's second already formatted and a non-negative millisecond. The reference computes and
 * caches what is missing, so the next line of the same kind is written here.
 *
 * The arithmetic is the reference's, in the same IEEE double operations: micros = trunc(duration * 1000.0 +
 * 0.5) (0 for a negative duration), the second trunc(end), the millisecond trunc((end - second) * 1000).
 * tests/logging_apm/test_formatters.py compares the two paths over random events.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *formatter;  /* the OrjsonFormatter */
    PyObject *fallback;   /* OrjsonFormatter.format_request (unbound) */
    PyObject *tails;      /* formatters._request_tails: {(method, route, status): str} */
    PyObject *millis;     /* emit._MILLIS: 1000 str, ".mmmZ" */
    PyObject *fractions;  /* formatters._FRACTIONS: 1000 str */
    /* The last (method, route, status) looked up in tails, and its tail: the next request is nearly always of
     * the same kind (the same method and route objects), and a tail is a function of its key. */
    PyObject *last_method, *last_route, *last_status, *last_tail;
    vectorcallfunc vectorcall;
} RequestLine;

static PyObject *str_request_parts, *str_clock, *str_cache;

static PyObject *fallback(RequestLine *self, PyObject *pending) {
    return PyObject_CallFunctionObjArgs(self->fallback, self->formatter, pending, NULL);
}

/* A str's UTF-8 bytes (NULL with an exception for a lone surrogate, as str.encode raises). */
static const char *utf8(PyObject *s, Py_ssize_t *size) { return PyUnicode_AsUTF8AndSize(s, size); }

/* ``a`` is ``b``, or both are exact str of the same text: a key tuple made of ``a`` finds what one made of ``b``
 * finds. Django makes the method anew for each request (``environ["REQUEST_METHOD"].upper()``), and a route
 * joined across include() too: comparing the text costs a few instructions, the key tuple, its hash (the new
 * string's first) and the lookup about four hundred. */
static int same_text(PyObject *a, PyObject *b) {
    if (a == b) return 1;
    if (b == NULL || !PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b) || !PyUnicode_IS_READY(a) ||
        !PyUnicode_IS_READY(b))
        return 0;
    Py_ssize_t size = PyUnicode_GET_LENGTH(a);
    return size == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b) &&
           memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)size * PyUnicode_KIND(a)) == 0;
}

static PyObject *line(RequestLine *self, PyObject *pending) {
    if (!PyTuple_CheckExact(pending) || PyTuple_GET_SIZE(pending) != 9) return fallback(self, pending);
    PyObject *emitter = PyTuple_GET_ITEM(pending, 1), *duration = PyTuple_GET_ITEM(pending, 2),
             *method = PyTuple_GET_ITEM(pending, 3), *route = PyTuple_GET_ITEM(pending, 4),
             *status = PyTuple_GET_ITEM(pending, 5), *error = PyTuple_GET_ITEM(pending, 6),
             *span = PyTuple_GET_ITEM(pending, 7), *end = PyTuple_GET_ITEM(pending, 8);
    if (error != Py_None || !PyFloat_CheckExact(duration) || !PyFloat_CheckExact(end) ||
        !PyLong_CheckExact(status) || !PyTuple_Check(span) || PyTuple_GET_SIZE(span) < 3 ||
        /* a tuple subclass (TraceContext) indexed as a tuple: span[i] is its item (not a __getitem__'s) */
        Py_TYPE(span)->tp_as_mapping->mp_subscript != PyTuple_Type.tp_as_mapping->mp_subscript)
        return fallback(self, pending);
    double ms = PyFloat_AS_DOUBLE(duration), when = PyFloat_AS_DOUBLE(end);
    if (!(ms < 1e12) || !(when >= 0.0 && when < 9e15)) return fallback(self, pending);
    PyObject *trace_id = PyTuple_GET_ITEM(span, 0), *span_id = PyTuple_GET_ITEM(span, 1),
             *parent = PyTuple_GET_ITEM(span, 2);
    if (!PyUnicode_CheckExact(trace_id) || !PyUnicode_CheckExact(span_id) ||
        (parent != Py_None && !PyUnicode_CheckExact(parent)))
        return fallback(self, pending);

    /* The template: formatter._request_parts == (emitter, (3 str) or None). */
    PyObject *parts = PyObject_GetAttr(self->formatter, str_request_parts);
    if (parts == NULL) return NULL;
    int usable = PyTuple_CheckExact(parts) && PyTuple_GET_SIZE(parts) == 2 && PyTuple_GET_ITEM(parts, 0) == emitter;
    PyObject *template = usable ? PyTuple_GET_ITEM(parts, 1) : NULL;
    /* A reference of its own before parts goes: parts may be the only one (a _request_parts made anew on
     * each read, a subclass's property, say), and the code below can run Python code (key comparisons). */
    Py_XINCREF(template);
    Py_DECREF(parts);
    if (template == Py_None) {
        Py_DECREF(template);
        Py_RETURN_NONE;
    }
    if (template == NULL || !PyTuple_CheckExact(template) || PyTuple_GET_SIZE(template) != 3) {
        Py_XDECREF(template);
        return fallback(self, pending);
    }

    PyObject *result = NULL, *key = NULL, *clock = NULL, *cache = NULL;
    if (self->last_status != NULL && same_text(method, self->last_method) && same_text(route, self->last_route) &&
        (status == self->last_status || PyObject_RichCompareBool(status, self->last_status, Py_EQ) == 1)) {
        key = Py_NewRef(self->last_tail);  /* key holds the tail */
    } else {
        key = PyTuple_Pack(3, method, route, status);
        if (key == NULL) goto done;
        PyObject *tail = PyDict_GetItemWithError(self->tails, key);  /* borrowed */
        if (tail == NULL || !PyUnicode_CheckExact(tail)) {
            if (!PyErr_Occurred()) result = fallback(self, pending);
            goto done;
        }
        Py_INCREF(tail);
        Py_SETREF(key, tail);  /* key now holds the tail */
        Py_INCREF(method);
        Py_XSETREF(self->last_method, method);
        Py_INCREF(route);
        Py_XSETREF(self->last_route, route);
        Py_INCREF(status);
        Py_XSETREF(self->last_status, status);
        Py_INCREF(tail);
        Py_XSETREF(self->last_tail, tail);
    }

    /* The timestamp: the clock's cached (second, prefix) and the millisecond suffix. */
    clock = PyObject_GetAttr(emitter, str_clock);
    if (clock == NULL) goto done;
    cache = PyObject_GetAttr(clock, str_cache);
    if (cache == NULL) goto done;
    double second = trunc(when);
    long long millis = (long long)((when - second) * 1000);
    if (!PyTuple_CheckExact(cache) || PyTuple_GET_SIZE(cache) != 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(cache, 0))
        || !PyUnicode_CheckExact(PyTuple_GET_ITEM(cache, 1)) || millis < 0 || millis > 999) {
        result = fallback(self, pending);
        goto done;
    }
    int overflow = 0;
    long long cached_second = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(cache, 0), &overflow);
    if (cached_second == -1 && PyErr_Occurred()) goto done;
    if (overflow || (double)cached_second != second) {
        result = fallback(self, pending);
        goto done;
    }

    long long micros = ms >= 0 ? (long long)(ms * 1000.0 + 0.5) : 0;
    /* micros / 1000 in decimal (not negative, below 1e12 + 1): snprintf costs about 400 instructions */
    char whole[24];
    int whole_size = 0;
    for (long long rest = micros / 1000; whole_size == 0 || rest; rest /= 10) whole[whole_size++] = '0' + rest % 10;
    for (int i = 0, j = whole_size - 1; i < j; i++, j--) {
        char digit = whole[i];
        whole[i] = whole[j];
        whole[j] = digit;
    }

    PyObject *strings[9] = {PyTuple_GET_ITEM(cache, 1), PyTuple_GET_ITEM(self->millis, millis),
                            PyTuple_GET_ITEM(template, 0), PyTuple_GET_ITEM(self->fractions, micros % 1000),
                            PyTuple_GET_ITEM(template, 1), trace_id, span_id,
                            parent == Py_None ? NULL : parent, key};
    const char *text[9];
    Py_ssize_t size[9], total = 0;
    for (int i = 0; i < 9; i++) {
        if (strings[i] == NULL) { text[i] = ""; size[i] = 0; continue; }
        text[i] = utf8(strings[i], &size[i]);
        if (text[i] == NULL) goto done;
        total += size[i];
    }
    static const char head[] = "{\"timestamp\":\"", span_key[] = "\",\"span_id\":\"",
                      parent_key[] = ",\"parent_span_id\":\"";
    total += (sizeof head - 1) + whole_size + (sizeof span_key - 1) + 1 /* span's quote */ + 2 /* }\n */;
    if (parent != Py_None) total += (sizeof parent_key - 1) + 1;
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) goto done;
    char *out = PyBytes_AS_STRING(result);
#define PUT(p, n) do { memcpy(out, (p), (n)); out += (n); } while (0)
    PUT(head, sizeof head - 1);
    PUT(text[0], size[0]);        /* the second */
    PUT(text[1], size[1]);        /* .mmmZ */
    PUT(text[2], size[2]);        /* ", schema, kind, "duration_ms": */
    PUT(whole, whole_size);
    PUT(text[3], size[3]);        /* the duration's fraction */
    PUT(text[4], size[4]);        /* outcome, resource, "trace_id":" */
    PUT(text[5], size[5]);
    PUT(span_key, sizeof span_key - 1);
    PUT(text[6], size[6]);
    *out++ = '"';
    if (parent != Py_None) {
        PUT(parent_key, sizeof parent_key - 1);
        PUT(text[7], size[7]);
        *out++ = '"';
    }
    PUT(text[8], size[8]);        /* method, route, status */
    *out++ = '}';
    *out++ = '\n';
#undef PUT
done:
    Py_XDECREF(key);
    Py_XDECREF(clock);
    Py_XDECREF(cache);
    Py_DECREF(template);
    return result;
}

static PyObject *RequestLine_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "format_request takes one argument (the pending request event)");
        return NULL;
    }
    return line((RequestLine *)callable, args[0]);
}

static PyObject *RequestLine_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *formatter, *fb, *tails, *millis, *fractions;
    if (!PyArg_ParseTuple(args, "OOO!O!O!:RequestLine", &formatter, &fb, &PyDict_Type, &tails, &PyTuple_Type,
                          &millis, &PyTuple_Type, &fractions))
        return NULL;
    if (PyTuple_GET_SIZE(millis) != 1000 || PyTuple_GET_SIZE(fractions) != 1000) {
        PyErr_SetString(PyExc_ValueError, "RequestLine: millis and fractions need 1000 items each");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 1000; i++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(millis, i)) || !PyUnicode_CheckExact(PyTuple_GET_ITEM(fractions, i))) {
            PyErr_SetString(PyExc_TypeError, "RequestLine: millis and fractions hold str");
            return NULL;
        }
    RequestLine *self = (RequestLine *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(formatter); self->formatter = formatter;
    Py_INCREF(fb); self->fallback = fb;
    Py_INCREF(tails); self->tails = tails;
    Py_INCREF(millis); self->millis = millis;
    Py_INCREF(fractions); self->fractions = fractions;
    self->vectorcall = RequestLine_vectorcall;
    return (PyObject *)self;
}

static int RequestLine_traverse(RequestLine *self, visitproc visit, void *arg) {
    Py_VISIT(self->formatter);
    Py_VISIT(self->fallback);
    Py_VISIT(self->tails);
    Py_VISIT(self->millis);
    Py_VISIT(self->fractions);
    Py_VISIT(self->last_method);
    Py_VISIT(self->last_route);
    Py_VISIT(self->last_status);
    Py_VISIT(self->last_tail);
    return 0;
}

static int RequestLine_clear(RequestLine *self) {
    Py_CLEAR(self->formatter);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->tails);
    Py_CLEAR(self->millis);
    Py_CLEAR(self->fractions);
    Py_CLEAR(self->last_method);
    Py_CLEAR(self->last_route);
    Py_CLEAR(self->last_status);
    Py_CLEAR(self->last_tail);
    return 0;
}

static void RequestLine_dealloc(RequestLine *self) {
    PyObject_GC_UnTrack(self);
    RequestLine_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *RequestLine_call(PyObject *self, PyObject *args, PyObject *kwds) {
    return PyVectorcall_Call(self, args, kwds);
}

static PyTypeObject RequestLineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "logging_apm._speedups.RequestLine",
    .tp_basicsize = sizeof(RequestLine),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The request event's line (see the module docstring).",
    .tp_new = RequestLine_new,
    .tp_traverse = (traverseproc)RequestLine_traverse,
    .tp_clear = (inquiry)RequestLine_clear,
    .tp_dealloc = (destructor)RequestLine_dealloc,
    .tp_call = RequestLine_call,
    .tp_vectorcall_offset = offsetof(RequestLine, vectorcall),
};

/* ``roots(raw, cls)``: tracing._draw_roots's roots from its random bytes, in C (about 700 instructions less a
 * root than the hex, split and zip in Python). ``raw`` holds 24 * n bytes: n trace ids (16 bytes each), then n
 * span ids (8 bytes each); the i-th root is ``cls`` (TraceContext, a tuple subclass) of (trace id i, span id
 * i, None, True), ids in lowercase hex; a root with an all-zero id (invalid in W3C) is left out. Same list
 * as tracing._roots_of(raw) (tests/logging_apm/test_tracing.py compares them). */
static PyObject *hex_id(const unsigned char *bytes, Py_ssize_t size, int *zero) {
    static const char digits[] = "0123456789abcdef";
    PyObject *text = PyUnicode_New(2 * size, 127);
    if (text == NULL) return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    unsigned char any = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        any |= bytes[i];
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    *zero = any == 0;
    return text;
}

static PyObject *roots(PyObject *module, PyObject *args) {
    Py_buffer raw;
    PyTypeObject *cls;
    if (!PyArg_ParseTuple(args, "y*O!:roots", &raw, &PyType_Type, &cls)) return NULL;
    PyObject *result = NULL;
    if (!PyType_IsSubtype(cls, &PyTuple_Type) || raw.len % 24) {
        PyErr_SetString(PyExc_ValueError, "roots: a tuple subclass and 24 * n bytes");
        goto done;
    }
    Py_ssize_t n = raw.len / 24;
    const unsigned char *bytes = raw.buf;
    result = PyList_New(0);
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int zero_trace, zero_span;
        PyObject *trace = hex_id(bytes + 16 * i, 16, &zero_trace);
        PyObject *span = trace == NULL ? NULL : hex_id(bytes + 16 * n + 8 * i, 8, &zero_span);
        PyObject *root = span == NULL ? NULL : cls->tp_alloc(cls, 4);
        if (root == NULL) {
            Py_XDECREF(trace);
            Py_XDECREF(span);
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(root, 0, trace);
        PyTuple_SET_ITEM(root, 1, span);
        PyTuple_SET_ITEM(root, 2, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(root, 3, Py_NewRef(Py_True));
        int failed = zero_trace || zero_span ? 0 : PyList_Append(result, root);
        Py_DECREF(root);
        if (failed < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }
done:
    PyBuffer_Release(&raw);
    return result;
}

static PyMethodDef functions[] = {
    {"roots", roots, METH_VARARGS, "tracing._draw_roots's roots from its random bytes (see _speedups.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "logging_apm._speedups",
                                    "The request event's line in C (see RequestLine).", -1, functions};

PyMODINIT_FUNC PyInit__speedups(void) {
    str_request_parts = PyUnicode_InternFromString("_request_parts");
    str_clock = PyUnicode_InternFromString("_clock");
    str_cache = PyUnicode_InternFromString("_cache");
    if (str_request_parts == NULL || str_clock == NULL || str_cache == NULL) return NULL;
    if (PyType_Ready(&RequestLineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&RequestLineType);
    if (PyModule_AddObject(m, "RequestLine", (PyObject *)&RequestLineType) < 0) {
        Py_DECREF(&RequestLineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
