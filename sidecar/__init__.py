# The data path may run compiled (Cython) or as plain Python: decide which before any
# hot-path module is imported (see _build: forced pure build, stale extension guard).
from . import _build

_build.install()
