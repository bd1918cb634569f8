#!/usr/bin/env bash
# Installs the third-party clients that `cargo test --test sdk` (tests/sdk.rs) drives:
# the pinned Python packages of tests/sdk/requirements.txt (openai, anthropic) for the
# `python3` on PATH, and the Node packages of tests/sdk/package-lock.json (openai) into
# tests/sdk/node_modules. Idempotent: when the pinned versions are already installed it
# touches nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")/../tests/sdk"

PYTHON="${BYOK_SDK_PYTHON:-python3}"

# --- Python: every `name==version` line of requirements.txt already installed?
python_ok() {
  "$PYTHON" - <<'PY'
import re, sys
from importlib.metadata import version, PackageNotFoundError
for line in open("requirements.txt"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
    if not m:
        sys.exit(1)  # not a plain pin: let pip decide
    try:
        if version(m.group(1)) != m.group(2):
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

if python_ok; then
  echo "sdk-deps: Python packages already installed"
else
  echo "sdk-deps: installing Python packages (tests/sdk/requirements.txt)"
  pip_install=("$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r requirements.txt)
  if ! "${pip_install[@]}"; then
    # A distribution Python marked externally managed (PEP 668) refuses plain installs.
    "${pip_install[@]}" --break-system-packages
  fi
  python_ok || { echo "sdk-deps: pinned Python packages still missing after pip install" >&2; exit 1; }
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
  echo "sdk-deps: Node packages already installed"
else
  echo "sdk-deps: installing Node packages (tests/sdk/package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  node_ok || { echo "sdk-deps: locked Node packages still missing after npm ci" >&2; exit 1; }
fi
