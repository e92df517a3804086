#!/usr/bin/env bash
# The test suite: set up, start what the tests need (docker when it can), run pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not docker"). Tests run in
# TBPIPE_TEST_WORKERS pytest-xdist workers (default 3: most tests wait on subprocesses and
# servers), a test module per worker (tests/conftest.py groups them); 0 runs them in-process.
# The 30 slowest tests are listed before the closing line, to keep CI's time in view.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f .ci/docker-setup.sh ] && { [ "${CI:-}" = true ] || [ "${TBPIPE_DOCKER:-}" = 1 ]; }; then
  bash .ci/docker-setup.sh
fi
.venv/bin/ruff check components pipelines tests benchmarks
exec .venv/bin/python -m pytest -n "${TBPIPE_TEST_WORKERS:-3}" --dist loadgroup --durations=30 "$@"
