/* logging_apm._speedups: the request event's line, the new traces' root spans and the request middleware's sync
 * path in C (optional: built when a compiler is there).
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
#include <structmember.h>
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
        PyObject_GC_UnTrack(root);  /* two str, None, True: no cycle possible; see emit_request's pending tuple */
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


/* ``RequestMiddleware``: the base class of ``middleware.APMMiddleware`` whose call is the sync request path
 * of ``middleware._python_call`` (the Python reference, still the path without this extension), step for
 * step, in one C function: Python's frames and bytecode for the middleware's ``__call__``, the inlined
 * ``Emitter.emit_request`` and ``_set_traceparent`` are what an instrumented request added most to a
 * minimal one (see docs/emission.md). Everything is read where the Python path reads it, at each call: the
 * middleware module's globals (``KNOWN_METHODS``, ``_perf``, ``_time``, the helpers, so a patched one is
 * used), ``emit._emitter``, the request's and response's attributes. What is not the plain case is handed to
 * the Python helpers that the reference calls: a ``traceparent`` header (``_continued``), no root left
 * (``_new_root``), an exception from the view (``_finish``), a failure (``instrumentation_failed``), an
 * emitter whose ``emit_request`` is not ``Emitter.emit_request`` or a logger or handler not in their plain
 * state (the ``emit_request`` method itself), a response or span the header shortcut does not know
 * (``_set_traceparent``). tests/logging_apm/test_middleware.py runs the same cases through both. */
typedef struct {
    PyObject_HEAD
    PyObject *get_response;
    char is_async;
} Middleware;

/* Set once by middleware_setup(): the middleware module's and emit module's globals, Emitter,
 * Emitter.emit_request, tracing._roots, tracing._current. */
static PyObject *mw_globals, *emit_globals, *emitter_type, *emit_request_fn, *roots_list, *current_var;
static PyObject *str_acall, *str_emitter, *str_enabled, *str_META, *str_traceparent_key, *str_get, *str_continued,
    *str_new_root, *str_perf, *str_time, *str_finish, *str_failed, *str_status_code, *str_method, *str_known,
    *str_other, *str_resolver_match, *str_route, *str_unmatched, *str_error_attr, *str_emit_request,
    *str_logger, *str_lcache, *str_disabled, *str_handlers, *str_propagate, *str_filters, *str_background,
    *str_level, *str_thread, *str_closed, *str_queue, *str_qsize, *str_max_queue, *str_put, *str_request_marker,
    *str_set_traceparent, *str_headers, *str_store, *str_traceparent, *str_begin_name, *str_finish_name;
static PyObject *info_level, *thousand, *five_hundred;  /* 500 is past the small ints CPython keeps */

/* A module global (borrowed), or NULL with NameError. */
static PyObject *global(PyObject *dict, PyObject *name) {
    PyObject *value = PyDict_GetItemWithError(dict, name);
    if (value == NULL && !PyErr_Occurred()) PyErr_Format(PyExc_NameError, "name '%U' is not defined", name);
    return value;
}

static PyObject *call_global(PyObject *dict, PyObject *name, PyObject *const *args, size_t nargs) {
    PyObject *fn = global(dict, name);
    if (fn == NULL) return NULL;
    Py_INCREF(fn);
    PyObject *result = PyObject_Vectorcall(fn, args, nargs, NULL);
    Py_DECREF(fn);
    return result;
}

/* ``getattr(obj, name, None)`` (new reference; NULL only for an error other than AttributeError). */
static PyObject *attr_or_none(PyObject *obj, PyObject *name) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        value = Py_NewRef(Py_None);
    }
    return value;
}

/* bool(obj.name): 1, 0, or -1 with an exception. */
static int attr_true(PyObject *obj, PyObject *name) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) return -1;
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* ``except Exception as exc: instrumentation_failed(where, exc)``: 0 when handled, -1 when the pending
 * exception is not an Exception or the report itself failed (then that error is pending). */
static int failed(PyObject *where) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) PyException_SetTraceback(value, tb);
    PyObject *args[2] = {where, value};
    PyObject *result = call_global(mw_globals, str_failed, args, 2);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (result == NULL) return -1;
    Py_DECREF(result);
    return 0;
}

