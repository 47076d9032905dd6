"""Generation: batching and in-memory merging keep greedy outputs, decoding constraints hold,
control codes learnt in training steer the output."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl
from tunery import Engine
from tunery.errors import ConfigError
from tunery.generation import complete_batch, generate, prompt_ids, resolve_constraints, satisfaction

PROMPTS = ["The quick brown", "Once upon a time, in a small village", "Question: What is 12 plus 30?",
           "The weather", "Mix the dry ingredients first, then add the eggs and", "Python is"]
SCHEMA = {"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative"]},
                                           "score": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["sentiment", "score"], "additionalProperties": False}


@pytest.fixture(scope="module")
def lm(tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_lm).eval(), AutoTokenizer.from_pretrained(tiny_lm)


@pytest.fixture(scope="module")
def engine():
    return Engine()


def test_batched_greedy_outputs_equal_one_prompt_at_a_time(lm):
    model, tokenizer = lm
    alone = [generate(model, tokenizer, [p], max_new_tokens=16, batch_size=1)[0] for p in PROMPTS]
    assert generate(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=4) == alone
    assert len(set(alone)) > 1  # different prompts, different answers: the test can fail


def test_a_merged_lora_generates_what_the_adapter_does(lm):
    import copy

    from peft import LoraConfig, get_peft_model

    from tunery.generation import for_inference

    model, tokenizer = lm
    adapted = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    adapted.eval()
    unmerged = [generate(adapted, tokenizer, [p], max_new_tokens=16, batch_size=1)[0] for p in PROMPTS]
    assert unmerged != [generate(model, tokenizer, [p], max_new_tokens=16)[0] for p in PROMPTS]  # the adapter matters
    lora = Engine().methods.get("lora")
    merged = for_inference(adapted, lora, lora.parse_options({}, "method"), quantized=False)
    assert not hasattr(merged, "peft_config")  # a plain transformers model now
    assert generate(merged, tokenizer, PROMPTS, max_new_tokens=16) == unmerged


def test_json_schema_outputs_all_validate_and_unconstrained_ones_do_not(lm, engine):
    model, tokenizer = lm
    constraints = resolve_constraints(engine.constraints, [{"name": "json-schema", "schema": SCHEMA}], "constraints")
    free = generate(model, tokenizer, PROMPTS, max_new_tokens=48)
    bound = generate(model, tokenizer, PROMPTS, max_new_tokens=48, constraints=constraints)
    assert satisfaction(constraints, bound)["constraint/json-schema"] == 1.0, bound
    for text in bound:
        assert json.loads(text)["sentiment"] in ("positive", "negative")
    assert satisfaction(constraints, free)["constraint/json-schema"] <= 0.2


def test_banned_words_never_appear_however_they_are_spelt(lm, engine):
    model, tokenizer = lm
    free = generate(model, tokenizer, PROMPTS, max_new_tokens=24)
    words = sorted({w for text in free for w in text.split() if len(w) >= 3 and w.isalpha()})[:6]
    assert words
    constraints = resolve_constraints(engine.constraints, ["ban:" + ",".join(words + ["ee"])], "constraints")
    assert satisfaction(constraints, free)["constraint/ban"] < 0.5
    bound = generate(model, tokenizer, PROMPTS, max_new_tokens=24, constraints=constraints)
    for text in bound:
        assert not any(w.lower() in text.lower() for w in words + ["ee"]), text
    assert satisfaction(constraints, bound)["constraint/ban"] == 1.0


def test_required_words_regex_stop_and_length(lm, engine):
    model, tokenizer = lm
    use = lambda specs, **kw: generate(model, tokenizer, PROMPTS, constraints=resolve_constraints(  # noqa: E731
        engine.constraints, specs, "constraints"), **kw)
    assert all("harbour" in t.lower() and "moon" in t.lower() for t in use(["require:harbour,moon"], max_new_tokens=12))
    import re

    assert all(re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t) for t in use([r"regex:[0-9]{3}-[a-z]{2,4}"], max_new_tokens=12))
    free = generate(model, tokenizer, PROMPTS, max_new_tokens=24)
    stop = next(c for t in free for c in t[3:] if not c.isspace())  # a character some output contains
    stopped = use([f"stop:{stop}"], max_new_tokens=24)
    assert all(stop not in t for t in stopped) and sum(map(len, stopped)) < sum(map(len, free))
    ids = [prompt_ids(tokenizer, p) for p in PROMPTS]
    short = complete_batch(model, tokenizer, ids, max_new_tokens=24,
                           constraints=resolve_constraints(engine.constraints, ["length:3"], "c"))
    assert short == complete_batch(model, tokenizer, ids, max_new_tokens=3) != complete_batch(model, tokenizer, ids,
                                                                                               max_new_tokens=8)


def test_bad_constraints_are_one_line_config_errors(engine, tmp_path):
    for spec, words in (("nope:1", "no constraint named 'nope'"), ("ban:missing.txt", "does not exist"),
                        ("regex:(", "not a valid regular expression"), ("length:9-3", "min_tokens <= max_tokens"),
                        (f"json-schema:{tmp_path}/s.json", "does not exist")):
        with pytest.raises(ConfigError, match=words):
            resolve_constraints(engine.constraints, [spec], "--constraint")


def test_cli_combines_json_schema_and_ban(run_cli, tiny_lm, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]{2,8}$"}},
                                  "required": ["name"], "additionalProperties": False}))

    def outputs(*extra):
        result = run_cli("generate", tiny_lm, "--prompt", "Review:", "--prompt", "The weather", "--no-chat",
                         "--constraint", f"json-schema:{schema}", *extra, "--max-new-tokens", 40)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["name"] for line in result.output.splitlines() if not line.startswith("###")]

    names = outputs()
    banned = sorted({n[i:i + 2] for n in names for i in range(len(n) - 1) if n[i:i + 2].isalpha()})[:3]
    assert banned, names
    words = tmp_path / "words.txt"
    words.write_text("# never say these\n" + "\n".join(banned) + "\n")
    names = outputs("--constraint", f"ban:{words}")  # every output still parses (json.loads above)
    assert len(names) == 2 and not any(b.lower() in n.lower() for b in banned for n in names), (banned, names)


POSITIVE, NEGATIVE = "great lovely wonderful", "awful terrible bad"


def test_control_codes_steer_a_trained_model_through_the_cli(run_cli, tiny_lm, tmp_path):
    rows = [{"instruction": f"Write a review of product {i % 8}.", "output": POSITIVE if i % 2 else NEGATIVE,
             "sentiment": "positive" if i % 2 else "negative"} for i in range(32)]
    data = write_jsonl(tmp_path / "reviews.jsonl", rows)
    out = tmp_path / "run"
    result = run_cli("train", "--model", tiny_lm, "--method", "full", "--format", "alpaca", "--data", data,
                     "--output-dir", out, "--max-steps", 30, "--set", "training.learning_rate=0.003",
                     "--set", "data.control=[sentiment]", "--set", "data.val_split=0.25",
                     "--set", 'evaluators=[{"name": "generation", "max_new_tokens": 6, "control_rules": '
                              '{"sentiment=positive": "great|lovely|wonderful", "sentiment=negative": "awful|terrible|bad"}}]',
                     "--set", 'generation.prompts=["Write a review of product 1."]', "--set", "generation.max_new_tokens=6",
                     "--set", "generation.control={sentiment: positive}", "--set", 'generation.constraints=["ban:lovely"]')
    assert result.exit_code == 0, result.output
    sample = json.loads((out / "samples.json").read_text())["after"][0]["output"]  # the report's sample
    assert "great" in sample and "lovely" not in sample, sample
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["control"] == {"sentiment": ["negative", "positive"]}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["generation/control/follows"] >= 0.75
    prompts = [f"Write a review of product {i}." for i in range(8)]
    follows = 0
    for value, words in (("positive", POSITIVE), ("negative", NEGATIVE)):
        args = [a for p in prompts for a in ("--prompt", p)]
        result = run_cli("generate", out, *args, "--control", f"sentiment={value}", "--max-new-tokens", 6)
        assert result.exit_code == 0, result.output
        outputs = [line for line in result.output.splitlines() if not line.startswith("###")]
        follows += sum(any(w in o for w in words.split()) and not any(
            w in o for w in (NEGATIVE if value == "positive" else POSITIVE).split()) for o in outputs)
    assert follows >= 13  # of 16; chance is 8
    result = run_cli("generate", out, "--prompt", "Hi", "--control", "sentiment=neutral")
    assert result.exit_code != 0 and "saw only negative, positive" in result.output
    result = run_cli("generate", out, "--prompt", "Hi")
    assert result.exit_code != 0 and "--control sentiment=VALUE" in result.output
