#!/usr/bin/env bash
# SFT (LoRA) -> reward model -> DPO on SmolLM2-135M, a few minutes on a CPU.
set -euo pipefail
cd "$(dirname "$0")"
TUNERY=${TUNERY:-tunery}

$TUNERY train sft.yaml --overwrite
rm -rf runs/sft-merged && $TUNERY merge runs/sft --output-dir runs/sft-merged   # the policy both steps start from
$TUNERY train reward.yaml --overwrite
$TUNERY train dpo.yaml --overwrite

# The reward model ranks the held-out pairs (the same figure as its reward_accuracy after training):
$TUNERY score runs/reward --data data/preferences_heldout.jsonl
# ... and scores single texts:
printf 'A hexagon has six sides.\nMore than a triangle. Think about it yourself.\n' > runs/texts.txt
$TUNERY score runs/reward --data runs/texts.txt --format completion

# Step 4, online RLHF: GRPO sampling from the SFT policy, scored by the reward model (+ length).
$TUNERY train grpo.yaml --overwrite
cat runs/grpo/rl_samples.json
