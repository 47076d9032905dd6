"""The reward objective: trained from the CLI it ranks held-out pairs, reloads to the same scores,
and `tunery score` reproduces the evaluator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TRAIN = ["--set", "training.learning_rate=3e-3", "--set", "training.bf16=false", "--set", "data.max_length=64",
         "--set", "training.logging_steps=3"]


@pytest.fixture(scope="module")
def reward_run(tiny_lm, preference_files, tmp_path_factory):
    from click.testing import CliRunner

    from tunery.cli import cli

    train, heldout = preference_files
    out = tmp_path_factory.mktemp("reward") / "run"
    result = CliRunner().invoke(cli, ["train", "--model", tiny_lm, "--method", "lora", "--objective", "reward",
                                      "--format", "preference",
                                      "--data", str(train), "--eval-data", str(heldout), "--output-dir", str(out),
                                      "--max-steps", "8", "--set", "method.r=8", *TRAIN])
    assert result.exit_code == 0, result.output
    return out


def scores(model, tokenizer, run_dir, heldout):
    from tunery import Engine
    from tunery.preference import score_examples
    from tunery import RunContext

    engine = Engine()
    config = engine.config(Path(run_dir) / "config.yaml")
    run = RunContext.create(engine, config, output_dir=Path(run_dir), tokenizer=tokenizer)
    formatter = engine.formatters.get("preference")
    rows = [json.loads(line) for line in Path(heldout).read_text().splitlines()]
    examples = [formatter.format(r, tokenizer, config.format.options, run) for r in rows]
    return score_examples(model, examples, run)


def test_reward_model_ranks_heldout_pairs_better_than_chance(reward_run):
    metrics = json.loads((reward_run / "metrics.json").read_text())
    after = metrics["after"]
    assert after["reward_accuracy/pairs"] == 12
    assert after["reward_accuracy/accuracy"] >= 0.75
    assert after["reward_accuracy/margin"] > metrics["before"]["reward_accuracy/margin"] + 0.5
    records = [json.loads(line) for line in (reward_run / "train_log.jsonl").read_text().splitlines()]
    assert {"accuracy", "margin", "loss"} <= set(records[0])  # the method's pair metrics reach the log
    manifest = json.loads((reward_run / "manifest.json").read_text())
    assert manifest["task"]["model"] == "classification" and manifest["task"]["num_labels"] == 1


def test_reloads_to_identical_scores_with_plain_transformers_and_peft(reward_run, tiny_lm, preference_files):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunery import Engine
    from tunery.preference import pair_metrics

    loaded = Engine().load(str(reward_run))
    assert loaded.task == "classification"
    ours = scores(loaded.model, loaded.tokenizer, reward_run, preference_files[1])
    tokenizer = AutoTokenizer.from_pretrained(reward_run / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_lm, num_labels=1)
    plain = PeftModel.from_pretrained(base, str(reward_run / "adapter")).eval()
    assert scores(plain, tokenizer, reward_run, preference_files[1]) == ours
    after = json.loads((reward_run / "metrics.json").read_text())["after"]
    assert pair_metrics(ours)["margin"] == pytest.approx(after["reward_accuracy/margin"], abs=1e-5)


def test_score_command_reproduces_the_evaluator(reward_run, preference_files, run_cli, tmp_path):
    out = tmp_path / "scores.jsonl"
    result = run_cli("score", reward_run, "--data", preference_files[1], "--output", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"] for r in records] == [f"{preference_files[1]}:{i}" for i in range(1, 13)]
    assert all(r["correct"] == (r["chosen"] > r["rejected"]) for r in records)
    after = json.loads((reward_run / "metrics.json").read_text())["after"]
    assert sum(r["correct"] for r in records) / len(records) == after["reward_accuracy/accuracy"]
    texts = tmp_path / "texts.txt"
    texts.write_text("It was good great kind.\nIt was bad awful rude.\n")
    result = run_cli("score", reward_run, "--data", texts, "--format", "completion")
    assert result.exit_code == 0, result.output
    good, bad = [json.loads(line)["score"] for line in result.stdout.splitlines()]
    assert good > bad


def test_score_follows_the_runs_on_bad_row_and_takes_set(reward_run, preference_files, run_cli, tmp_path):
    rows = preference_files[1].read_text().splitlines()[:3] + ['{"prompt": "Hi?", "chosen": "Same.", "rejected": "Same."}']
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(rows) + "\n")
    refused = run_cli("score", reward_run, "--data", data)
    assert refused.exit_code == 5 and f"{data}:4: identical responses" in refused.output
    result = run_cli("score", reward_run, "--data", data, "--set", "data.on_bad_row=skip")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3 and "skipped=1" in result.output


def test_score_refuses_a_run_that_is_not_a_reward_model(run_cli, tmp_path, preference_files):
    (tmp_path / "run").mkdir()
    result = run_cli("score", tmp_path / "run", "--data", preference_files[1])
    assert result.exit_code != 0 and "not a run folder" in result.output


@pytest.fixture(scope="module")
def lm_without_pad(tiny_lm, tmp_path_factory):
    """The tiny LM with no pad token in its tokenizer or config (like many decoder models)."""
    folder = tmp_path_factory.mktemp("nopad") / "lm"
    shutil.copytree(tiny_lm, folder)
    config = json.loads((folder / "config.json").read_text())
    config["pad_token_id"] = None
    (folder / "config.json").write_text(json.dumps(config))
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    tok.pop("pad_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    return folder


def test_full_training_on_a_model_without_pad_token_saves_a_standalone_reward_model(lm_without_pad, preference_files,
                                                                                      run_cli, tmp_path):
    from transformers import AutoTokenizer

    from tunery import Engine

    assert AutoTokenizer.from_pretrained(lm_without_pad).pad_token is None
    train, heldout = preference_files
    out = tmp_path / "full"
    result = run_cli("train", "--model", lm_without_pad, "--method", "full", "--objective", "reward",
                     "--format", "preference", "--data", train,
                     "--eval-data", heldout, "--output-dir", out, "--max-steps", "4",
                     *TRAIN, "--set", "training.learning_rate=1e-3")
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.safetensors").is_file() and not (out / "adapter").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["reward_accuracy/margin"] > metrics["before"]["reward_accuracy/margin"]
    loaded = Engine().load(str(out))
    assert loaded.model.config.num_labels == 1 and loaded.model.config.pad_token_id is not None
    from tunery.preference import pair_metrics

    reloaded = pair_metrics(scores(loaded.model, loaded.tokenizer, out, heldout))
    assert reloaded["margin"] == pytest.approx(metrics["after"]["reward_accuracy/margin"], abs=1e-5)


def test_preference_data_names_its_objective_and_methods_are_not_objectives(tiny_lm, preference_files, tmp_path):
    from tunery import ConfigError, Engine

    engine = Engine()
    base = {"model": tiny_lm, "output_dir": str(tmp_path), "format": "preference", "method": "lora",
            "data": {"train": [str(preference_files[0])]}}
    with pytest.raises(ConfigError, match=r"missing config key 'objective': preference data has no default objective; "
                                          r"choose one of: .*dpo.*reward"):
        engine.config(base)
    with pytest.raises(ConfigError, match=r"config key 'method': 'reward' is an objective, not a method: "
                                          r"name it under 'objective'"):
        engine.config({**base, "method": "reward"})
    assert engine.config({**base, "method": "full", "objective": "reward"}).evaluators[0].name == "reward_accuracy"
