#!/usr/bin/env bash
# Installs the validators that tests/integration/test_deploy_files.py runs on deploy/, outside the repository,
# into ${RFR_TOOLS_DIR:-$HOME/.cache/rfr-tools}, and the browser of the review pages' tests (Debian's chromium).
# Idempotent: a second run checks and does nothing.
#   bin/promtool   from Debian's `promtool` package (Debian 13 on) or, where there is none, from `prometheus`
#                  (Debian 12), unpacked with dpkg -x: nothing is installed system-wide,
#   bin/prometheus from `prometheus`: no Prometheus service is started and nothing listens (the e2e test starts
#                  its own on loopback).
#   RFR_DEBIAN_SUITE=trixie (or sid, ...) takes both from that Debian suite instead of this machine's, through a
#   private apt state under $TOOLS/apt (same mirror as this machine's sources, Debian's archive keyring): how the
#   rules are checked against other Prometheus releases (deploy/README.md, "Supported Prometheus releases").
#   Use another RFR_TOOLS_DIR for it.
#   venv/          kubernetes-validate (bundled Kubernetes schemas, offline), check-jsonschema (bundled
#                  compose-spec schema), dockerfile (BuildKit's Dockerfile parser), PyYAML; a venv of its own,
#                  so the project's .venv is untouched.
#   chromium       Debian's `chromium` package (system-wide, with apt-get: needs root, or sudo without a password)
#                  when /usr/bin/chromium (or $RFR_CHROMIUM) is missing: the browser tests of the review pages
#                  (tests/e2e/test_review_ui.py) drive it with Playwright; Playwright's own browser download is
#                  not used. Same package name on Debian 12 and 13. RFR_SKIP_CHROMIUM=1 leaves it out, as does
#                  RFR_DEBIAN_SUITE (that mode changes nothing outside $TOOLS). When it cannot be installed (no root,
#                  no network) this says so and goes on: the validators stay usable, and the browser tests fail
#                  naming this step.
# kubectl (for `kubectl kustomize`) and `docker compose` are used by the tests when present; not installed here.
set -euo pipefail

TOOLS="${RFR_TOOLS_DIR:-$HOME/.cache/rfr-tools}"
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"
PY_PACKAGES=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 dockerfile==3.4.0 "PyYAML>=6,<7")
mkdir -p "$TOOLS/bin"

SUITE="${RFR_DEBIAN_SUITE:-}"
APT_OPTS=()

use_suite() {  # private apt state for $SUITE: nothing outside $TOOLS/apt changes
  local root="$TOOLS/apt" mirror
  local find_mirror='$2 ~ /^https?:/ && $3 ~ /\/main$/ && $2 !~ /security/ {print $2; exit}'
  mirror="$(apt-cache policy | awk "$find_mirror")"
  [[ -n "$mirror" ]] || { apt-get update -qq > /dev/null; mirror="$(apt-cache policy | awk "$find_mirror")"; }
  [[ -n "$mirror" ]] || { echo "no Debian mirror in this machine's apt sources" >&2; return 1; }
  mkdir -p "$root/lists/partial" "$root/archives/partial"
  touch "$root/status"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SUITE main" > "$root/sources.list"
  APT_OPTS=(-o "Dir::Etc::SourceList=$root/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State=$root" -o "Dir::State::Lists=$root/lists" -o "Dir::State::status=$root/status"
            -o "Dir::Cache=$root" -o "Dir::Cache::Archives=$root/archives")
  apt-get "${APT_OPTS[@]}" update -qq > /dev/null
}

apt_download() {  # PACKAGE: its .deb into the current folder
  apt-get "${APT_OPTS[@]}" download "$1" > /dev/null 2>&1
}

install_promtool() {
  if "$TOOLS/bin/promtool" --version > /dev/null 2>&1 && "$TOOLS/bin/prometheus" --version > /dev/null 2>&1; then
    return 0
  fi
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  if [[ -n "$SUITE" ]]; then
    use_suite
  # `apt-get download` needs no root; the package lists may need a refresh on a fresh machine (that needs root).
  elif ! (cd "$work" && apt_download prometheus); then
    apt-get update -qq > /dev/null
  fi
  (cd "$work" && apt_download prometheus) || { echo "apt-get download prometheus failed" >&2; return 1; }
  # Debian 13 and later ship promtool as a package of its own; Debian 12 has it inside `prometheus`.
  (cd "$work" && apt_download promtool) || true
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done
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

install_chromium() {
  local browser="${RFR_CHROMIUM:-/usr/bin/chromium}"
  if [[ -n "${RFR_SKIP_CHROMIUM:-}" || -n "$SUITE" ]] || "$browser" --version > /dev/null 2>&1; then
    return 0
  fi
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
      sudo=(sudo -n)
    else
      echo "warning: chromium is missing (the browser tests need it) and installing it needs root: run" \
           "'apt-get install --no-install-recommends chromium' as root, or set RFR_CHROMIUM to a chromium binary" >&2
      return 0
    fi
  fi
  echo "installing Debian's chromium (for the browser tests) …"
  if ! { "${sudo[@]}" apt-get update -qq > /dev/null &&
         "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
           > /dev/null; }; then
    echo "warning: apt-get could not install chromium (the browser tests need it)" >&2
    return 0
  fi
  /usr/bin/chromium --version 2> /dev/null | head -1
}

install_promtool
install_python_tools
install_chromium
echo "rfr deploy validators ready in $TOOLS"
