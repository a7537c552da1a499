"""Per-slot request rates for ``reshard plan`` (issue 29, DESIGN §12.6): from the sidecars'
``epochgate_slot_requests_total{slot}`` (each admin port's ``/metrics`` scraped twice, ``--window``
seconds apart, summed over the sidecars), from Prometheus' query API (``sum by (slot)
(rate(…[window]))``), or from a JSON file ``{"slot-3": requests/s, …}``.

The parsing and the arithmetic are pure (``slot_counts``, ``rates_between``, ``prometheus_rates``);
``read_rates`` does the I/O. A bad answer is a ``ConfigError`` naming the flag, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, Iterable, Mapping

from gate import ConfigError

METRIC = "epochgate_slot_requests_total"
QUERY = "sum by (slot) (rate(" + METRIC + "[%ds]))"


def add_rate_flags(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rates", metavar="FILE", help='JSON {"slot-3": requests/s, …}')
    src.add_argument("--metrics", action="append", metavar="URL",
                     help="a sidecar's admin URL (repeat for each); its /metrics is scraped twice --window apart")
    src.add_argument("--prometheus", metavar="URL", help="Prometheus' base URL (its /api/v1/query)")
    p.add_argument("--window", type=float, default=5.0, metavar="S",
                   help="seconds between the two scrapes (--metrics) or the rate() range (--prometheus)")


def slot_counts(text: str) -> dict[str, float]:
    """``slot → requests`` from one Prometheus exposition (``ConfigError`` if it does not parse)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == METRIC and "slot" in s.labels:
                    out[s.labels["slot"]] = out.get(s.labels["slot"], 0.0) + float(s.value)
    except (ValueError, TypeError) as exc:
        raise ConfigError("metrics", f"not a Prometheus exposition: {exc}") from exc
    return out


def rates_between(before: Mapping[str, float], after: Mapping[str, float], seconds: float) -> dict[str, float]:
    """Requests/s per slot between two readings of the counters. A counter lower than before was
    reset (the sidecar restarted): its whole value counts, as Prometheus' ``rate`` does."""
    if seconds <= 0:
        raise ConfigError("window", f"must be > 0 seconds, got {seconds!r}")
    out = {}
    for slot, now in after.items():
        was = before.get(slot, 0.0)
        out[slot] = (now - was if now >= was else now) / seconds
    return out


def prometheus_rates(answer: Any) -> dict[str, float]:
    """``slot → requests/s`` from a ``/api/v1/query`` answer of ``QUERY``."""
    try:
        if answer["status"] != "success":
            raise ConfigError("prometheus", f"query failed: {answer.get('error', answer)}")
        return {r["metric"]["slot"]: float(r["value"][1]) for r in answer["data"]["result"] if "slot" in r["metric"]}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError("prometheus", f"unexpected answer: {exc}") from exc


def _sum(readings: Iterable[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in readings:
        for k, v in r.items():
            out[k] = out.get(k, 0.0) + v
    return out


async def read_rates(args: Any) -> dict[str, float]:
    if args.rates:
        try:
            with open(args.rates) as f:
                rates = json.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError("rates", f"cannot read {args.rates!r}: {exc}") from exc
        if not isinstance(rates, dict) or not all(isinstance(v, (int, float)) for v in rates.values()):
            raise ConfigError("rates", 'expected a JSON object {"slot-3": requests per second, …}')
        return {str(k): float(v) for k, v in rates.items()}
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async def get(url: str, field: str, **params: str) -> str:
            try:
                async with http.get(url, params=params) as r:
                    if r.status != 200:
                        raise ConfigError(field, f"{url}: HTTP {r.status}")
                    return await r.text()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                raise ConfigError(field, f"{url}: {type(exc).__name__}: {exc}") from exc

        if args.prometheus:
            text = await get(args.prometheus.rstrip("/") + "/api/v1/query", "prometheus",
                             query=QUERY % max(1, int(args.window)))
            try:
                return prometheus_rates(json.loads(text))
            except ValueError as exc:
                raise ConfigError("prometheus", f"not JSON: {exc}") from exc
        urls = [u.rstrip("/") + ("" if u.rstrip("/").endswith("/metrics") else "/metrics") for u in args.metrics]

        async def scrape() -> tuple[float, dict[str, float]]:
            texts = await asyncio.gather(*(get(u, "metrics") for u in urls))
            return time.monotonic(), _sum(slot_counts(t) for t in texts)

        t0, before = await scrape()
        await asyncio.sleep(args.window)
        t1, after = await scrape()
        return rates_between(before, after, t1 - t0)
