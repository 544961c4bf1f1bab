#!/usr/bin/env bash
# Installs what `make lint` needs besides rustfmt and clippy: cargo-deny (the dependency checks
# configured in infra/deny.toml), with `cargo install --locked` from crates.io into
# $CARGO_HOME/bin. `make lint` and CI's lint job run it first; it is idempotent: when the pinned
# version (or a newer one) is already on PATH it installs nothing and prints one line.
set -euo pipefail

# Pinned version. Bump here; the next run installs the new pin (a build of a few minutes).
CARGO_DENY_VERSION=0.20.2

log=$(mktemp "${TMPDIR:-/tmp}/lint-tools.XXXXXX")
trap 'rm -f "$log"' EXIT

fail() {
  echo "lint-tools: $*" >&2
  exit 1
}

# Runs "$@" with its output in $log; on failure prints the tail of that output and stops.
quiet() {
  local what=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    echo "lint-tools: $what failed; last lines of its output:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

command -v cargo >/dev/null 2>&1 || fail "cargo not found on PATH (install Rust with rustup)"

# `cargo deny --version` prints `cargo-deny 0.20.2`; nothing (or an error) when it is missing.
installed=$(cargo deny --version 2>/dev/null | awk '{print $2}' || true)

# An older cargo-deny may not read infra/deny.toml (its format changed across 0.x releases), so
# it is replaced by the pin; a newer one is kept.
if [[ -n $installed && $(printf '%s\n%s\n' "$CARGO_DENY_VERSION" "$installed" | sort -V | head -n 1) == "$CARGO_DENY_VERSION" ]]; then
  echo "cargo-deny $installed: already installed"
else
  echo "cargo-deny: installing $CARGO_DENY_VERSION${installed:+ (found $installed)} with cargo install --locked; this takes a few minutes"
  quiet "cargo install --locked cargo-deny --version $CARGO_DENY_VERSION" \
    cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
  installed=$(cargo deny --version 2>/dev/null | awk '{print $2}' || true)
  [[ $installed == "$CARGO_DENY_VERSION" ]] ||
    fail "cargo install succeeded, but \`cargo deny --version\` reports '${installed:-nothing}' (is \$CARGO_HOME/bin on PATH?)"
  echo "cargo-deny $CARGO_DENY_VERSION: installed"
fi
