#!/usr/bin/env bash
# Set up tbpipe on a fresh machine: a Python 3.11 virtual environment in .venv with the
# project and its test tools installed. Idempotent; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "tbpipe needs Python 3.11 ($PYTHON is $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
echo "installing tbpipe and its dependencies into .venv (TensorFlow is large: a minute or two the first time)"
# uv installs the same versions as pip (same resolution, checked by comparing `pip freeze`)
# in a fraction of the time: it downloads in parallel. pip does it where uv cannot be had.
if .venv/bin/python -m pip install --quiet uv 2>/dev/null && [ -x .venv/bin/uv ]; then
  UV_LINK_MODE=copy .venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[run,dev]"
else
  .venv/bin/python -m pip install --quiet --progress-bar off -e ".[run,dev]"
fi
# Azurite, the Azure Blob emulator the az:// tests run against (an npm package; the test
# fixture installs it itself if this step could not, and skips those tests only outside CI).
AZURITE=azurite@3.35.0
if [ ! -x .tools/azurite/node_modules/.bin/azurite-blob ]; then
  if command -v npm >/dev/null; then
    echo "installing $AZURITE (the Azure Blob emulator for the az:// tests) into .tools/azurite"
    npm install --prefix .tools/azurite --no-audit --no-fund --loglevel=error "$AZURITE" \
      || echo "warning: npm install $AZURITE failed; the az:// tests will say why" >&2
  else
    echo "note: npm not found: the az:// tests need Azurite (node 18+ and npm)" >&2
  fi
fi
echo "ready: .venv/bin/tbpipe --help"
