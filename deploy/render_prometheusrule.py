"""Write deploy/k8s/base/prometheusrule.yaml: the rule groups of deploy/prometheus/rules.yml as a PrometheusRule.

rules.yml is the one source of the rules (promtool checks and unit-tests it); the Prometheus Operator needs the
same groups inside a PrometheusRule resource. The groups are copied as text, indented under ``spec:``, so the
file needs no YAML library. ``--check`` exits 1 when the committed file is stale.

    python deploy/render_prometheusrule.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
RULES = DEPLOY / "prometheus" / "rules.yml"
TARGET = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by `python deploy/render_prometheusrule.py`: edit rules.yml, then
# re-run it (a test fails when this file is stale). Your Prometheus must select it (ruleSelector).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: rfr
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule text for the rules file ``rules_text`` (its top-level ``groups:`` and what follows)."""
    lines = rules_text.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError as exc:
        raise ValueError("rules.yml has no top-level 'groups:' line") from exc
    body = [("  " + line) if line.strip() else "" for line in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only check that the committed file is up to date")
    args = parser.parse_args(argv)
    text = render(RULES.read_text(encoding="utf-8"))
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is stale: run python deploy/render_prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
