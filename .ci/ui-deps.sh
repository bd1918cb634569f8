#!/usr/bin/env bash
# Installs what the browser tests (`cargo test --test ui`, tests/ui.rs) drive: Debian's
# `chromium` (at /usr/bin/chromium) and the Node packages of tests/ui/package-lock.json
# (playwright-core, which never downloads a browser of its own) into tests/ui/node_modules.
# Idempotent: when everything is already there it touches nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")/../tests/ui"

# --- Debian chromium
if [ -x /usr/bin/chromium ]; then
  echo "ui-deps: chromium already installed"
else
  echo "ui-deps: installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists only when apt does not know the package yet.
  if ! apt-cache show chromium >/dev/null 2>&1 || ! apt-get install -y -qq -o Dpkg::Use-Pty=0 chromium; then
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Use-Pty=0 chromium
  fi
  [ -x /usr/bin/chromium ] || { echo "ui-deps: /usr/bin/chromium still missing after apt-get" >&2; exit 1; }
fi

# --- Node: every package of package-lock.json installed at its locked version?
node_ok() {
  node - <<'JS'
const fs = require('fs');
const lock = JSON.parse(fs.readFileSync('package-lock.json', 'utf8'));
for (const [path, meta] of Object.entries(lock.packages || {})) {
  if (!path || meta.optional || meta.dev) continue;
  let installed;
  try {
    installed = JSON.parse(fs.readFileSync(`${path}/package.json`, 'utf8')).version;
  } catch {
    process.exit(1);
  }
  if (installed !== meta.version) process.exit(1);
}
JS
}

if node_ok; then
  echo "ui-deps: Node packages already installed"
else
  echo "ui-deps: installing Node packages (tests/ui/package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  node_ok || { echo "ui-deps: locked Node packages still missing after npm ci" >&2; exit 1; }
fi
