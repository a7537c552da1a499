# The one admit decision as C functions for the compiled build (_admission.py is the source;
# gate/_build.py guards the build). cpdef: Python callers call them as before; a compiled caller
# outside gate cimports fail_closed_admit through gate's public surface (gate/capi.pxd) and calls
# it in C (the sidecar's write gate, per write: docs/compiled-build.md, "Stop 37").
cpdef fail_closed_reject(source, partition)
cpdef fail_closed_admit(source, partition, epoch, bint writable)
