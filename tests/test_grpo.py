"""Online RL (grpo, rloo): the pieces of the loss, and tiny policies whose reward rises on prompts."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import write_jsonl
from tunery import Engine


def spaces(prompts, completions, **columns):
    """Prefers one token, the space: the share of the completion's characters that are spaces."""
    return [c.count(" ") / max(len(c), 1) for c in completions]


def test_advantages_and_clipped_loss_match_their_formulas():
    import torch

    from tunery_grpo import clipped_loss, group_advantages

    r = torch.tensor([[1.0, 0.0, 0.0, 3.0]])
    grpo = group_advantages(r, "grpo")
    assert torch.allclose(grpo, (r - 1.0) / (r.std() + 1e-4))
    assert torch.allclose(group_advantages(r, "rloo"), torch.tensor([[0.0, -4 / 3, -4 / 3, 8 / 3]]))
    logps = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    old = torch.log(torch.tensor([[0.25, 0.5], [0.5, 0.5]]))  # first token: ratio 2, clipped at 1.2 for A > 0
    adv, mask = torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, clip = clipped_loss(logps, old, adv, mask, 0.2)
    assert loss.item() == pytest.approx(((-1.2 - 1.0) / 2 + 1.0) / 2)
    assert clip.item() == pytest.approx(1 / 3)
    kl = torch.full((2, 2), 0.5)
    with_kl, _ = clipped_loss(logps, old, adv, mask, 0.2, kl, beta=0.1, loss_type="bnpo")
    assert with_kl.item() == pytest.approx((-1.2 - 1.0 + 1.0) / 3 + 0.05)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    rows = [{"prompt": f"Tell me about item {i}.", "answer": "ok"} for i in range(16)]
    return write_jsonl(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", rows)


def online_config(tiny_lm, prompt_file, out, objective="grpo", method="full", steps=24, **options):
    return {
        "model": tiny_lm, "output_dir": str(out), "format": "prompts", "method": method, "seed": 1,
        "objective": {"name": objective, "rewards": [{"function": "tests.test_grpo:spaces"}], "num_generations": 4,
                      "max_new_tokens": 8, **options},
        "evaluators": [], "data": {"train": [str(prompt_file)], "max_length": 64},
        "training": {"max_steps": steps, "batch_size": 2, "learning_rate": 5e-2 if method == "lora" else 3e-2,
                     "bf16": False, "logging_steps": 4, "lr_scheduler": "constant"},
    }


def logged(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if '"reward"' in line]


@pytest.mark.parametrize("objective", ["grpo", "rloo"])
def test_online_objective_raises_a_reward_function(objective, tiny_lm, prompt_file, tmp_path):
    beta = {"grpo": 0.04, "rloo": 0.01}[objective]  # rloo takes the KL penalty off the (small) rewards
    Engine().train(online_config(tiny_lm, prompt_file, tmp_path / "run", objective, beta=beta))
    records = logged(tmp_path / "run")
    first, last = records[0], records[-1]
    assert last["reward"] > first["reward"] + 0.2, [r["reward"] for r in records]
    assert {"reward_std", "rewards/spaces/mean", "rewards/spaces/std", "kl", "clip_ratio"} <= set(last)
    assert math.isfinite(last["kl"]) and last["kl"] >= 0
    samples = json.loads((tmp_path / "run" / "rl_samples.json").read_text())
    assert len(samples["first"]) == 4 and {"prompt", "completion", "reward"} <= set(samples["last"][0])


def test_adapter_reference_needs_no_copy_of_the_model(tiny_lm, prompt_file, tmp_path):
    from tests.test_dpo import ModelCounter

    counter = ModelCounter()
    Engine(plugins=[counter]).train(online_config(tiny_lm, prompt_file, tmp_path / "run", method="lora", steps=4))
    assert counter.during and all(n == counter.at_start + 1 for n in counter.during)
    records = logged(tmp_path / "run")
    assert records and all(math.isfinite(r["kl"]) for r in records) and records[-1]["kl"] > 0


def test_generations_are_reused_for_num_iterations_steps(tiny_lm, prompt_file, tmp_path):
    calls = []

    def counting(prompts, completions, **columns):
        calls.append(len(completions))
        return spaces(prompts, completions)

    import tests.test_grpo as me

    me.counting = counting
    config = online_config(tiny_lm, prompt_file, tmp_path / "run", steps=4, num_iterations=2,
                           rewards=[{"function": "tests.test_grpo:counting"}])
    config["training"]["logging_steps"] = 1
    Engine().train(config)
    assert calls == [8, 8]  # two generation batches of 2 prompts x 4, each used for two optimizer steps
    records = logged(tmp_path / "run")
    assert len(records) == 2 and all(0 <= r["clip_ratio"] <= 1 for r in records)


def test_reward_model_run_folder_as_the_reward_source(tiny_lm, prompt_file, tmp_path):
    import random

    r = random.Random(0)
    letters = "abcdefghijklmnop"
    pairs = []
    for i in range(48):
        words = ["".join(r.sample(letters, 2)) for _ in range(4)]
        pairs.append({"prompt": f"Tell me about item {i}.", "chosen": " ".join(words), "rejected": "".join(words)})
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    rm = tmp_path / "rm"
    Engine().train({"model": tiny_lm, "output_dir": str(rm), "format": "preference", "method": "full",
                    "objective": "reward", "evaluators": [], "data": {"train": [str(data)], "max_length": 64},
                    "training": {"max_steps": 30, "learning_rate": 2e-3, "bf16": False, "batch_size": 8}})
    config = online_config(tiny_lm, prompt_file, tmp_path / "run", rewards=[{"model": str(rm)}])
    Engine().train(config)
    records = logged(tmp_path / "run")
    assert records[-1]["reward"] > records[0]["reward"] + 0.3, [x["reward"] for x in records]
    assert "rewards/rm/mean" in records[-1]


def test_reward_sources_are_checked_before_loading(tiny_lm, prompt_file, tmp_path):
    from tunery import ConfigError, PluginError

    def train(rewards):
        Engine().train(online_config(tiny_lm, prompt_file, tmp_path / "run", rewards=rewards))

    with pytest.raises(ConfigError, match="cannot import module 'nowhere_xyz.rewards'"):
        train([{"function": "nowhere_xyz.rewards:f"}])
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        train([{"function": "tests.test_grpo:nope"}])
    with pytest.raises(ConfigError, match="not a tunery run folder"):
        train([{"model": str(tmp_path)}])
    with pytest.raises(PluginError, match="no reward named 'exact_mach'.*did you mean 'exact_match'"):
        train([{"name": "exact_mach"}])
    with pytest.raises(ConfigError, match="'objective.rewards\\[0\\].pattern' is required"):
        train(["regex"])
    with pytest.raises(ConfigError, match="objective.rewards' is required"):
        train([])
    config = online_config(tiny_lm, prompt_file, tmp_path / "run", num_iterations=2)
    config["training"]["save_steps"] = 3
    with pytest.raises(ConfigError, match="'training.save_steps' \\(3\\) must be a multiple of 'objective.num_iterations'"):
        Engine().train(config)
    assert not (tmp_path / "run").exists()


def test_builtin_rewards():
    from tunery_rewards import ExactMatch, Length, Regex

    em, rx, ln = ExactMatch(), Regex(), Length()
    cols = {"answer": ["42", "42", None]}
    assert em.score([""] * 3, [" 42 ", "The answer is 42", "x"], cols, em.parse_options({}, "r"), None) == [1.0, 0.0, None]
    got = em.score([""] * 2, ["The answer is 42", "it is 41"], {"answer": ["42", "42"]},
                   em.parse_options({"pattern": r"(\d+)"}, "r"), None)
    assert got == [1.0, 0.0]
    assert rx.score([""] * 2, ["<a>x</a>", "x"], {}, rx.parse_options({"pattern": "^<a>.*</a>$"}, "r"), None) == [1.0, 0.0]
    assert ln.score([""] * 2, ["a b", "a b c d e f"], {}, ln.parse_options({"target": 2}, "r"), None) == [1.0, -1.0]


def test_a_plugin_registers_a_reward_by_name(tiny_lm, prompt_file, tmp_path):
    from tunery import Reward, hookimpl

    seen = []

    class Spaces(Reward):
        name = "spaces"

        def score(self, prompts, completions, columns, options, run):
            seen.append(columns["answer"][0])
            return spaces(prompts, completions)

    class Plugin:
        @hookimpl
        def tunery_register_rewards(self, registry):
            registry.add(Spaces())

    config = online_config(tiny_lm, prompt_file, tmp_path / "run", steps=2, rewards=[{"name": "spaces", "weight": 2.0}])
    config["evaluators"] = ["rewards"]  # before/after: the reward of greedy completions of held-out prompts
    config["data"]["val_split"] = 0.25
    result = Engine(plugins=[Plugin()]).train(config)
    assert seen and set(seen) == {"ok"}
    for phase in ("before", "after"):
        metrics = result.metrics[phase]
        assert metrics["rewards/mean"] == pytest.approx(2.0 * metrics["rewards/spaces"])
        assert metrics["rewards/completion_length"] > 0
    records = json.loads((result.output_dir / "evaluations" / "after.json").read_text())["rewards"]["records"]
    assert len(records) == 4 and {"prompt", "completion", "reward"} <= set(records[0])
    assert "rewards/mean" in (result.output_dir / "report.md").read_text()


def test_sigkill_then_resume_is_exact_including_sampling(tiny_lm, prompt_file, tmp_path):
    import torch
    from safetensors.torch import load_file

    from tests.crash_worker import Killer, crash

    def config(out):
        c = online_config(tiny_lm, prompt_file, out, method="lora", steps=4)
        c["training"].update(save_steps=2, logging_steps=1)
        return c

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Engine(plugins=[Killer()]).train(config(tmp_path / "ref"))
        code = crash(config(tmp_path / "run"), "step", 3, str(tmp_path / "stderr"))
        assert code == -9, (tmp_path / "stderr").read_text()[-2000:]
        Engine(plugins=[Killer()]).train({**config(tmp_path / "run"), "resume": "auto"})
    finally:
        torch.set_num_threads(threads)
    a, b = (load_file(p / "adapter" / "adapter_model.safetensors") for p in (tmp_path / "ref", tmp_path / "run"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref = {r["step"]: r for r in logged(tmp_path / "ref")}
    resumed = {r["step"]: r for r in logged(tmp_path / "run")}
    assert [resumed[s]["reward"] for s in (3, 4)] == [ref[s]["reward"] for s in (3, 4)]  # the same samples


def test_rlhf_example_configs_are_valid():
    """examples/rlhf (SFT -> reward model -> DPO, and the online GRPO stage) parses with the installed plugins."""
    from pathlib import Path

    import yaml

    folder = Path(__file__).resolve().parents[1] / "examples" / "rlhf"
    engine = Engine()
    parsed = {p.stem: engine.config(yaml.safe_load(p.read_text())) for p in sorted(folder.glob("*.yaml"))}
    assert {k: c.objective.name for k, c in parsed.items()} == {"dpo": "dpo", "grpo": "grpo", "reward": "reward",
                                                                "sft": "sft"}
    assert "grpo.yaml" in (folder / "run.sh").read_text()
    data = yaml.safe_load((folder / "grpo.yaml").read_text())["data"]
    assert (folder / data["train"]).is_file() and (folder / data["eval"]).is_file()
