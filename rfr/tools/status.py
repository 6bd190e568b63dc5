"""`rfr status`: what runs, where its metrics are, and each service's health and throughput from them."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from rfr.tools import procs

# The sample names each stage exports through rfr.core.metrics.StageMetrics.
_CONSUMED = "messages_consumed_total"
_PRODUCED = "messages_produced_total"
_DEAD = "deadletters_total"


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int
    alive: bool
    port: int | None
    metrics_url: str | None
    healthy: bool
    consumed: float | None = None
    produced: float | None = None
    deadletters: float | None = None
    rate_per_s: float | None = None


def scrape(url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """Sum every sample of a metrics page by sample name (labels folded)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


def _stage_value(totals: dict[str, float], suffix: str) -> float | None:
    values = [v for k, v in totals.items() if k.endswith(suffix)]
    return sum(values) if values else None


def collect(infos: list[procs.ProcInfo], window_s: float = 1.0) -> list[ServiceStatus]:
    first: dict[str, dict[str, float]] = {}
    for info in infos:
        if info.metrics_url and procs.pid_alive(info):
            try:
                first[info.name] = scrape(info.metrics_url)
            except OSError:
                pass
    if first:
        time.sleep(window_s)
    out = []
    for info in infos:
        alive = procs.pid_alive(info)
        if info.metrics_url is None:
            healthy = alive and info.port is not None and procs.port_open("127.0.0.1", info.port)
            out.append(ServiceStatus(info.name, info.pid, alive, info.port, None, healthy))
            continue
        try:
            now = scrape(info.metrics_url) if alive else {}
        except OSError:
            now = {}
        before = first.get(info.name, {})
        consumed = _stage_value(now, _CONSUMED)
        rate = None
        if consumed is not None and before:
            rate = (consumed - (_stage_value(before, _CONSUMED) or 0.0)) / window_s
        out.append(
            ServiceStatus(
                info.name,
                info.pid,
                alive,
                info.port,
                info.metrics_url,
                alive and bool(now),
                consumed,
                _stage_value(now, _PRODUCED),
                _stage_value(now, _DEAD),
                rate,
            )
        )
    return out


def render(rows: list[ServiceStatus]) -> str:
    if not rows:
        return "nothing is running (start it with `rfr up`)"
    head = f"{'name':8} {'pid':>7} {'state':8} {'in':>8} {'out':>8} {'dead':>6} {'msg/s':>7}  metrics"
    lines = [head]
    for r in rows:
        state = "healthy" if r.healthy else ("up" if r.alive else "DOWN")

        def fmt(v: float | None, spec: str = ".0f") -> str:
            return "-" if v is None else format(v, spec)

        where = r.metrics_url or (f"127.0.0.1:{r.port}" if r.port else "")
        lines.append(
            f"{r.name:8} {r.pid:>7} {state:8} {fmt(r.consumed):>8} {fmt(r.produced):>8} "
            f"{fmt(r.deadletters):>6} {fmt(r.rate_per_s, '.1f'):>7}  {where}"
        )
    return "\n".join(lines)