/* The request's span (new reference): a child of a valid incoming traceparent, else a new root. */
static PyObject *begin(PyObject *request) {
    PyObject *meta = PyObject_GetAttr(request, str_META), *header;
    if (meta == NULL) return NULL;
    if (PyDict_CheckExact(meta)) {
        header = PyDict_GetItemWithError(meta, str_traceparent_key);
        if (header == NULL && PyErr_Occurred()) {
            Py_DECREF(meta);
            return NULL;
        }
        header = Py_NewRef(header == NULL ? Py_None : header);
    } else {
        header = PyObject_CallMethodOneArg(meta, str_get, str_traceparent_key);
    }
    Py_DECREF(meta);
    if (header == NULL) return NULL;
    int present = PyObject_IsTrue(header);
    PyObject *ctx = NULL;
    if (present > 0) {
        ctx = call_global(mw_globals, str_continued, &header, 1);
    } else if (present == 0) {
        Py_ssize_t n = PyList_GET_SIZE(roots_list);  /* _pop_root(), or _new_root() when none is left */
        if (n > 0) {
            ctx = Py_NewRef(PyList_GET_ITEM(roots_list, n - 1));
            if (PyList_SetSlice(roots_list, n - 1, n, NULL) < 0) Py_CLEAR(ctx);
        } else {
            ctx = call_global(mw_globals, str_new_root, NULL, 0);
        }
    }
    Py_DECREF(header);
    return ctx;
}

/* Emitter.emit_request(duration, method, route, status, error, span, now), its plain case written out: the
 * logger enabled for INFO by its cache, one BackgroundHandler without filters, level INFO or below, listener
 * started, open, queue not full: the pending tuple put on its queue. Anything else calls the method. */
static int emit_request(PyObject *emitter, PyObject *const *values) {
    PyObject *logger = NULL, *handlers = NULL, *queue = NULL, *size = NULL, *limit = NULL;
    int result = -1;
    if (Py_TYPE(emitter) != (PyTypeObject *)emitter_type ||
        _PyType_Lookup(Py_TYPE(emitter), str_emit_request) != emit_request_fn)
        goto call;
    logger = PyObject_GetAttr(emitter, str_logger);
    if (logger == NULL) goto done;
    PyObject *cache = PyObject_GetAttr(logger, str_lcache);
    if (cache == NULL) goto done;
    PyObject *enabled = PyDict_CheckExact(cache) ? PyDict_GetItemWithError(cache, info_level) : NULL;
    int on = enabled != NULL && enabled == Py_True;
    Py_DECREF(cache);
    if (PyErr_Occurred()) goto done;
    if (!on) goto call;
    int flag;
    if ((flag = attr_true(logger, str_disabled)) != 0) goto check;
    handlers = PyObject_GetAttr(logger, str_handlers);
    if (handlers == NULL) goto done;
    if (!PyList_CheckExact(handlers) || PyList_GET_SIZE(handlers) != 1) goto call;
    if ((flag = attr_true(logger, str_propagate)) != 0) goto check;
    if ((flag = attr_true(logger, str_filters)) != 0) goto check;
    /* Borrowed from handlers, which is held: no Python code runs until the put (the reads below are of an
     * exact BackgroundHandler's plain attributes, its queue's methods are C). */
    PyObject *handler = PyList_GET_ITEM(handlers, 0);
    PyObject *background = global(emit_globals, str_background);
    if (background == NULL) goto done;
    if ((PyObject *)Py_TYPE(handler) != background) goto call;
    if ((flag = attr_true(handler, str_filters)) != 0) goto check;
    PyObject *level = PyObject_GetAttr(handler, str_level);
    if (level == NULL) goto done;
    int low = PyLong_CheckExact(level) && PyLong_AsLong(level) <= 20;
    Py_DECREF(level);
    if (PyErr_Occurred()) goto done;
    if (!low) goto call;
    PyObject *thread = PyObject_GetAttr(handler, str_thread);
    if (thread == NULL) goto done;
    Py_DECREF(thread);
    if (thread == Py_None) goto call;
    if ((flag = attr_true(handler, str_closed)) != 0) goto check;
    queue = PyObject_GetAttr(handler, str_queue);
    if (queue == NULL) goto done;
    size = PyObject_CallMethodNoArgs(queue, str_qsize);
    if (size == NULL) goto done;
    limit = PyObject_GetAttr(handler, str_max_queue);
    if (limit == NULL) goto done;
    if ((flag = PyObject_RichCompareBool(size, limit, Py_LT)) < 0) goto done;
    if (!flag) goto call;
    PyObject *marker = global(emit_globals, str_request_marker);
    if (marker == NULL) goto done;
    PyObject *pending = PyTuple_New(9);
    if (pending == NULL) goto done;
    PyTuple_SET_ITEM(pending, 0, Py_NewRef(marker));
    PyTuple_SET_ITEM(pending, 1, Py_NewRef(emitter));
    for (int i = 0; i < 7; i++) PyTuple_SET_ITEM(pending, i + 2, Py_NewRef(values[i]));
    /* Not tracked by the garbage collector: the tuple waits in the queue for the listener (up to its interval,
     * hundreds of them under load), so young collections kept walking and promoting them (about 0.2 us a
     * request in collections on the minimal request, gc.callbacks). It cannot be part of a garbage cycle:
     * the emitter (held by emit._emitter) is its only container, and the queue drops it once written. */
    PyObject_GC_UnTrack(pending);
    PyObject *put = PyObject_CallMethodOneArg(queue, str_put, pending);
    Py_DECREF(pending);
    if (put == NULL) goto done;
    Py_DECREF(put);
    result = 0;
    goto done;
check:  /* flag: 1 (not the plain case: the method) or -1 (an error) */
    if (flag < 0) goto done;
call:
    {
        PyObject *args[8] = {emitter, values[0], values[1], values[2], values[3], values[4], values[5], values[6]};
        PyObject *r = PyObject_VectorcallMethod(str_emit_request, args, 8, NULL);
        if (r != NULL) {
            Py_DECREF(r);
            result = 0;
        }
    }
done:
    Py_XDECREF(logger);
    Py_XDECREF(handlers);
    Py_XDECREF(queue);
    Py_XDECREF(size);
    Py_XDECREF(limit);
    return result;
}

