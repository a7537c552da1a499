# Typed state for the Cython build (pure-Python mode: _log.py is the source). See sidecar/_build.py.
# AccessLog as an extension type: the data path reads ``enabled`` as a C field and calls ``write``
# as a C method (proxy/response.pxd); the line is formatted with typed ints and written in C (_cline).
cimport cython

cdef bint _COMPILED
cdef bytes _SAFE
cdef object _UNSAFE


@cython.locals(b=bytes, c=cython.uchar)
cpdef str escape(raw)


@cython.locals(t=cython.double, f=cython.double, k=cython.longlong)
cpdef long long _cents(double ms)


cdef class AccessLog:
    cdef public object fmt, stream, _ts
    cdef public bint enabled
    cdef public Py_ssize_t max_write
    cdef public list rows
    cdef public dict _mids
    cdef public double _ts_at
    cdef public object m_client, m_method, m_path, m_part, m_phase, m_epoch, m_decision, m_status, m_node, m_mid

    @cython.locals(rows=list)
    cpdef write(self, client, method, path, partition, phase, epoch, decision, status, double upstream_s,
                double total_s, rid, node)

    @cython.locals(up=cython.double, total=cython.double, k1=cython.longlong, k2=cython.longlong)
    cdef str _line(self, client, method, path, partition, phase, epoch, decision, status, double up_s,
                   double total_s, rid, node)

    @cython.locals(mids=dict, key=tuple, hit=tuple)
    cdef _mid(self, client, method, path, partition, phase, epoch, decision, status, node)

    @cython.locals(lines=list, piece=list, size=Py_ssize_t)
    cpdef flush(self)


# An access line's text written in C: ``"%s %s%d.%02d total_ms=%d.%02d rid=%s" % (ts, mid, *divmod(k1,
# 100), *divmod(k2, 100), escape(rid))`` for k1, k2 >= 0, into one ASCII str; None (the caller then
# %-formats) unless ts and mid are ASCII str and rid is None or bytes that escape() keeps as they are.
cdef extern from *:
    """
    static Py_ssize_t epochgate_cents_text(char *w, long long k) {
        char d[24];
        Py_ssize_t n = 0, i;
        unsigned long long q = (unsigned long long)k / 100, r = (unsigned long long)k % 100;
        do {
            d[n++] = (char)('0' + q % 10);
            q /= 10;
        } while (q);
        for (i = 0; i < n; i++) w[i] = d[n - 1 - i];
        w[n++] = '.';
        w[n++] = (char)('0' + r / 10);
        w[n++] = (char)('0' + r % 10);
        return n;
    }

    static PyObject *epochgate_access_line(PyObject *ts, PyObject *mid, long long k1, long long k2, PyObject *rid) {
        char d1[32], d2[32];
        const char *r;
        Py_ssize_t n1, n2, nt, nm, nr, i, n;
        PyObject *out;
        Py_UCS1 *w;
        if (k1 < 0 || k2 < 0 || !PyUnicode_Check(ts) || !PyUnicode_Check(mid)
                || PyUnicode_READY(ts) < 0 || PyUnicode_READY(mid) < 0) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        if (!PyUnicode_IS_ASCII(ts) || !PyUnicode_IS_ASCII(mid)) Py_RETURN_NONE;
        if (rid == Py_None || (PyBytes_Check(rid) && PyBytes_GET_SIZE(rid) == 0)) {
            r = "-";
            nr = 1;
        } else if (PyBytes_Check(rid)) {
            r = PyBytes_AS_STRING(rid);
            nr = PyBytes_GET_SIZE(rid);
            for (i = 0; i < nr; i++) {
                unsigned char c = (unsigned char)r[i];
                if (c < 0x21 || c > 0x7e || c == 0x22 || c == 0x5c) Py_RETURN_NONE;
            }
        } else {
            Py_RETURN_NONE;
        }
        n1 = epochgate_cents_text(d1, k1);
        n2 = epochgate_cents_text(d2, k2);
        nt = PyUnicode_GET_LENGTH(ts);
        nm = PyUnicode_GET_LENGTH(mid);
        n = nt + 1 + nm + n1 + 10 + n2 + 5 + nr;
        out = PyUnicode_New(n, 127);
        if (out == NULL) return NULL;
        w = PyUnicode_1BYTE_DATA(out);
        memcpy(w, PyUnicode_1BYTE_DATA(ts), (size_t)nt); w += nt;
        *w++ = ' ';
        memcpy(w, PyUnicode_1BYTE_DATA(mid), (size_t)nm); w += nm;
        memcpy(w, d1, (size_t)n1); w += n1;
        memcpy(w, " total_ms=", 10); w += 10;
        memcpy(w, d2, (size_t)n2); w += n2;
        memcpy(w, " rid=", 5); w += 5;
        memcpy(w, r, (size_t)nr);
        return out;
    }
    """
    object _cline "epochgate_access_line"(object ts, object mid, long long k1, long long k2, object rid)
