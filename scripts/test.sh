#!/usr/bin/env bash
# Runs the test suite (what CI runs): installs what it needs, then pytest without the slow tests.
# TUNERY_LATEST=1 runs it against the newest releases instead of constraints.txt (see setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=.venv; [ "${TUNERY_LATEST:-}" = 1 ] && venv=.venv-latest
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec $venv/bin/python -m pytest -m "not slow" -q -p no:cacheprovider "$@"
