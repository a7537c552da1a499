"""The pure parts of tracing: W3C traceparent parsing, the sampler's agreement with the
SDK's ParentBased(TraceIdRatioBased), the flags and their errors (issue 28)."""

from __future__ import annotations

import random

import pytest

from gate import ConfigError
from sidecar._config import parse_args
from sidecar.trace import Sampler, parse, traceparent
from sidecar.trace.otlp import traces_url

TP = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_parse_valid_and_round_trip():
    p = parse(TP, b" k=v ")
    assert p is not None and p.sampled and p.state == b"k=v"
    assert traceparent(p.trace_id, p.span_id) == TP
    assert parse(TP[:-2] + b"00").sampled is False
    # a future version may append fields after a dash (W3C §3.2.4)
    assert parse(b"01" + TP[2:] + b"-extra") is not None


@pytest.mark.parametrize("bad", [
    None, b"", b"garbage", TP[:-1], TP + b"x", b"ff" + TP[2:], TP.replace(b"0af7", b"0AF7"),
    b"00-" + b"0" * 32 + TP[35:], TP[:36] + b"0" * 16 + TP[52:], TP.replace(b"-", b"_"), b"00" + TP[2:] + b"-x",
])
def test_parse_invalid_is_ignored(bad):
    assert parse(bad) is None


def test_sampler_agrees_with_the_sdk():
    sdk = pytest.importorskip("opentelemetry.sdk.trace.sampling")
    rng = random.Random(7)
    for ratio in (0.0, 0.01, 0.25, 0.5, 1.0):
        mine, theirs = Sampler(ratio), sdk.TraceIdRatioBased(ratio)
        assert mine.bound == theirs.bound
        for _ in range(2000):
            tid = rng.getrandbits(128)
            assert mine.sampled(None, tid) == theirs.should_sample(None, tid, "x").decision.is_sampled()
    s = Sampler(0.0)
    assert s.sampled(parse(TP), 5) and not Sampler(1.0).sampled(parse(TP[:-2] + b"00"), 5)  # parent-based


def test_flags_env_and_errors(tmp_path):
    pl = tmp_path / "p.toml"
    pl.write_text('[nodes]\na = "http://127.0.0.1:1"\n[partitions]\nt1 = "a"\n')
    base = ["--placement", str(pl)]
    cfg = parse_args(base, {})
    assert cfg.trace_otlp_endpoint is None and cfg.trace_sample_ratio == 1.0  # off by default
    cfg = parse_args(base + ["--trace-otlp-endpoint", "http://c:4318", "--trace-sample-ratio", "0.25"],
                     {"EPOCHGATE_TRACE_SAMPLE_RATIO": "0.5", "EPOCHGATE_TRACE_OTLP_ENDPOINT": "http://e:4318"})
    assert (cfg.trace_otlp_endpoint, cfg.trace_sample_ratio) == ("http://c:4318", 0.25)  # flags over env
    cfg = parse_args(base, {"EPOCHGATE_TRACE_SAMPLE_RATIO": "0.5", "EPOCHGATE_TRACE_OTLP_ENDPOINT": "http://e:4318"})
    assert (cfg.trace_otlp_endpoint, cfg.trace_sample_ratio) == ("http://e:4318", 0.5)
    for args, field in ((["--trace-sample-ratio", "1.5"], "trace_sample_ratio"),
                        (["--trace-sample-ratio", "nan"], "trace_sample_ratio"),
                        (["--trace-sample-ratio", "x"], "trace_sample_ratio"),
                        (["--trace-otlp-endpoint", "collector:4318"], "trace_otlp_endpoint")):
        with pytest.raises(ConfigError) as e:
            parse_args(base + args, {})
        assert e.value.field == field


def test_traces_url():
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("https://c:4318/") == "https://c:4318/v1/traces"
    assert traces_url("http://tempo:4318/otlp/v1/traces") == "http://tempo:4318/otlp/v1/traces"


def test_heads_left_mid_parse_do_not_accumulate():
    """A client that sends traceparent and leaves before its head is dispatched: its entry
    is swept (no mark will pop it), while a live connection's head keeps its context."""
    import asyncio

    from sidecar.trace.recorder import INBOUND_SWEEP, RequestTracer

    class Conn:
        def __init__(self, open_: bool) -> None:
            self.transport = object() if open_ else None

    class Req:
        def __init__(self, open_: bool) -> None:
            self.conn = Conn(open_)

    loop = asyncio.new_event_loop()
    try:
        rt = RequestTracer(loop, 1.0, lambda recs: None)
        alive = Req(True)
        rt.header(alive, b"traceparent", TP)
        for _ in range(10 * INBOUND_SWEEP):
            rt.header(Req(False), b"traceparent", TP)
        assert len(rt.inbound) <= INBOUND_SWEEP and rt.inbound[alive] == [TP, None]
    finally:
        loop.close()
