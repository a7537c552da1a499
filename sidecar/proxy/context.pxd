# Typed state of the process-wide proxy context for the Cython build (pure-Python mode:
# context.py is the source; see sidecar/_build.py).
from sidecar.proxy.stats cimport Stats
from sidecar.proxy.router cimport Router  # dispatch's fast_header/fast_cache: C reads


cdef class Node:
    cdef public object name, url, key, netloc, proto, host


cdef class ProxyContext:
    cdef public Stats stats
    cdef public Router router
    cdef public object cfg, loop, source, gate, access, pool, hold, tls, h2pool, budget
    cdef public dict nodes  # typed: resolve's .get per request is a C call
    cdef public dict header_kinds
    cdef public set waiting, clients
    cdef public dict stamps
    cdef public object rid_prefix, _ticker, tracer
    cdef public object rs_state, rs_phase, rs_source  # resolve's one-entry cache
    cdef public object st_part, st_epoch, st_place, st_line  # stamp's one-entry cache
    cdef public double now, read_timeout, idle_timeout, head_timeout
    cdef public long max_header, max_path, max_connections, retry_body_max, rid_n
    cdef public bint closing

    cpdef bytes stamp(self, partition, placement, epoch)  # Request.attach: a C call per request
    cpdef bytes request_id(self)  # a C call per request from Request.attach and the HTTP/2 exchange's attach (h2/stream.py)


cdef bint _COMPILED

# request_id's text, written in C: ``prefix + f"{n:x}".encode()`` for the counter (n >= 1)
cdef extern from *:
    """
    static PyObject *epochgate_hex_id(PyObject *prefix, long n) {
        char digits[2 * sizeof(unsigned long)];
        unsigned long v = (unsigned long)n;
        Py_ssize_t k = 0, m = PyBytes_GET_SIZE(prefix), i;
        PyObject *out;
        char *w;
        do {
            digits[k++] = "0123456789abcdef"[v & 15];
            v >>= 4;
        } while (v);
        out = PyBytes_FromStringAndSize(NULL, m + k);
        if (out == NULL) return NULL;
        w = PyBytes_AS_STRING(out);
        memcpy(w, PyBytes_AS_STRING(prefix), (size_t)m);
        for (i = 0; i < k; i++) w[m + i] = digits[k - 1 - i];
        return out;
    }
    """
    bytes _hex_id "epochgate_hex_id"(bytes prefix, long n)
