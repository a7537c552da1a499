# Typed state for the Cython build (pure-Python mode: httpmsg.py is the source). See sidecar/_build.py.
# RespHead lives here, not in upstream.pxd, so that upstream.pxd can cimport the exchange's
# response half (response.pxd), which cimports RespHead: no cimport cycle.

cdef class RespHead:
    cdef public int status
    cdef public list lines
    cdef public object reason, ctoks, clen, te, upg, ctype
    cdef public bint keep


# ``b"".join(parts)`` for the data path's lists of bytes, in C (compiled build only: a module that
# cimports it calls it as ``_cjoin`` behind its ``_COMPILED``, and its plain build joins with
# ``b"".join``). CPython's join releases a buffer per item and, past 10 items, mallocs and frees
# an array of them: the upstream head's 15-18 pieces cost ~2.4k instructions there, ~0.6k here
# (bench_exchange_instr, docs/compiled-build.md "Stop 38"). Anything but a list of exact bytes
# goes to CPython's join, which accepts or refuses it as ``b"".join`` does.
cdef extern from *:
    """
    static PyObject *epochgate_join_bytes(PyObject *parts) {
        Py_ssize_t n = PyList_GET_SIZE(parts), i, size = 0, k;
        PyObject *out, *p;
        char *w;
        for (i = 0; i < n; i++) {
            p = PyList_GET_ITEM(parts, i);
            if (!PyBytes_CheckExact(p)) {
                PyObject *sep = PyBytes_FromStringAndSize(NULL, 0), *r;
                if (sep == NULL) return NULL;
                r = _PyBytes_Join(sep, parts);
                Py_DECREF(sep);
                return r;
            }
            size += PyBytes_GET_SIZE(p);
        }
        out = PyBytes_FromStringAndSize(NULL, size);
        if (out == NULL) return NULL;
        w = PyBytes_AS_STRING(out);
        for (i = 0; i < n; i++) {
            p = PyList_GET_ITEM(parts, i);
            k = PyBytes_GET_SIZE(p);
            memcpy(w, PyBytes_AS_STRING(p), (size_t)k);
            w += k;
        }
        return out;
    }
    """
    bytes join_bytes "epochgate_join_bytes"(list parts)
