#!/usr/bin/env bash
# Install (CPU), build the test models if not cached, and run the whole test suite.
# Tests run serially: they share one Ray cluster and one Serve app (session fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh cpu
. .venv/bin/activate
python -m cluster.testmodels.build
# Lint and format (pyproject.toml [tool.ruff]) before the tests: a failure here names file and line.
ruff check .
ruff format --check .
# pytest exits 5 when it collects no test; that must fail too, and it does (non-zero).
python -m pytest "$@"