/* _set_traceparent(response, ctx): the header written into Django's header store when the span is a plain
 * tuple of ASCII str ids and the response has a dict ``headers._store``; the Python function otherwise. */
static int set_traceparent(PyObject *response, PyObject *ctx) {
    if (PyTuple_Check(ctx) && PyTuple_GET_SIZE(ctx) >= 4 &&
        Py_TYPE(ctx)->tp_as_mapping->mp_subscript == PyTuple_Type.tp_as_mapping->mp_subscript) {
        PyObject *trace_id = PyTuple_GET_ITEM(ctx, 0), *span_id = PyTuple_GET_ITEM(ctx, 1);
        if (PyUnicode_CheckExact(trace_id) && PyUnicode_CheckExact(span_id) && PyUnicode_IS_READY(trace_id) &&
            PyUnicode_IS_READY(span_id) && PyUnicode_IS_ASCII(trace_id) && PyUnicode_IS_ASCII(span_id)) {
            PyObject *headers = PyObject_GetAttr(response, str_headers);
            if (headers == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
                PyErr_Clear();
                goto python;
            }
            PyObject *store = PyObject_GetAttr(headers, str_store);
            Py_DECREF(headers);
            if (store == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
                PyErr_Clear();
                goto python;
            }
            if (!PyDict_CheckExact(store)) {
                Py_DECREF(store);
                goto python;
            }
            int sampled = PyObject_IsTrue(PyTuple_GET_ITEM(ctx, 3));
            if (sampled < 0) {
                Py_DECREF(store);
                return -1;
            }
            Py_ssize_t trace_size = PyUnicode_GET_LENGTH(trace_id), span_size = PyUnicode_GET_LENGTH(span_id);
            PyObject *value = PyUnicode_New(3 + trace_size + 1 + span_size + 3, 127);
            PyObject *entry = value == NULL ? NULL : PyTuple_New(2);
            if (entry == NULL) {
                Py_XDECREF(value);
                Py_DECREF(store);
                return -1;
            }
            Py_UCS1 *out = PyUnicode_1BYTE_DATA(value);
            memcpy(out, "00-", 3);
            memcpy(out + 3, PyUnicode_1BYTE_DATA(trace_id), trace_size);
            out[3 + trace_size] = '-';
            memcpy(out + 4 + trace_size, PyUnicode_1BYTE_DATA(span_id), span_size);
            memcpy(out + 4 + trace_size + span_size, sampled ? "-01" : "-00", 3);
            PyTuple_SET_ITEM(entry, 0, Py_NewRef(str_traceparent));
            PyTuple_SET_ITEM(entry, 1, value);
            int status = PyDict_SetItem(store, str_traceparent, entry);
            Py_DECREF(entry);
            Py_DECREF(store);
            return status;
        }
    }
python:
    {
        PyObject *args[2] = {response, ctx};
        PyObject *r = call_global(mw_globals, str_set_traceparent, args, 2);
        if (r == NULL) return -1;
        Py_DECREF(r);
        return 0;
    }
}

