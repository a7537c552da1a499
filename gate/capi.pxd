# gate's public cimport surface: the one door through which a Cython-compiled caller outside
# gate reaches gate's hot code as C calls, e.g. the sidecar's write gate
# (sidecar/proxy/writegate.pxd):
#
#     from gate.capi cimport InflightTracker, fail_closed_admit
#
# It declares nothing of its own: it re-exports the extension types and functions of gate's
# private modules (their .pxd), so a caller never names a private module (tests/test_layering.py
# allows this file and refuses a cimport of gate._anything). There is no gate.capi module: a
# compiled caller imports the modules named below at its own import and checks their types' C
# layout there, so it loads only while these run compiled — gate.capi_ready() says whether they do
# (a caller must fall back to its own .py otherwise: sidecar/_build.py GATE_BOUND), and a caller's
# build hashes this file and the .pxd files it names (a layout change makes the caller stale).
# gate/_build.py CAPI lists the modules named here (tests/test_build_modes.py checks it).
from gate._inflight cimport InflightTracker
from gate._admission cimport fail_closed_admit
