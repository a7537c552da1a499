"""fields.py remembers the request fields it found good (a dict look-up per stream instead of
the checks): only good ones, only short ones, never more than its bound — and a bad field is
refused every time it comes (pure logic: the hostile heads themselves are test_h2_head_fields.py)."""

from __future__ import annotations

import pytest

from sidecar.proxy.h2 import fields as F


@pytest.fixture(autouse=True)
def _empty_caches(monkeypatch):
    for name in ("_good_methods", "_good_paths", "_good_authorities"):
        monkeypatch.setattr(F, name, {})
    F.GOOD_FIELDS.clear()   # (stream.py holds this dict itself: emptied, never replaced)
    yield
    F.GOOD_FIELDS.clear()


def test_a_good_field_is_remembered_a_bad_one_refused_every_time():
    assert F.header_error((b"content-type", b"application/grpc")) is None
    assert (b"content-type", b"application/grpc") in F.GOOD_FIELDS
    for _ in range(2):
        assert F.header_error((b"x-a", b"1\r\nx-b: 2")) is not None
        assert F.header_error((b"te", b"gzip")) is not None
        assert F.header_error((b"Upper", b"v")) is not None
    assert F.header_error((b"te", b"trailers")) is None
    assert set(F.GOOD_FIELDS) == {(b"content-type", b"application/grpc"), (b"te", b"trailers")}


def test_long_fields_are_checked_not_remembered_and_the_cache_is_bounded(monkeypatch):
    assert F.header_error((b"x-request-id", b"r" * 200)) is None
    assert not F.GOOD_FIELDS
    monkeypatch.setattr(F, "GOOD_FIELDS_MAX", 3)
    for i in range(10):
        assert F.header_error((b"x-k", b"%d" % i)) is None
    assert len(F.GOOD_FIELDS) == 3


def test_pseudo_header_values_refused_every_time_and_star_is_never_remembered():
    assert F.path_error(b"/kv.v1.Store/Put", b"POST") is None
    assert F.path_error(b"/kv.v1.Store/Put", b"POST") is None
    assert F.path_error(b"*", b"OPTIONS") is None
    assert F.path_error(b"*", b"GET") is not None        # '*' depends on the method: never cached
    for _ in range(2):
        assert F.path_error(b"/a b", b"GET") is not None
        assert F.method_error(b"GE T") is not None
        assert F.authority_error(b"user@host") is not None
    assert F.method_error(b"POST") is None and F.method_error(b"POST") is None
    assert F.method_error(None) is not None
    assert F.authority_error(b"example.com:443") is None and F.authority_error(b"example.com:443") is None
