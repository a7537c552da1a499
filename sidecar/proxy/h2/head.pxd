# Reading an HTTP/2 stream's request head for the Cython build (head.py is the source; see
# sidecar/_build.py): the stream's fields are C fields (response.pxd's base type), the connection's
# remembered head too (fields.pxd), and stream.pxd cimports these as C calls.
cimport cython
from sidecar.proxy.h2.response cimport H2ResponseMixin
from sidecar.proxy.h2.fields cimport HeadMemo, same_fields
from sidecar.proxy.h2.server cimport H2ServerConn
from sidecar.proxy.context cimport ProxyContext


@cython.locals(memo=HeadMemo)
cpdef read_head(H2ResponseMixin ex, ProxyContext ctx, H2ServerConn sconn, headers, bint ended)
cdef _read(H2ResponseMixin ex, ProxyContext ctx, headers, bint ended)
cpdef length_error(H2ResponseMixin ex, long more, bint ended=*)
