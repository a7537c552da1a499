# The part of driving llhttp from C that the response parser (llresp.pyx) and the request parser
# (llreq.pyx) share, included by both: llhttp's declarations, the copy of a head's fields as
# llhttp reports them (one buffer, offsets per field), and feed_data's run and error mapping
# (httptools' classes and texts). Hashed with both (sidecar/_build.py NATIVE).

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.string cimport memcpy

from httptools import (HttpParserCallbackError, HttpParserError, HttpParserInvalidMethodError,
                       HttpParserInvalidStatusError, HttpParserInvalidURLError, HttpParserUpgrade)


cdef extern from "llhttp.h":
    ctypedef struct llhttp_t:
        void* data
        unsigned char upgrade
        unsigned char method
        unsigned char http_major
        unsigned char http_minor
        unsigned short status_code
        int error
    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char*, size_t) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept
    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin, on_headers_complete, on_message_complete, on_chunk_header, on_chunk_complete
        llhttp_data_cb on_url, on_header_field, on_header_value, on_body
    ctypedef enum llhttp_type_t:
        HTTP_REQUEST, HTTP_RESPONSE
    ctypedef enum llhttp_errno_t:
        HPE_OK, HPE_PAUSED_UPGRADE, HPE_USER, HPE_INVALID_STATUS, HPE_INVALID_METHOD, HPE_INVALID_URL,
        HPE_CB_MESSAGE_BEGIN, HPE_CB_HEADERS_COMPLETE, HPE_CB_MESSAGE_COMPLETE, HPE_CB_CHUNK_HEADER,
        HPE_CB_CHUNK_COMPLETE
    ctypedef enum llhttp_method_t:
        pass
    void llhttp_settings_init(llhttp_settings_t*)
    void llhttp_init(llhttp_t*, llhttp_type_t, const llhttp_settings_t*)
    llhttp_errno_t llhttp_execute(llhttp_t*, const char*, size_t)
    int llhttp_should_keep_alive(const llhttp_t*)
    const char* llhttp_get_error_reason(const llhttp_t*)
    void llhttp_set_error_reason(llhttp_t*, const char*)
    const char* llhttp_get_error_pos(const llhttp_t*)
    void llhttp_resume_after_upgrade(llhttp_t*)
    const char* llhttp_method_name(llhttp_method_t)


cdef struct Field:
    Py_ssize_t ns, nl, vs, vl  # name and value: offset and length in the parser's copy
    int kind, idx              # what the parser made of it (its own use)


cdef struct Fields:
    char* buf                  # the head's bytes as llhttp reported them (fields; llreq: the target first)
    Py_ssize_t blen, bcap
    Field* fields
    Py_ssize_t nf, fcap
    int in_value               # the last field's value has begun: the next name starts a new field


cdef int _fields_init(Fields* fs, Py_ssize_t bcap, Py_ssize_t fcap) except -1:
    fs.bcap = bcap
    fs.buf = <char*>PyMem_Malloc(bcap)
    fs.fcap = fcap
    fs.fields = <Field*>PyMem_Malloc(fcap * sizeof(Field))
    fs.blen = fs.nf = fs.in_value = 0
    if fs.buf is NULL or fs.fields is NULL:
        raise MemoryError()
    return 0


cdef void _fields_free(Fields* fs) noexcept:
    PyMem_Free(fs.buf)
    PyMem_Free(fs.fields)


cdef int _fields_append(Fields* fs, const char* at, size_t n) noexcept:
    """Copy ``at[:n]`` to the buffer (-1: out of memory)."""
    cdef Py_ssize_t need = fs.blen + <Py_ssize_t>n
    cdef Py_ssize_t cap = fs.bcap
    cdef char* nb
    if need > cap:
        while cap < need:
            cap *= 2
        nb = <char*>PyMem_Realloc(fs.buf, cap)
        if nb is NULL:
            return -1
        fs.buf = nb
        fs.bcap = cap
    memcpy(fs.buf + fs.blen, at, n)
    fs.blen = need
    return 0


