#!/usr/bin/env bash
# Installs the validators that tests/integration/test_deploy_files.py runs on deploy/, outside the repository,
# into ${RFR_TOOLS_DIR:-$HOME/.cache/rfr-tools}. Idempotent: a second run checks and does nothing.
#   bin/promtool   from Debian's `prometheus` package, unpacked with dpkg -x: nothing is installed system-wide,
#   bin/prometheus no Prometheus service is started and nothing listens (the e2e test starts its own on loopback).
#   venv/          kubernetes-validate (bundled Kubernetes schemas, offline), check-jsonschema (bundled
#                  compose-spec schema), dockerfile (BuildKit's Dockerfile parser), PyYAML; a venv of its own,
#                  so the project's .venv is untouched.
# kubectl (for `kubectl kustomize`) and `docker compose` are used by the tests when present; not installed here.
set -euo pipefail

TOOLS="${RFR_TOOLS_DIR:-$HOME/.cache/rfr-tools}"
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"
PY_PACKAGES=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 dockerfile==3.4.0 "PyYAML>=6,<7")
mkdir -p "$TOOLS/bin"

install_promtool() {
  if "$TOOLS/bin/promtool" --version > /dev/null 2>&1 && "$TOOLS/bin/prometheus" --version > /dev/null 2>&1; then
    return 0
  fi
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  # `apt-get download` needs no root; the package lists may need a refresh on a fresh machine (that needs root).
  if ! (cd "$work" && apt-get download prometheus > /dev/null 2>&1); then
    apt-get update -qq > /dev/null
    (cd "$work" && apt-get download prometheus > /dev/null)
  fi
  dpkg -x "$work"/prometheus_*.deb "$work/root"
  install -m 0755 "$work/root/usr/bin/promtool" "$TOOLS/bin/promtool.new"
  mv "$TOOLS/bin/promtool.new" "$TOOLS/bin/promtool"
  # The server too: tests/e2e start it themselves on 127.0.0.1 to scrape the running stack.
  install -m 0755 "$work/root/usr/bin/prometheus" "$TOOLS/bin/prometheus.new"
  mv "$TOOLS/bin/prometheus.new" "$TOOLS/bin/prometheus"
  "$TOOLS/bin/promtool" --version | head -1
}

install_python_tools() {
  local stamp="$TOOLS/venv/.installed"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "${PY_PACKAGES[*]}" ]]; then
    return 0
  fi
  "$PYTHON_BIN" -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
  echo "${PY_PACKAGES[*]}" > "$stamp"
  echo "installed ${PY_PACKAGES[*]} in $TOOLS/venv"
}

install_promtool
install_python_tools
echo "rfr deploy validators ready in $TOOLS"
