"""A real Prometheus (Debian's package, installed by .ci/install-tools.sh) scrapes the running stack; after stills
flow, PromQL over it returns the pipeline's series."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rfr.core.schemas import submission_id
from rfr.core.settings import Settings
from rfr.tools import procs
from rfr.tools.demo import Probe, cctv_still, submit
from rfr.tools.results import ResultCollector

TOOLS = Path(os.environ.get("RFR_TOOLS_DIR", Path.home() / ".cache" / "rfr-tools"))
REPO = Path(__file__).resolve().parents[2]


def _prometheus_binary() -> Path:
    binary = TOOLS / "bin" / "prometheus"
    if not binary.exists() and not os.environ.get("RFR_NO_TOOL_INSTALL"):
        subprocess.run(["bash", str(REPO / ".ci" / "install-tools.sh")], check=True, timeout=600)
    if not binary.exists():
        pytest.skip("prometheus binary not installed (run .ci/install-tools.sh)")
    return binary


@pytest.fixture(scope="module")
def prometheus(live_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("prometheus")
    m = live_stack.metrics
    jobs = {"rfr-ingest": m.ingest_port, "rfr-detect": m.detect_port, "rfr-embed": m.embed_port,
            "rfr-match": m.match_port}
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                                 for job, port in jobs.items()]}
    (work / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = procs.free_port()
    argv = [str(_prometheus_binary()), f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"]
    _, proc = procs.spawn("prometheus", argv, work)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, proc, 120)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait for ``/-/ready``: Prometheus opens its port before its TSDB and answers queries 503 until it is ready
    (a loaded CI machine took longer than the first query)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:  # HTTPError 503 while the TSDB opens, or a refused connection
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"prometheus at {base} not ready within {timeout_s:.0f}s; last answer {last}")


def _query(base: str, promql: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def _value(series: list[dict[str, object]]) -> float:
    assert series, "no series"
    value = series[0]["value"]
    assert isinstance(value, list)
    return float(value[1])


def _eventually(base: str, promql: str, ok: object, timeout_s: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while True:
        series = _query(base, promql)
        if callable(ok) and ok(series):
            return series
        if time.monotonic() > deadline:
            raise AssertionError(f"{promql} never satisfied; last answer {series}")
        time.sleep(1)


def test_prometheus_sees_the_pipeline(live_stack: Settings, prometheus: str, lfw_dir: Path) -> None:
    ups = _eventually(prometheus, 'up{job=~"rfr-.*"}', lambda s: len(s) == 4 and all(_value([x]) == 1 for x in s))
    assert {x["metric"]["job"] for x in ups} == {"rfr-ingest", "rfr-detect", "rfr-embed", "rfr-match"}  # type: ignore[index]

    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2)[20:26]
    rng = np.random.default_rng(5)
    probes = []
    for person in people:
        jpeg = cctv_still(sorted(person.glob("*.jpg"))[1], 80, "clean", rng)
        probes.append(Probe(person.name, False, jpeg, submission_id("demo-retailer", jpeg)))
    collector = ResultCollector(live_stack.kafka, f"prom-{time.time_ns()}")
    submit(live_stack, probes)
    assert collector.wait_for([p.submission_id for p in probes], 300)
    collector.close()
    n = len(probes)

    _eventually(prometheus, 'sum(rfr_ingest_submissions_total{outcome="accepted"})', lambda s: s and _value(s) >= n)
    _eventually(prometheus, "sum(rfr_detect_frames_total)", lambda s: s and _value(s) >= n)
    _eventually(prometheus, "sum(rfr_embed_faces_total)", lambda s: s and _value(s) >= n)
    # every face of this test's stills was searched; the stack is shared, and faces of another test's incident
    # may still wait for its other stills (rfr_match_incidents_pending), so the totals need not be equal
    searched = _eventually(prometheus, "sum(rfr_match_end_to_end_seconds_count)", lambda s: s and _value(s) >= n)
    assert _value(searched) >= 1
    p50 = _query(prometheus, "histogram_quantile(0.5, sum by (le) (rate(rfr_match_end_to_end_seconds_bucket[5m])))")
    assert 0 < _value(p50) < 120
    inflight = _query(prometheus, 'rfr_detect_inflight_messages{job="rfr-detect"}')
    assert len(inflight) == 1
    info = _query(prometheus, "rfr_build_info")
    assert {s["metric"]["service"] for s in info} == {"ingest", "detect", "embed", "match"}  # type: ignore[index]
