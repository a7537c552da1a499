# Sourced by scripts/demo, scripts/fleet and scripts/test (bash): the interpreter they run on
# and the port check they do first. See scripts/_pyenv.py and scripts/_ports.py.

# ep_bootstrap: the interpreter that runs the helpers ($PYTHON, else the python3 on PATH).
ep_bootstrap() {
  local b=${PYTHON:-python3}
  if ! command -v "$b" >/dev/null 2>&1; then
    echo "$EP_WHO: no $b on PATH: install Python ≥ 3.11 (Debian: apt-get install python3 python3-venv) or set PYTHON" >&2
    exit 3
  fi
  echo "$b"
}

# ep_python [EXTRAS]: sets PY to the interpreter to run (.venv unless $PYTHON), installing the
# project into it only when its build inputs changed (editable: this checkout's code runs).
ep_python() {
  PY=$("$(ep_bootstrap)" "$EP_ROOT/scripts/_pyenv.py" "$EP_WHO" "${1:-}") || exit 3
}

# ep_ports PORT=VARIABLE[:what] ...: one line per busy port, then exit 3.
ep_ports() {
  "$(ep_bootstrap)" "$EP_ROOT/scripts/_ports.py" "$EP_WHO" "$@" || exit 3
}
