# The placement table as an extension type for the compiled build (_table.py is the source;
# gate/_build.py guards the build). admit_write runs on every write and state on every request
# (the sidecar's resolve): compiled with typed fields, an entry's look-up and its prebuilt answer
# are C reads instead of Python attribute look-ups (docs/compiled-build.md, "Compiled gate admit").
cimport cython


cdef class _Entry:
    cdef public object state, epoch, at, reject_stale, reject_cutover
    cdef public bint cutover


cdef class PlacementTable:
    cdef public dict _entries
    cdef public object _epoch, _lock
    cdef public list _subscribers
    cdef dict __dict__  # subclasses and callers may keep their own attributes, as on the Python class

    @cython.locals(entry=_Entry)
    cpdef admit_write(self, partition, epoch)
    @cython.locals(entry=_Entry)
    cpdef state(self, partition)
