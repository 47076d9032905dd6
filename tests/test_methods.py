"""Method plugins beyond the conformance suite: options, capabilities, AdaLoRA's schedule and
reload, and the generate / merge commands on real run folders."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tunery import Engine
from tunery.errors import ConfigError, IncompatibleError, ModelSourceError

TECHNIQUES = ["full", "freeze", "lora", "ia3", "prefix", "ptuning", "prompt", "adalora", "peft"]
NO_MODEL = "/nonexistent/model"


@pytest.fixture(scope="module")
def engine():
    return Engine()


def base_config(model, out, data, method, **extra):
    config = {"model": model, "output_dir": str(out), "method": method, "format": "alpaca",
              "data": {"train": [str(data)], "max_length": 48}, "evaluators": [],
              "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "bf16": False}}
    config.update(extra)
    return config


def test_each_technique_is_its_own_plugin(engine):
    plugins = {info.name: info for info in engine.plugins}
    for name in TECHNIQUES:
        assert plugins[name].ok and plugins[name].members["methods"] == [name]


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("options, message", [
    ({"r": 4}, "'method.type'"),
    ({"type": "lohaa"}, "did you mean 'loha'"),
    ({"type": "lora"}, "use method: lora"),
    ({"type": "prefix_tuning"}, "use method: prefix"),
    ({"type": "loha", "alpah": 4}, "unknown config key 'method.alpah' for peft type 'loha' (did you mean 'alpha'?)"),
    ({"type": "loha", "r": "four"}, "'method.r'"),
])
def test_generic_peft_options_are_checked_against_peft(engine, options, message, tmp_path):
    with pytest.raises(ConfigError) as error:
        engine.config(base_config(NO_MODEL, tmp_path, "x.json", {"name": "peft", **options}))
    assert message in str(error.value)


def test_generic_peft_config_round_trips_through_config_yaml(engine, tmp_path):
    from tunery.config import dump_yaml

    config = engine.config(base_config(NO_MODEL, tmp_path, "x.json",
                                       {"name": "peft", "type": "lokr", "r": 4, "target_modules": "q_proj,v_proj"}))
    (tmp_path / "config.yaml").write_text(dump_yaml(config))
    again = engine.config(tmp_path / "config.yaml")
    assert again.method.options.type == "lokr" and again.method.options.r == 4
    assert again.method.options.target_modules == ["q_proj", "v_proj"]
    assert again.digest() == config.digest()


@pytest.mark.parametrize("method, message", [
    ({"name": "prompt", "init": "text"}, "'method.init_text' is required"),
    ({"name": "ptuning", "encoder": "gru"}, "'method.encoder' must be one of 'mlp', 'lstm'"),
    ({"name": "freeze", "mode": "modules"}, "'method.modules' is required"),
    ({"name": "adalora", "init_r": 4, "target_r": 8}, "'method.target_r' must be between 1 and init_r"),
    ({"name": "adalora", "tinit": 2, "tfinal": 1}, "tinit (2) + method.tfinal (1) >= training.max_steps (3)"),
])
def test_bad_method_options_are_refused_before_loading(engine, method, message, tmp_path):
    with pytest.raises(ConfigError) as error:
        engine.train(base_config(NO_MODEL, tmp_path, "x.json", method))
    assert message in str(error.value)


@pytest.fixture(scope="module")
def tiny_model(tiny_lm):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_lm)


@pytest.mark.parametrize("options, expected", [
    ({"mode": "head"}, {"lm_head.weight"}),
    ({"mode": "last_n", "last_n": 1}, "model.layers.1."),
    ({"mode": "modules", "modules": ["lm_head", r"^model\.norm\."]}, {"lm_head.weight", "model.norm.weight"}),
    ({"mode": "modules", "modules": [r"layers\.0\..*_proj"]}, "model.layers.0."),
])
def test_freeze_selects_what_it_is_told(engine, tiny_model, options, expected):
    freeze = engine.methods.get("freeze")
    chosen = freeze.selected(tiny_model, freeze.parse_options(options, "method"), SimpleNamespace(model_task="causal_lm"))
    if isinstance(expected, set):
        assert set(chosen) == expected
    else:
        assert chosen and all(name.startswith(expected) for name in chosen)


@pytest.mark.parametrize("options, message", [
    ({"mode": "last_n", "last_n": 3}, "has only 2 blocks"),
    ({"mode": "modules", "modules": ["attention_xyz"]}, "'attention_xyz' matches no parameter"),
])
def test_freeze_refuses_a_selection_the_model_does_not_have(engine, tiny_model, options, message):
    freeze = engine.methods.get("freeze")
    with pytest.raises(IncompatibleError, match=message):
        freeze.selected(tiny_model, freeze.parse_options(options, "method"), SimpleNamespace(model_task="causal_lm"))


def test_prompt_tuning_starts_from_the_init_text(engine, tiny_lm):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = engine.methods.get("prompt")
    options = prompt.parse_options({"num_virtual_tokens": 3, "init": "text", "init_text": "Answer the question"}, "method")
    run = SimpleNamespace(model_task="causal_lm", model_source=SimpleNamespace(path=tiny_lm))
    model = prompt.prepare(AutoModelForCausalLM.from_pretrained(tiny_lm), options, run)
    ids = AutoTokenizer.from_pretrained(tiny_lm)("Answer the question")["input_ids"][:3]
    start = model.prompt_encoder["default"].embedding.weight
    assert torch.equal(start, model.get_input_embeddings().weight[ids])


# ----------------------------------------------------------------------------- AdaLoRA


@pytest.fixture(scope="module")
def adalora_run(tiny_lm, tmp_path_factory):
    """An AdaLoRA run of 4 steps, counting the budget updates."""
    from peft.tuners.adalora import AdaLoraModel

    tmp = tmp_path_factory.mktemp("adalora")
    data = tmp / "rows.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Add {i} and {i}.", "output": f"{2 * i}"}) + "\n" for i in range(16)))
    calls = []
    original = AdaLoraModel.update_and_allocate
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AdaLoraModel, "update_and_allocate", lambda self, step: calls.append(step) or original(self, step))
        Engine().train(base_config(tiny_lm, tmp / "run", data, {"name": "adalora", "init_r": 4, "target_r": 2},
                                   training={"max_steps": 4, "batch_size": 4, "learning_rate": 1e-2, "bf16": False}))
    return tmp / "run", calls


def test_adalora_updates_its_budget_every_step_with_the_run_length(adalora_run):
    run_dir, calls = adalora_run
    assert calls == [0, 1, 2, 3]
    saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert saved["total_step"] == 4 and saved["rank_pattern"], "the final budget allocation was not saved"


def test_a_reloaded_adalora_adapter_evaluates_its_loss(adalora_run):
    import math

    from tunery import RunContext

    engine = Engine()
    loaded = engine.load(str(adalora_run[0]))
    batch = {k: v for k, v in loaded.tokenizer(["Add 2 and 2. 4"], return_tensors="pt").items()}
    with pytest.raises(AttributeError, match="trainable_adapter_name"):  # peft's trap the evaluators avoid
        loaded.model(**batch, labels=batch["input_ids"])
    run = RunContext(config=loaded.config, output_dir=adalora_run[0], engine=engine, data_task="causal_lm",
                     tokenizer=loaded.tokenizer)
    example = {"input_ids": batch["input_ids"][0].tolist(), "labels": batch["input_ids"][0].tolist()}
    metrics = engine.evaluators.get("loss").evaluate(loaded.model, [example], loaded.config.evaluators[0].options
                                                     if loaded.config.evaluators else
                                                     engine.evaluators.get("loss").parse_options({}, "e"), run)
    metrics = getattr(metrics, "metrics", metrics)
    assert math.isfinite(metrics["loss"]) and metrics["tokens"] == len(example["input_ids"]) - 1


# ----------------------------------------------------------------------------- generate and merge commands


@pytest.fixture(scope="module")
def cli_runs(tiny_lm, tmp_path_factory):
    """Run folders of a mergeable adapter (lora) and a prompt-learning method (prefix)."""
    tmp = tmp_path_factory.mktemp("cli-runs")
    data = tmp / "rows.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i}"}) + "\n" for i in range(12)))
    runs = {}
    for method in ("lora", "prefix"):
        runs[method] = Engine().train(base_config(tiny_lm, tmp / method, data, method)).output_dir
    return runs


def test_cli_generate_with_a_run_folder_and_chat_template(run_cli, cli_runs, engine):
    plain = run_cli("generate", cli_runs["prefix"], "--prompt", "Say 3.", "--no-chat", "--max-new-tokens", "5")
    assert plain.exit_code == 0, plain.output
    expected = engine.generate(str(cli_runs["prefix"]), ["Say 3."], chat=False, max_new_tokens=5)
    assert plain.output.strip() == expected[0]
    chat = run_cli("generate", cli_runs["lora"], "--prompt", "Say 3.", "--prompt", "Say 4.", "--chat",
                   "--max-new-tokens", "5", "--temperature", "0.7")
    assert chat.exit_code == 0 and chat.output.count("### Say") == 2, chat.output


def test_cli_merge_writes_a_standalone_model(run_cli, cli_runs, tmp_path, engine):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run_cli("merge", cli_runs["lora"], "--output-dir", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    ids = tokenizer("Say 5.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, engine.load(str(cli_runs["lora"])).model(input_ids=ids).logits,
                                   atol=1e-4, rtol=1e-4)


def test_cli_merge_refuses_prompt_learning_with_the_way_out(run_cli, cli_runs, tmp_path):
    result = run_cli("merge", cli_runs["prefix"], "--output-dir", tmp_path / "merged")
    assert result.exit_code == 2
    assert "prefix tuning (method 'prefix') cannot be merged into the base weights; use the adapter folder" in result.output
    assert not (tmp_path / "merged").exists()


def test_generate_refuses_a_classification_run_before_loading(engine, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"task": {"model": "classification"}, "output": "adapter"}))
    (tmp_path / "config.yaml").write_text(json.dumps(base_config(NO_MODEL, tmp_path, "x.json", "lora",
                                                                 format="classification")))
    with pytest.raises(IncompatibleError, match="holds a classification model .* generate needs a causal language model"):
        engine.generate(str(tmp_path), ["hi"])


def test_packing_is_refused_for_prompt_learning(engine, tmp_path):
    for method in ("prefix", "ptuning", "prompt"):
        config = base_config(NO_MODEL, tmp_path, "x.json", method)
        config["data"]["packing"] = True
        with pytest.raises(IncompatibleError, match=f"method '{method}' does not support sequence packing"):
            engine.train(config)
    with pytest.raises(ModelSourceError):  # lora packs: the check passes, and the (missing) model is next
        config = base_config(NO_MODEL, tmp_path, "x.json", "lora")
        config["data"]["packing"] = True
        engine.train(config)


def test_method_plugins_and_the_pytest_plugin_are_cheap_to_import():
    import subprocess
    import sys

    modules = [f"tunery_{name}" for name in TECHNIQUES] + ["tunery.testing", "tunery.testing.plugin"]
    code = (f"import sys; import {', '.join(modules)}; "
            "print([m for m in ('torch', 'transformers', 'peft', 'safetensors') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lora_layers_to_transform_with_all_linear(engine, tiny_lm):
    from transformers import AutoModelForCausalLM

    lora = engine.methods.get("lora")
    options = lora.parse_options({"layers_to_transform": [1]}, "method")
    model = lora.prepare(AutoModelForCausalLM.from_pretrained(tiny_lm), options, SimpleNamespace(model_task="causal_lm"))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trained) == 14 and all(".layers.1." in n for n in trained)  # 7 linear layers x (A, B)


def test_lora_loftq_is_refused_before_loading_without_cuda(engine, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("LoftQ runs where CUDA is")
    with pytest.raises(IncompatibleError, match="init 'loftq' needs a CUDA GPU"):
        engine.train(base_config(NO_MODEL, tmp_path, "x.json", {"name": "lora", "init": "loftq"}))


# ----------------------------------------------------------------------------- environment drift


def test_prefix_on_classification_is_refused_before_loading_where_peft_cannot(engine, tmp_path, monkeypatch):
    """transformers 5.24 renamed the backbones' past_key_values, which peft's prefix tuning of
    classification models passes: the pair is refused before any model loads, with a way out."""
    import tunery_prefix
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("5.24"):
        assert not tunery_prefix.backbones_take_past_key_values()
    monkeypatch.setattr(tunery_prefix, "backbones_take_past_key_values", lambda: False)
    data = tmp_path / "labels.jsonl"
    data.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n')
    config = base_config(NO_MODEL, tmp_path / "run", data, {"name": "prefix"}, format="classification")
    with pytest.raises(IncompatibleError) as refusal:
        engine.train(config)
    assert "method 'prefix'" in str(refusal.value) and "'ptuning'" in str(refusal.value)
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(tunery_prefix, "backbones_take_past_key_values", lambda: True)
    engine.check(config)  # where the backbones take them, the pair is allowed