/* (end - start) * 1000.0, in the same double operations when both are floats. */
static PyObject *duration_ms(PyObject *start, PyObject *end) {
    if (PyFloat_CheckExact(start) && PyFloat_CheckExact(end))
        return PyFloat_FromDouble((PyFloat_AS_DOUBLE(end) - PyFloat_AS_DOUBLE(start)) * 1000.0);
    PyObject *elapsed = PyNumber_Subtract(end, start);
    if (elapsed == NULL) return NULL;
    PyObject *ms = PyNumber_Multiply(elapsed, thousand);
    Py_DECREF(elapsed);
    return ms;
}

/* After the view returned: the event's values, the event, the header. 0, or -1 with an exception. */
static int finish(PyObject *request, PyObject *response, PyObject *start, PyObject *end, PyObject *now,
                  PyObject *ctx) {
    PyObject *status = NULL, *method = NULL, *match = NULL, *route = NULL, *error = NULL, *ms = NULL;
    int result = -1;
    status = PyObject_GetAttr(response, str_status_code);
    if (status == NULL) goto done;
    method = PyObject_GetAttr(request, str_method);
    if (method == NULL) goto done;
    PyObject *known = global(mw_globals, str_known);
    if (known == NULL) goto done;
    Py_INCREF(known);
    int is_known = PySequence_Contains(known, method);
    Py_DECREF(known);
    if (is_known < 0) goto done;
    if (!is_known) {
        PyObject *other = global(mw_globals, str_other);
        if (other == NULL) goto done;
        Py_SETREF(method, Py_NewRef(other));
    }
    match = attr_or_none(request, str_resolver_match);
    if (match == NULL) goto done;
    if (match != Py_None) {
        route = PyObject_GetAttr(match, str_route);
        if (route == NULL) goto done;
        int truth = PyObject_IsTrue(route);
        if (truth < 0) goto done;
        if (!truth) {
            Py_CLEAR(route);
        } else if (!PyUnicode_CheckExact(route)) {
            Py_SETREF(route, PyObject_Str(route));
            if (route == NULL) goto done;
        }
    }
    if (route == NULL) {
        PyObject *unmatched = global(mw_globals, str_unmatched);
        if (unmatched == NULL) goto done;
        route = Py_NewRef(unmatched);
    }
    int failure = PyObject_RichCompareBool(status, five_hundred, Py_GE);
    if (failure < 0) goto done;
    if (failure) {
        PyObject *name = global(mw_globals, str_error_attr);
        if (name == NULL) goto done;
        Py_INCREF(name);  /* a request's __getattr__ may run any code */
        error = attr_or_none(request, name);
        Py_DECREF(name);
        if (error == NULL) goto done;
        int truth = PyObject_IsTrue(error);
        if (truth < 0) goto done;
        if (!truth) {
            Py_SETREF(error, PyObject_Str(status));
            if (error == NULL) goto done;
        }
    } else {
        error = Py_NewRef(Py_None);
    }
    PyObject *emitter = global(emit_globals, str_emitter);  /* read again: it may have been reconfigured */
    if (emitter == NULL) goto done;
    Py_INCREF(emitter);
    int enabled = attr_true(emitter, str_enabled);
    if (enabled > 0) {
        ms = duration_ms(start, end);
        if (ms == NULL) enabled = -1;
        else {
            PyObject *values[7] = {ms, method, route, status, error, ctx, now};
            enabled = emit_request(emitter, values);
        }
    }
    Py_DECREF(emitter);
    if (enabled < 0) goto done;
    if (ctx != Py_None && set_traceparent(response, ctx) < 0) goto done;
    result = 0;
done:
    Py_XDECREF(status);
    Py_XDECREF(method);
    Py_XDECREF(match);
    Py_XDECREF(route);
    Py_XDECREF(error);
    Py_XDECREF(ms);
    return result;
}

