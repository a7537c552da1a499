# cython: language_level=3
# The probe of docs/compiled-build.md ("Measured first"): see bench/bench_llhttp_probe.py
# Baseline: httptools with callbacks shaped like sidecar/proxy/conn.py and upstream.py (compiled, typed)
import httptools
cdef dict KINDS = {}
cdef dict SPECIAL = {b"host": 1, b"content-length": 2, b"transfer-encoding": 3, b"connection": 4,
                     b"x-partition-key": 10, b"x-request-id": 6}
cdef dict RSPECIAL = {b"connection": 1, b"content-length": 2, b"transfer-encoding": 3, b"content-type": 5}
cdef dict RKINDS = {}

cdef class Head:
    cdef public object url, host, clen, method_b, rid, keyv
    cdef public list fwd
    cdef public bint keep
    def __init__(self):
        self.url = b""; self.fwd = []; self.host = None; self.clen = None

cdef class Req:
    cdef public object parser, body
    cdef public Head h
    cdef public long hsize, n
    def __init__(self):
        self.parser = httptools.HttpRequestParser(self); self.n = 0
    def on_message_begin(self):
        self.hsize = 0; self.h = Head()
    def on_url(self, url):
        self.hsize += len(url)
        h = self.h
        h.url = h.url + url if h.url else url
    def on_header(self, name, value):
        self.hsize = self.hsize + len(name) + len(value) + 4
        cdef Head h = self.h
        hit = KINDS.get(name)
        if hit is None:
            lname = name.lower()
            hit = KINDS[name] = (SPECIAL.get(lname, 0), lname)
        kind = hit[0]
        if kind == 0:
            h.fwd += (name, b": ", value, b"\r\n"); return
        if kind == 1: h.host = value
        elif kind == 2: h.clen = value.strip()
        elif kind == 10:
            h.keyv = value; h.fwd += (name, b": ", value, b"\r\n")
        elif kind == 6:
            h.rid = value; h.fwd += (name, b": ", value, b"\r\n")
    def on_headers_complete(self):
        h = self.h
        h.method_b = self.parser.get_method()
        h.keep = self.parser.should_keep_alive()
    def on_body(self, body):
        self.body = body
    def on_message_complete(self):
        self.n += 1
    cpdef feed(self, data):
        self.parser.feed_data(data)

cdef class RHead:
    cdef public int status
    cdef public list lines
    cdef public object clen, ctype
    cdef public bint keep
    def __init__(self):
        self.lines = []; self.clen = self.ctype = None

cdef class Resp:
    cdef public object parser, body
    cdef public RHead head, last
    cdef public long n
    def __init__(self):
        self.parser = httptools.HttpResponseParser(self); self.head = RHead(); self.n = 0
    def on_header(self, name, value):
        kind = RKINDS.get(name, -1)
        if kind is None:
            self.head.lines += (name, b": ", value, b"\r\n"); return
        if kind == -1:
            kind = RKINDS[name] = RSPECIAL.get(name.lower())
            if kind is None:
                self.head.lines += (name, b": ", value, b"\r\n"); return
        h = self.head
        if kind == 5:
            h.ctype = value; h.lines += (name, b": ", value, b"\r\n")
        elif kind == 2: h.clen = value
    def on_headers_complete(self):
        h = self.head
        self.head = RHead()
        h.status = self.parser.get_status_code()
        h.keep = self.parser.should_keep_alive()
        self.last = h
    def on_body(self, body):
        self.body = body
    def on_message_complete(self):
        self.n += 1
    cpdef feed(self, data):
        self.parser.feed_data(data)
