#!/usr/bin/env bash
# The quickstart: LoRA-tunes SmolLM2-135M-Instruct (bundled, offline) on a small identity data set
# and prints its answers before and after training. A few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/tunery train examples/quickstart/config.yaml --overwrite "$@"