static PyObject *Middleware_call(Middleware *self, PyObject *args, PyObject *kwds) {
    PyObject *request;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_UnpackTuple(args, "APMMiddleware", 1, 1, &request))
        return NULL;
    if (mw_globals == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RequestMiddleware: middleware_setup() was not called");
        return NULL;
    }
    if (self->is_async) return PyObject_CallMethodOneArg((PyObject *)self, str_acall, request);
    if (self->get_response == NULL) {
        PyErr_SetString(PyExc_AttributeError, "'APMMiddleware' object has no attribute 'get_response'");
        return NULL;
    }
    PyObject *get_response = Py_NewRef(self->get_response);
    PyObject *emitter = global(emit_globals, str_emitter);
    if (emitter == NULL) {
        Py_DECREF(get_response);
        return NULL;
    }
    int enabled = attr_true(emitter, str_enabled);
    if (enabled <= 0) {
        PyObject *response = enabled < 0 ? NULL : PyObject_CallOneArg(get_response, request);
        Py_DECREF(get_response);
        return response;
    }
    PyObject *ctx = begin(request), *token = NULL, *start = NULL, *end = NULL, *now = NULL, *response = NULL;
    if (ctx == NULL) {
        if (failed(str_begin_name) < 0) goto fail;
        ctx = Py_NewRef(Py_None);
    }
    token = PyContextVar_Set(current_var, ctx);
    if (token == NULL) goto fail;
    start = call_global(mw_globals, str_perf, NULL, 0);
    if (start == NULL) goto reset;
    response = PyObject_CallOneArg(get_response, request);
    if (response == NULL) {
        /* except BaseException as failure: _finish(request, None, start, ctx, failure); reset; raise */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) PyException_SetTraceback(value, tb);
        PyObject *fargs[5] = {request, Py_None, start, ctx, value};
        PyObject *r = call_global(mw_globals, str_finish, fargs, 5);
        if (r == NULL) {
            _PyErr_ChainExceptions(type, value, tb);
            goto fail;
        }
        Py_DECREF(r);
        if (PyContextVar_Reset(current_var, token) < 0) {
            _PyErr_ChainExceptions(type, value, tb);
            goto fail;
        }
        PyErr_Restore(type, value, tb);
        goto fail;
    }
    end = call_global(mw_globals, str_perf, NULL, 0);
    now = end == NULL ? NULL : call_global(mw_globals, str_time, NULL, 0);
    if (now == NULL) {
        Py_CLEAR(response);
        goto reset;
    }
    if (finish(request, response, start, end, now, ctx) < 0 && failed(str_finish_name) < 0) {
        Py_CLEAR(response);
        goto reset;
    }
    if (PyContextVar_Reset(current_var, token) < 0) Py_CLEAR(response);
    goto out;
reset:  /* an error is pending: reset the span all the same, keeping that error */
    {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (PyContextVar_Reset(current_var, token) < 0) _PyErr_ChainExceptions(type, value, tb);
        else PyErr_Restore(type, value, tb);
    }
fail:
    Py_CLEAR(response);
out:
    Py_DECREF(get_response);
    Py_XDECREF(ctx);
    Py_XDECREF(token);
    Py_XDECREF(start);
    Py_XDECREF(end);
    Py_XDECREF(now);
    return response;
}

static int Middleware_traverse(Middleware *self, visitproc visit, void *arg) {
    Py_VISIT(self->get_response);  /* a subclass's type is visited by subtype_traverse */
    return 0;
}

static int Middleware_clear(Middleware *self) {
    Py_CLEAR(self->get_response);
    return 0;
}

static void Middleware_dealloc(Middleware *self) {
    /* A subclass's instance comes here from subtype_dealloc, which releases its type afterwards. */
    PyObject_GC_UnTrack(self);
    Middleware_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Middleware_members[] = {
    {"get_response", T_OBJECT_EX, offsetof(Middleware, get_response), 0, "the next layer of the stack"},
    {"_async", T_BOOL, offsetof(Middleware, is_async), 0, "get_response is a coroutine function"},
    {NULL},
};

static PyTypeObject MiddlewareType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "logging_apm._speedups.RequestMiddleware",
    .tp_basicsize = sizeof(Middleware),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The request middleware's sync path (see _speedups.c); APMMiddleware's base.",
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)Middleware_traverse,
    .tp_clear = (inquiry)Middleware_clear,
    .tp_dealloc = (destructor)Middleware_dealloc,
    .tp_call = (ternaryfunc)Middleware_call,
    .tp_members = Middleware_members,
};

