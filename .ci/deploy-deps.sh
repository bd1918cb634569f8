#!/usr/bin/env bash
# Installs what the deploy checks (`cargo test --test deploy`, tests/deploy.rs) need beyond
# the Rust toolchain: `systemd-analyze` (Debian's `systemd` package), which verifies
# deploy/systemd/byok-proxy.service. Idempotent: when it is already there this touches
# nothing and returns at once. (The YAML/JSON parsing is done in Rust, and Docker is not
# needed: the test reads deploy/Dockerfile.)
set -euo pipefail

if command -v systemd-analyze >/dev/null 2>&1; then
  echo "deploy-deps: systemd-analyze already installed"
  exit 0
fi

echo "deploy-deps: installing Debian's systemd (for systemd-analyze)"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt cannot install the package from what it knows.
if ! apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends systemd; then
  apt-get update -qq
  apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends systemd
fi
command -v systemd-analyze >/dev/null 2>&1 || {
  echo "deploy-deps: systemd-analyze still missing after apt-get install systemd" >&2
  exit 1
}
