#!/usr/bin/env bash
# Validate deploy/ with the real tools, from the command line (the same tools the tests run; the tests add the
# cross-checks against the code: tests/integration/test_deploy_files.py).
#   deploy/validate.sh          installs the tools first (.ci/install-tools.sh, idempotent), then checks
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${RFR_TOOLS_DIR:-$HOME/.cache/rfr-tools}"
bash .ci/install-tools.sh > /dev/null
PROMTOOL="$TOOLS/bin/promtool"

echo "== promtool: configs (with the rule files they load), rules, rule unit tests"
for config in deploy/prometheus/prometheus*.yml; do "$PROMTOOL" check config "$config"; done
"$PROMTOOL" check rules deploy/prometheus/rules.yml
"$PROMTOOL" test rules deploy/prometheus/rules_test.yml
python3 deploy/render_prometheusrule.py --check

echo "== Kubernetes: kustomize build + strict schema validation (CRDs: checked structurally by the tests)"
if command -v kubectl > /dev/null; then
  for target in deploy/k8s deploy/k8s/overlays/gpu-embed deploy/k8s/tools; do
    kubectl kustomize "$target" | "$TOOLS/venv/bin/kubernetes-validate" --strict --quiet --no-warn -k 1.30.0 -
    echo "$target: valid"
  done
else
  echo "kubectl not found: skipped"
fi

echo "== compose: compose-spec schema, and docker compose config where the plugin exists"
"$TOOLS/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
if docker compose version > /dev/null 2>&1; then
  GRAFANA_ADMIN_PASSWORD="${GRAFANA_ADMIN_PASSWORD:-validate}" POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-validate}" docker compose -f deploy/compose/compose.yaml config --quiet
  echo "docker compose config: valid"
else
  echo "docker compose plugin not found: skipped"
fi

echo "== Grafana dashboard: JSON"
python3 -m json.tool deploy/grafana/rfr-dashboard.json > /dev/null && echo "rfr-dashboard.json: valid JSON"
echo "all deploy checks passed"
