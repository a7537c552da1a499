"""Compiling the operator's regex rules (``--route``, ``--partition-from path:``)
so that no request can make one stall the event loop.

A backtracking engine takes exponential time on a pattern with a nested
quantifier (``(a+)+``, ``(\\w*/)*x``) and polynomial time on an unanchored
one over a long path (0.8 s for 16 KB measured). Two bounds:

* the input: the request target is capped (``--max-path-bytes``, 414 beyond);
* the engine: when ``google-re2`` is importable the rules run on RE2 (linear
  time; a pattern using a feature RE2 lacks — backreferences, lookaround — is
  refused at start, naming the rule). Without it they run on ``re`` and a
  pattern with a nested unbounded quantifier is refused at start instead.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

from gate import ConfigError

# optional: pip install google-re2 (the [re2] extra); imported by the first rule it compiles,
# so a sidecar without regex rules does not pay its ~2.6 MiB resident (issue 20)
ENGINE = "re2" if importlib.util.find_spec("re2") is not None else "re"

try:
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
    from re import _constants as _sre_c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_REPEATS = (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT, getattr(_sre_c, "POSSESSIVE_REPEAT", None))
_MAXREPEAT = _sre_c.MAXREPEAT


def nested_quantifier(pattern: str) -> bool:
    """True when an unbounded (or large) repeat contains another repeat — the shape
    that makes a backtracking engine take exponential time."""
    def walk(items: Any, inside: bool) -> bool:
        for op, av in items:
            if op in _REPEATS and op is not None:
                lo, hi, sub = av
                big = hi == _MAXREPEAT or hi > 16
                if inside and big:
                    return True
                if walk(sub, inside or big):
                    return True
            elif op is _sre_c.SUBPATTERN:
                if walk(av[-1], inside):
                    return True
            elif op is _sre_c.BRANCH:
                if any(walk(alt, inside) for alt in av[1]):
                    return True
            elif op in (_sre_c.ASSERT, _sre_c.ASSERT_NOT):
                if walk(av[1], inside):
                    return True
        return False

    return walk(_sre_parse.parse(pattern), False)


def compile_rule(pattern: str, field: str, engine: str | None = None) -> Any:
    """A compiled rule (``search``/``groupindex`` like ``re``); ``ConfigError`` naming ``field``."""
    try:
        rx = re.compile(pattern)  # the syntax check and groupindex, whatever runs it
    except re.error as exc:
        raise ConfigError(field, f"invalid regex {pattern!r}: {exc}") from exc
    engine = engine or ENGINE
    if engine == "re2":
        import re2 as _re2

        try:
            return _re2.compile(pattern)
        except Exception as exc:  # re2.error: a feature RE2 does not have
            msg = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ConfigError(field, f"regex {pattern!r} needs a feature the linear-time engine (RE2) lacks "
                                     f"(backreferences, lookaround): {msg}") from exc
    if nested_quantifier(pattern):
        raise ConfigError(field, f"regex {pattern!r} has a nested quantifier: it can take exponential time on a "
                                 "hostile path; rewrite it, or install google-re2 to run rules in linear time")
    return rx
