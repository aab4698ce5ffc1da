#!/usr/bin/env bash
# Install everything the tests need, start the services they use, run lint, types and tests,
# and stop the services again. Works on a fresh Debian machine as root; `.ci/run` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

# postgresql, openssh-server: the DB suite and the SSH clone tests start their own throwaway
# server from these binaries; chromium: the web UI's browser tests (Playwright drives it).
APT_PACKAGES=(git docker.io busybox-static postgresql openssh-server chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

log "pip: installing dstack with its test dependencies"
python3 -m pip install -q --disable-pip-version-check -e '.[dev]'

started_dockerd=""
cleanup() {
  if [ -n "$started_dockerd" ]; then
    log "stopping dockerd"
    kill "$started_dockerd" 2>/dev/null || true
    wait "$started_dockerd" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
    log "starting dockerd"
    dockerd >/tmp/dstack-test-dockerd.log 2>&1 &
    started_dockerd=$!
    for _ in $(seq 1 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -n 20 /tmp/dstack-test-dockerd.log; exit 1; }
  else
    echo "warning: no Docker engine and cannot start one; Docker tests will fail in CI" >&2
  fi
fi

if docker info >/dev/null 2>&1; then
  log "building the local test images"
  bash scripts/build-test-images.sh
fi

log "ruff"
ruff check .
ruff format --check .

log "mypy"
mypy
mypy --explicit-package-bases tests  # the tests, less strictly (pyproject.toml)

log "pytest"
set +e
python3 -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is an error" >&2
  exit 1
fi
exit "$status"