static PyObject *middleware_setup(PyObject *module, PyObject *args) {
    PyObject *g, *eg, *et, *er, *roots, *var;
    if (!PyArg_ParseTuple(args, "O!O!O!OO!O!:middleware_setup", &PyDict_Type, &g, &PyDict_Type, &eg, &PyType_Type,
                          &et, &er, &PyList_Type, &roots, &PyContextVar_Type, &var))
        return NULL;
    Py_XSETREF(mw_globals, Py_NewRef(g));
    Py_XSETREF(emit_globals, Py_NewRef(eg));
    Py_XSETREF(emitter_type, Py_NewRef(et));
    Py_XSETREF(emit_request_fn, Py_NewRef(er));
    Py_XSETREF(roots_list, Py_NewRef(roots));
    Py_XSETREF(current_var, Py_NewRef(var));
    Py_RETURN_NONE;
}

static int intern_all(void) {
    struct { PyObject **slot; const char *text; } names[] = {
        {&str_acall, "__acall__"}, {&str_emitter, "_emitter"}, {&str_enabled, "enabled"}, {&str_META, "META"},
        {&str_traceparent_key, "HTTP_TRACEPARENT"}, {&str_get, "get"}, {&str_continued, "_continued"},
        {&str_new_root, "_new_root"}, {&str_perf, "_perf"}, {&str_time, "_time"}, {&str_finish, "_finish"},
        {&str_failed, "instrumentation_failed"}, {&str_status_code, "status_code"}, {&str_method, "method"},
        {&str_known, "KNOWN_METHODS"}, {&str_other, "OTHER_METHOD"}, {&str_resolver_match, "resolver_match"},
        {&str_route, "route"}, {&str_unmatched, "UNMATCHED_ROUTE"}, {&str_error_attr, "_ERROR_ATTR"},
        {&str_emit_request, "emit_request"}, {&str_logger, "_logger"}, {&str_lcache, "_cache"},
        {&str_disabled, "disabled"}, {&str_handlers, "handlers"}, {&str_propagate, "propagate"},
        {&str_filters, "filters"}, {&str_background, "_background"}, {&str_level, "level"},
        {&str_thread, "_thread"}, {&str_closed, "_closed"}, {&str_queue, "_queue"}, {&str_qsize, "qsize"},
        {&str_max_queue, "max_queue"}, {&str_put, "put"}, {&str_request_marker, "REQUEST"},
        {&str_set_traceparent, "_set_traceparent"}, {&str_headers, "headers"}, {&str_store, "_store"},
        {&str_traceparent, "traceparent"}, {&str_begin_name, "middleware.begin"},
        {&str_finish_name, "middleware.finish"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) return -1;
    info_level = PyLong_FromLong(20);
    thousand = PyFloat_FromDouble(1000.0);
    five_hundred = PyLong_FromLong(500);
    return info_level == NULL || thousand == NULL || five_hundred == NULL ? -1 : 0;
}

static PyMethodDef functions[] = {
    {"roots", roots, METH_VARARGS, "tracing._draw_roots's roots from its random bytes (see _speedups.c)."},
    {"middleware_setup", middleware_setup, METH_VARARGS,
     "middleware_setup(middleware globals, emit globals, Emitter, Emitter.emit_request, tracing._roots, "
     "tracing._current): what RequestMiddleware reads (see _speedups.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "logging_apm._speedups",
                                    "The request event's line in C (see RequestLine).", -1, functions};

PyMODINIT_FUNC PyInit__speedups(void) {
    str_request_parts = PyUnicode_InternFromString("_request_parts");
    str_clock = PyUnicode_InternFromString("_clock");
    str_cache = PyUnicode_InternFromString("_cache");
    if (str_request_parts == NULL || str_clock == NULL || str_cache == NULL) return NULL;
    if (intern_all() < 0) return NULL;
    if (PyType_Ready(&RequestLineType) < 0 || PyType_Ready(&MiddlewareType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&RequestLineType);
    if (PyModule_AddObject(m, "RequestLine", (PyObject *)&RequestLineType) < 0) {
        Py_DECREF(&RequestLineType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&MiddlewareType);
    if (PyModule_AddObject(m, "RequestMiddleware", (PyObject *)&MiddlewareType) < 0) {
        Py_DECREF(&MiddlewareType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
