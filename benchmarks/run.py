"""Every benchmark in one command, one JSON report.

    python -m benchmarks.run --out bench.json [--quick]

* each stage's benchmark (``benchmarks/bench_{ingest,detect,embed,match}.py``) runs as its own process,
  ``python -m benchmarks.bench_<stage> [--quick]``; its JSON stdout is kept as is. A missing or failing one is
  recorded as ``{"error": ...}`` and the rest still run. A stage benchmark that does not know ``--quick`` is
  run without it (noted as ``"quick": "unsupported"``).
* the full pipeline (:mod:`rfr.tools.eval.stackbench`): ``rfr up`` on free ports in a temporary state dir, a small
  enrolled gallery, synthetic 1080p CCTV stills on the submissions topic: stills/s and end-to-end latency
  p50/p99 at a fixed offered load, then ``rfr down``. It needs every service (``python -m services.<name>``)
  and the labelled faces (``--faces``, default ../shared/faces/lfw); without them it records an error entry.

Numbers are for this machine only (see ``machine``); medians and ratios, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "detect", "embed", "match")
logger = logging.getLogger(__name__)


def parse_json_output(stdout: str) -> Any:
    """The JSON document a benchmark printed: the whole stdout, else the last JSON object in it."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for start in sorted((i for i, ch in enumerate(text) if ch == "{"), reverse=True):
        if start == 0 or text[start - 1] == "\n":
            try:
                value, end = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            if not text[end:].strip():
                return value
    raise ValueError("no JSON object at the end of the output")


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s, check=False, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def run_stage(stage: str, quick: bool, timeout_s: float) -> dict[str, Any]:
    module = f"benchmarks.bench_{stage}"
    if not (REPO / "benchmarks" / f"bench_{stage}.py").is_file():
        return {"error": f"{module} does not exist (yet)"}
    args = [module, "--quick"] if quick else [module]
    started = time.perf_counter()
    note: dict[str, Any] = {}
    try:
        done = _run(args, timeout_s)
        if quick and done.returncode == 2 and "unrecognized arguments: --quick" in done.stderr:
            note = {"quick": "unsupported"}
            done = _run([module], timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"{module} ran past {timeout_s:.0f}s", "seconds": round(time.perf_counter() - started, 1)}
    seconds = round(time.perf_counter() - started, 1)
    if done.returncode != 0:
        return {"error": f"{module} exited with {done.returncode}", "stderr_tail": done.stderr[-2000:],
                "seconds": seconds, **note}
    try:
        return {"result": parse_json_output(done.stdout), "seconds": seconds, **note}
    except ValueError as exc:
        return {"error": f"{module}: {exc}", "stdout_tail": done.stdout[-2000:], "seconds": seconds, **note}


def run_pipeline(faces: Path, quick: bool, rate: float | None, detector: str | None = None) -> dict[str, Any]:
    from rfr.tools.eval.stackbench import StackBenchConfig, run_stack_bench

    if not faces.is_dir():
        return {"error": f"labelled faces not found at {faces} (--faces)"}
    n = 10 if quick else 40
    cfg = StackBenchConfig(faces, gallery_identities=n, burst=n, paced=n, rate=rate, detector=detector)
    started = time.perf_counter()
    try:
        result = run_stack_bench(cfg)
    except Exception as exc:  # recorded in the report; the other benchmarks still count
        logger.exception("pipeline benchmark failed")
        seconds = round(time.perf_counter() - started, 1)
        return {"error": f"{type(exc).__name__}: {str(exc)[-2000:]}", "seconds": seconds}
    return {"result": result, "seconds": round(time.perf_counter() - started, 1)}


def pipeline_ratios(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Stills/s of each detector's stack against the first one's (same run, same stills)."""
    rates = {d: r.get("result", {}).get("throughput", {}).get("stills_per_s") for d, r in runs.items()}
    base_name = next(iter(rates))
    base = rates[base_name]
    return {f"{d}_vs_{base_name}": round(v / base, 2) for d, v in rates.items() if v and base}


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Where the JSON report goes.")
    parser.add_argument("--quick", action="store_true", help="Small, fast runs of everything.")
    parser.add_argument("--only", default=",".join((*STAGES, "pipeline")), help="Comma-separated subset.")
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    parser.add_argument("--rate", type=float, default=None,
                        help="Offered load (stills/s) of the latency run; default half the measured throughput.")
    parser.add_argument("--stage-timeout", type=float, default=None, help="Seconds per stage benchmark.")
    parser.add_argument("--pipeline-detectors", default="mediapipe,litert",
                        help="The whole stack once per detector (RFR_DETECT__DETECTOR), the first as the baseline "
                        "of the ratios; 'default' for the configured one.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    timeout = args.stage_timeout or (600.0 if args.quick else 1800.0)
    report: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
                              "machine": machine(), "stages": {}}
    for stage in STAGES:
        if stage in wanted:
            logger.info("benchmark %s ...", stage)
            report["stages"][stage] = run_stage(stage, args.quick, timeout)
    if "pipeline" in wanted:
        logger.info("pipeline benchmark (rfr up ... rfr down) ...")
        runs = {d: run_pipeline(args.faces, args.quick, args.rate, None if d == "default" else d)
                for d in (x.strip() for x in args.pipeline_detectors.split(",")) if d}
        report["pipeline"] = {"by_detector": runs, "stills_per_s_ratio": pipeline_ratios(runs)}
    report["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    errors = [k for k, v in report["stages"].items() if "error" in v] + [
        f"pipeline:{d}" for d, v in report.get("pipeline", {}).get("by_detector", {}).items() if "error" in v]
    print(json.dumps({"out": str(args.out), "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
