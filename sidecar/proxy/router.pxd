# The router as an extension type for the Cython build (router.py is the source; see
# sidecar/_build.py): context.pxd types ctx.router with it, so the exchange's per-request
# dispatch reads fast_header/fast_cache as C fields and fast_cache.get is a C call.
# It cimports nothing (context.pxd cimports it).


cdef class Router:
    cdef public list rules, routes
    cdef public object hash_slots, header_names, _names, _fast, fast_header
    cdef public dict _regex, _hnames, _cache, _bcache, fast_cache
    cdef public bytes fast_raw  # dispatch's one-entry memo in front of fast_cache
    cdef public object fast_hit
