#!/usr/bin/env bash
# Records the environment the suite just passed in as constraints.txt (what setup.sh installs).
# Usage: TUNERY_LATEST=1 bash scripts/test.sh && bash scripts/lock.sh .venv-latest
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
{
  echo "# The versions the test suite passed with; scripts/setup.sh installs from this file."
  echo "# Regenerate with scripts/lock.sh after a green run (TUNERY_LATEST=1 bash scripts/test.sh)."
  echo "# torch is installed first and pinned by scripts/setup.sh (TORCH_SPEC), so it is not listed."
  $venv/bin/python -m pip freeze --exclude-editable | grep -v -E '^(torch|tunery|nvidia-|triton)[=-]' | LC_ALL=C sort -f
} > constraints.txt
echo "wrote constraints.txt from $venv"