cdef int _fields_name(Fields* fs, const char* at, size_t n) noexcept:
    """A piece of a field name (llhttp's on_header_field): 1 when it began a new field after a
    complete one (``fs.fields[fs.nf - 2]``), 0 otherwise, -1 out of memory."""
    cdef Field* f
    cdef Field* nf
    cdef int after = 0
    if fs.nf == 0 or fs.in_value:
        if fs.nf == fs.fcap:
            nf = <Field*>PyMem_Realloc(fs.fields, 2 * fs.fcap * sizeof(Field))
            if nf is NULL:
                return -1
            fs.fields = nf
            fs.fcap *= 2
        after = fs.nf != 0
        f = &fs.fields[fs.nf]
        fs.nf += 1
        f.ns = fs.blen
        f.nl = 0
        f.vs = f.vl = 0
        fs.in_value = 0
    f = &fs.fields[fs.nf - 1]
    if _fields_append(fs, at, n) < 0:
        return -1
    f.nl += <Py_ssize_t>n
    return after


cdef int _fields_value(Fields* fs, const char* at, size_t n) noexcept:
    """A piece of the last field's value (llhttp's on_header_value); -1 out of memory."""
    cdef Field* f
    if fs.nf == 0:
        return 0  # (never: llhttp reports a name first)
    f = &fs.fields[fs.nf - 1]
    if not fs.in_value:
        fs.in_value = 1
        f.vs = fs.blen
    if _fields_append(fs, at, n) < 0:
        return -1
    f.vl += <Py_ssize_t>n
    return 0


cdef inline Py_ssize_t _put_line(char* out, Py_ssize_t o, const char* b, const Field* f) noexcept:
    """Write field ``f`` of the copy ``b`` as ``name: value\\r\\n`` at ``out + o``; the offset after it."""
    memcpy(out + o, b + f.ns, f.nl)
    o += f.nl
    out[o] = 58  # ": "
    out[o + 1] = 32
    o += 2
    memcpy(out + o, b + f.vs, f.vl)
    o += f.vl
    out[o] = 13  # CRLF
    out[o + 1] = 10
    return o + 2


cdef inline bint _lower_eq(const char* a, const char* lower, Py_ssize_t n) noexcept:
    """``a[:n].lower() == lower[:n]`` (ASCII, as ``bytes.lower``)."""
    cdef Py_ssize_t j
    cdef char c
    for j in range(n):
        c = a[j]
        if 65 <= c <= 90:
            c = c + 32
        if c != lower[j]:
            return False
    return True


cdef llhttp_errno_t _execute(llhttp_t* p, data) except? HPE_USER:
    """llhttp over ``data``, as httptools' feed_data: an upgrade resumes at once and raises
    ``HttpParserUpgrade`` with where the upgraded bytes start; else the error number."""
    cdef Py_buffer view
    cdef llhttp_errno_t err
    cdef const char* pos
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        err = llhttp_execute(p, <const char*>view.buf, <size_t>view.len)
        if p.upgrade == 1 and err == HPE_PAUSED_UPGRADE:
            pos = llhttp_get_error_pos(p)
            llhttp_resume_after_upgrade(p)
            raise HttpParserUpgrade(pos - <const char*>view.buf)
    finally:
        PyBuffer_Release(&view)
    return err


cdef object _parser_error(llhttp_t* p, llhttp_errno_t err, last_error):
    """The exception httptools raises for ``err`` (its classes, its message; a callback's own
    exception as the context)."""
    cdef const char* r = llhttp_get_error_reason(p)
    reason = "" if r is NULL else (<bytes>r).decode("latin-1")
    if err in (HPE_CB_MESSAGE_BEGIN, HPE_CB_HEADERS_COMPLETE, HPE_CB_MESSAGE_COMPLETE, HPE_CB_CHUNK_HEADER,
               HPE_CB_CHUNK_COMPLETE, HPE_USER):
        exc = HttpParserCallbackError(reason)
        if last_error is not None:
            exc.__context__ = last_error
        return exc
    if err == HPE_INVALID_STATUS:
        return HttpParserInvalidStatusError(reason)
    if err == HPE_INVALID_METHOD:
        return HttpParserInvalidMethodError(reason)
    if err == HPE_INVALID_URL:
        return HttpParserInvalidURLError(reason)
    return HttpParserError(reason)
