"""The fine-tuning toolbox (issue 14): each technique shows its effect on tiny models."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl
from tunery import Engine, Extension, hookimpl


def base_config(model, data, out, **extra):
    config = {"model": model, "output_dir": str(out), "method": "full", "format": "alpaca",
              "data": {"train": [str(data)], "val_split": 0}, "evaluators": [],
              "training": {"max_steps": 10, "learning_rate": 5e-3, "batch_size": 4, "bf16": False}}
    for key, value in extra.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    return config


def texts():
    return [f"What is {i} plus {i}? It is {2 * i}." for i in range(6)]


def teacher_kl(student, teacher, tokenizer):
    import torch
    from tunery_distill import divergence

    enc = tokenizer(texts(), return_tensors="pt", padding=True)
    mask = enc["attention_mask"].bool()
    with torch.no_grad():
        s, t = student.eval()(**enc).logits, teacher.eval()(**enc).logits
    return float(divergence(s[mask], t[mask]))


@pytest.fixture(scope="module")
def teacher(tiny_lm, tmp_path_factory):
    """A teacher with the student's tokenizer and other weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("teacher")
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(folder)
    return str(folder)


# ----------------------------------------------------------------------------- distillation


def test_distillation_moves_the_student_to_the_teacher_faster_than_sft(tiny_lm, teacher, tmp_path):
    engine = Engine()
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in texts()])
    loaded_teacher = engine.load(teacher)
    base = engine.load(tiny_lm)
    before = teacher_kl(base.model, loaded_teacher.model, base.tokenizer)
    sft = engine.train(base_config(tiny_lm, data, tmp_path / "sft", format="completion"))
    distill = engine.train(base_config(tiny_lm, data, tmp_path / "kd", format="completion",
                                       objective={"name": "distill", "teacher": teacher, "alpha": 0.9}))
    kl_sft = teacher_kl(sft.model, loaded_teacher.model, base.tokenizer)
    kl_kd = teacher_kl(distill.model, loaded_teacher.model, base.tokenizer)
    assert kl_kd < 0.8 * before and kl_kd < kl_sft
    log = [json.loads(line) for line in (tmp_path / "kd" / "train_log.jsonl").read_text().splitlines()]
    kd = [r["distill/kd"] for r in log if "distill/kd" in r]
    assert len(kd) == 10 and kd[-1] < kd[0]
    log = [json.loads(line) for line in (tmp_path / "sft" / "train_log.jsonl").read_text().splitlines()]
    assert not any("distill/kd" in r for r in log)


def test_divergences_are_zero_for_equal_distributions_and_positive_otherwise():
    import torch
    from tunery_distill import divergence

    a, b = torch.randn(5, 11), torch.randn(5, 11)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert abs(float(divergence(a, a, kind))) < 1e-6
        assert float(divergence(a, b, kind)) > 0
    assert float(divergence(a, b, "forward_kl")) != pytest.approx(float(divergence(a, b, "reverse_kl")))


def test_distill_refuses_a_teacher_with_another_tokenizer(tiny_lm, tiny_encoder, alpaca_file, tmp_path):
    from tunery import IncompatibleError

    with pytest.raises(IncompatibleError, match="another tokenizer"):
        Engine().train(base_config(tiny_lm, alpaca_file, tmp_path / "r",
                                   objective={"name": "distill", "teacher": tiny_encoder}))


def test_distill_init_keeps_every_kth_layer(run_cli, tiny_lm, tmp_path):
    from transformers import AutoModelForCausalLM

    result = run_cli("distill-init", tiny_lm, tmp_path / "student", "--every", 2)
    assert result.exit_code == 0, result.output
    teacher = AutoModelForCausalLM.from_pretrained(tiny_lm)
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert student.config.num_hidden_layers == teacher.config.num_hidden_layers // 2
    t, s = teacher.state_dict(), student.state_dict()
    assert (s["model.layers.0.mlp.up_proj.weight"] == t["model.layers.1.mlp.up_proj.weight"]).all()
    assert (tmp_path / "student" / "tokenizer.json").is_file()


def test_lora_distill_with_curriculum_and_neftune_in_one_run(tiny_lm, teacher, alpaca_file, tmp_path):
    result = Engine().train(base_config(
        tiny_lm, alpaca_file, tmp_path / "combo", method={"name": "lora", "r": 4},
        objective={"name": "distill", "teacher": teacher}, extensions=["curriculum", "neftune"]))
    log = [json.loads(line) for line in (tmp_path / "combo" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 10 and all("distill/kd" in r and "curriculum/difficulty" in r for r in steps)
    assert steps[-1]["distill/kd"] < steps[0]["distill/kd"]
    assert (result.model_dir / "adapter_model.safetensors").is_file()


# ----------------------------------------------------------------------------- regularisers


def squared_distance(model, reference):
    ref = reference.state_dict()
    return sum(float((p.detach() - ref[n]).pow(2).sum()) for n, p in model.named_parameters())


def test_l2sp_keeps_the_weights_closer_to_the_base(tiny_lm, alpaca_file, tmp_path):
    engine = Engine()
    base = engine.load(tiny_lm).model
    plain = engine.train(base_config(tiny_lm, alpaca_file, tmp_path / "plain"))
    pulled = engine.train(base_config(tiny_lm, alpaca_file, tmp_path / "l2sp",
                                      extensions=[{"name": "l2sp", "alpha": 5.0}]))
    assert squared_distance(pulled.model, base) < 0.7 * squared_distance(plain.model, base)


def test_l1_penalty_shrinks_the_trainable_weights(tiny_lm, alpaca_file, tmp_path):
    engine = Engine()
    lora = {"name": "lora", "r": 4}
    plain = engine.train(base_config(tiny_lm, alpaca_file, tmp_path / "plain", method=lora))
    l1 = engine.train(base_config(tiny_lm, alpaca_file, tmp_path / "l1", method=lora,
                                  extensions=[{"name": "penalty", "l1": 0.01}]))

    def size(model):
        return sum(float(p.abs().sum()) for n, p in model.named_parameters() if "lora_B" in n)

    assert size(l1.model) < 0.8 * size(plain.model)
    log = (tmp_path / "l1" / "train_log.jsonl").read_text()
    assert "penalty/l1" in log


def test_label_smoothing_raises_the_entropy_of_predictions(tiny_lm, tmp_path):
    import torch

    engine = Engine()
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in texts()])
    fast = {"max_steps": 20, "learning_rate": 2e-2}
    plain = engine.train(base_config(tiny_lm, data, tmp_path / "plain", format="completion", training=fast))
    smooth = engine.train(base_config(tiny_lm, data, tmp_path / "ls", format="completion", training=fast,
                                      extensions=[{"name": "label_smoothing", "epsilon": 0.3}]))
    tokenizer = engine.load(tiny_lm).tokenizer
    enc = tokenizer(texts(), return_tensors="pt", padding=True)

    def entropy(model):
        with torch.no_grad():
            p = model.eval()(**enc).logits.softmax(-1)
        return float(-(p * p.clamp_min(1e-12).log()).sum(-1)[enc["attention_mask"].bool()].mean())

    assert entropy(plain.model) < 5.0  # it learned the texts: confident predictions
    assert entropy(smooth.model) > entropy(plain.model) + 0.5


def test_label_smoothing_term_matches_the_smoothed_cross_entropy():
    import torch
    import torch.nn.functional as F
    from tunery_label_smoothing import uniform_term

    logits, labels = torch.randn(3, 7), torch.tensor([1, 4, 6])
    eps = 0.2
    expected = F.cross_entropy(logits, labels, label_smoothing=eps)
    ours = (1 - eps) * F.cross_entropy(logits, labels) + eps * uniform_term(logits, labels)
    assert float(ours) == pytest.approx(float(expected), rel=1e-5)


def test_neftune_adds_bounded_noise_in_training_only(tiny_lm):
    import types

    import torch
    from tunery_neftune import Neftune, NeftuneOptions

    model = Engine().load(tiny_lm).model
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    clean = model.get_input_embeddings()(ids).detach()
    run = types.SimpleNamespace(state={})
    Neftune().prepare(model, NeftuneOptions(alpha=5.0), run)
    emb = model.get_input_embeddings()
    model.train()
    a, b = emb(ids).detach(), emb(ids).detach()
    bound = 5.0 / (ids.shape[1] * clean.shape[-1]) ** 0.5
    assert not torch.equal(a, b) and float((a - clean).abs().max()) <= bound + 1e-6
    assert float((a - clean).abs().max()) > bound / 2
    model.eval()
    assert torch.equal(emb(ids).detach(), clean)
    run.state["neftune"]["hook"].remove()


def test_dropout_overrides_reach_attention_hidden_and_lora(tiny_encoder, tiny_lm):
    import torch
    from peft import LoraConfig, get_peft_model
    from tunery_dropout import set_dropout
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    bert = AutoModelForSequenceClassification.from_pretrained(tiny_encoder, num_labels=2)
    changed = set_dropout(bert, attention=0.3, hidden=0.05)
    ps = {n: m.p for n, m in bert.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert changed["attention"] >= 2 and changed["hidden"] >= 3
    assert all(p == 0.3 for n, p in ps.items() if n.endswith("attention.self.dropout"))
    assert all(p == 0.05 for n, p in ps.items() if n.endswith("output.dropout") or n == "dropout")
    llama = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_lm), LoraConfig(r=2, target_modules=["q_proj"]))
    changed = set_dropout(llama, attention=0.2, lora=0.4)
    assert changed["lora"] == 2 and changed["attention"] == 2
    ids = torch.tensor([[5, 6, 7, 8]])
    llama.train()
    assert not torch.equal(llama(ids).logits, llama(ids).logits)  # dropout is live


def test_rdrop_makes_two_dropout_passes_agree(tiny_lm, alpaca_file, tmp_path):
    import torch
    from tunery_rdrop import symmetric_kl

    engine = Engine()
    drop = {"name": "dropout", "attention": 0.3}
    plain = engine.train(base_config(tiny_lm, alpaca_file, tmp_path / "plain", extensions=[drop]))
    rdrop = engine.train(base_config(tiny_lm, alpaca_file, tmp_path / "rdrop",
                                     extensions=[drop, {"name": "rdrop", "alpha": 5.0}]))
    enc = engine.load(tiny_lm).tokenizer(texts(), return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)

    def disagreement(model):
        model.train()
        torch.manual_seed(0)
        with torch.no_grad():
            return float(symmetric_kl(model(**enc).logits, model(**enc).logits, labels))

    assert disagreement(rdrop.model) < disagreement(plain.model)
    assert "rdrop/kl" in (tmp_path / "rdrop" / "train_log.jsonl").read_text()


def test_adversarial_perturbation_raises_the_loss_within_eps(tiny_lm, alpaca_file, tmp_path):
    Engine().train(base_config(tiny_lm, alpaca_file, tmp_path / "adv", method={"name": "lora", "r": 4},
                               extensions=[{"name": "adversarial", "eps": 0.05, "steps": 2}]))
    log = [json.loads(line) for line in (tmp_path / "adv" / "train_log.jsonl").read_text().splitlines()]
    gaps = [r["adversarial/gap"] for r in log if "adversarial/gap" in r]
    assert len(gaps) == 10 and sum(gaps) / len(gaps) > 0


# ----------------------------------------------------------------------------- curriculum


class OrderRecorder(Extension):
    """Records the real lengths of the training examples in the order the trainer visits them."""

    name = "order_recorder"
    seen: list = []

    def compute_loss(self, inner, model, inputs, options, run):
        if model.training:
            self.seen.extend(inputs["attention_mask"].sum(1).tolist())
        return inner(model, inputs)


class RecorderPlugin:
    @hookimpl
    def tunery_register_extensions(self, registry):
        registry.add(OrderRecorder())


def test_curriculum_visits_examples_shortest_first(tiny_lm, tmp_path):
    rows = [{"instruction": "Say " + " ".join(["word"] * (i % 9 + 1)), "input": "", "output": "ok"} for i in range(18)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    OrderRecorder.seen = []
    engine = Engine(plugins=[RecorderPlugin()])
    engine.train(base_config(tiny_lm, data, tmp_path / "cur", extensions=["curriculum", "order_recorder"],
                             training={"max_steps": 9, "batch_size": 2}))
    assert len(OrderRecorder.seen) == 18 and OrderRecorder.seen == sorted(OrderRecorder.seen)
    summary = json.loads((tmp_path / "cur" / "curriculum.json").read_text())
    assert summary["mean_by_tenth"] == sorted(summary["mean_by_tenth"]) and summary["by"] == "length"
    log = [json.loads(line) for line in (tmp_path / "cur" / "train_log.jsonl").read_text().splitlines()]
    seen = [r["curriculum/difficulty"] for r in log if "curriculum/difficulty" in r]
    assert len(seen) == 9 and seen == sorted(seen) and seen[0] < seen[-1]


def test_curriculum_by_column_and_base_loss(tiny_lm, tmp_path):
    rows = [{"instruction": f"Task {i}", "input": "", "output": "x " * (i + 1), "level": (7 * i) % 10}
            for i in range(10)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    OrderRecorder.seen = []
    engine = Engine(plugins=[RecorderPlugin()])
    engine.train(base_config(tiny_lm, data, tmp_path / "col", training={"max_steps": 10, "batch_size": 1},
                             extensions=[{"name": "curriculum", "by": "column", "column": "level"}, "order_recorder"]))
    difficulty = json.loads((tmp_path / "col" / "curriculum.json").read_text())["difficulty"]
    assert difficulty == sorted(r["level"] for r in rows)
    engine.train(base_config(tiny_lm, data, tmp_path / "loss", training={"max_steps": 2, "batch_size": 1},
                             extensions=[{"name": "curriculum", "by": "loss"}]))
    losses = json.loads((tmp_path / "loss" / "curriculum.json").read_text())["difficulty"]
    assert losses == sorted(losses) and len(set(losses)) > 1
    assert list((engine.cache_dir / "curriculum").glob("*.json"))  # computed once, cached


def test_curriculum_paces_staged_and_by_competence():
    from tunery_curriculum import schedule

    difficulty = [float(d) for d in range(30)][::-1]  # example i has difficulty 29 - i
    staged = schedule(difficulty, "staged", stages=3)
    assert len(staged) == 30 and all(difficulty[i] < 10 for i in staged[:10])
    assert max(difficulty[i] for i in staged[10:20]) < 20 and max(difficulty[i] for i in staged[20:]) >= 20
    competence = schedule(difficulty, "competence", c0=0.2)
    assert all(difficulty[i] < 6 for i in competence[:1]) and len(competence) == 30
    assert max(difficulty[i] for i in competence[:10]) < max(difficulty[i] for i in competence[20:])


def test_curriculum_refuses_a_bad_column_value(tiny_lm, tmp_path):
    from tunery import DataError

    data = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "input": "", "output": "b", "level": 1},
                                              {"instruction": "c", "input": "", "output": "d", "level": "hard"}])
    with pytest.raises(DataError, match=r"d.jsonl:2.*'level'"):
        Engine().train(base_config(tiny_lm, data, tmp_path / "r",
                                   extensions=[{"name": "curriculum", "by": "column", "column": "level"}]))


# ----------------------------------------------------------------------------- augmentation


def test_augment_multiplies_training_rows_and_never_touches_eval(tiny_encoder, classification_file, tmp_path):
    engine = Engine()
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"text": f"good fine {i}", "label": "pos"} for i in range(6)])

    def run(name, **extra):
        return engine.train({"model": tiny_encoder, "output_dir": str(tmp_path / name), "method": "full",
                             "format": "classification", "evaluators": ["classification"],
                             "data": {"train": [str(classification_file)], **extra.pop("data", {})},
                             "training": {"max_steps": 2, "bf16": False}, **extra}).metrics["data"]

    plain = run("plain", data={"eval": [str(evaluation)]})
    aug = run("aug", data={"eval": [str(evaluation)]}, extensions=[{"name": "augment", "copies": 2}])
    assert plain["train"]["examples"] == 40 and aug["train"]["examples"] == 120 and aug["train"]["augmented"] == 80
    assert aug["eval"]["examples"] == plain["eval"]["examples"] == 6 and "augmented" not in aug["eval"]
    held = run("held", data={"val_split": 0.25}, extensions=[{"name": "augment", "copies": 2}])
    assert held["eval"]["examples"] == 10 and held["train"]["augmented"] == 80  # no augmented row held out


def test_augment_ops_keep_the_words_of_the_text():
    import random

    from tunery_augment import transform

    text = "the quick brown fox jumps over the lazy dog"
    rng = random.Random(0)
    assert sorted(transform(text, "swap", 0.2, rng).split()) == sorted(text.split())
    deleted = transform(text, "delete", 0.2, rng).split()
    assert 0 < len(deleted) < 9 and set(deleted) <= set(text.split())
    inserted = transform(text, "insert", 0.2, rng).split()
    assert len(inserted) == 11 and set(inserted) == set(text.split())
    masked = transform(text, "mask", 0.3, rng, "[MASK]").split()
    assert "[MASK]" in masked and len(masked) == 7


# ----------------------------------------------------------------------------- continual learning


def continual_files(tmp_path):
    def rows(answer, start, n):
        return [{"instruction": f"What is {i} plus {i}?", "input": "", "output": answer.format(2 * i)}
                for i in range(start, start + n)]

    files = {}
    for task, answer in (("t1", "It is {}."), ("t2", "No idea, sorry.")):
        files[task] = (write_jsonl(tmp_path / f"{task}.jsonl", rows(answer, 0, 24)),
                       write_jsonl(tmp_path / f"{task}_eval.jsonl", rows(answer, 30, 6)))
    return files


def staged(tiny_lm, files, out, extensions):
    return {"model": tiny_lm, "output_dir": str(out), "method": "full", "format": "alpaca",
            "evaluators": ["loss"], "training": {"max_steps": 12, "learning_rate": 1e-2, "batch_size": 4, "bf16": False},
            "extensions": extensions,
            "stages": [{"name": name, "data": {"train": [str(train)], "eval": [str(ev)]}}
                       for name, (train, ev) in files.items()]}


def test_continual_learning_with_replay_forgets_less(tiny_lm, tmp_path):
    engine = Engine()
    files = continual_files(tmp_path)
    plain = engine.train(staged(tiny_lm, files, tmp_path / "plain", []))
    replay = engine.train(staged(tiny_lm, files, tmp_path / "replay", [{"name": "replay", "fraction": 0.5}]))
    f_plain, f_replay = plain.metrics["forgetting"], replay.metrics["forgetting"]
    assert f_plain["tasks"] == ["t1", "t2"] and f_plain["matrix"][1][0] is None
    assert f_plain["forgetting"]["t1"] > 0  # stage t2 made task t1 worse
    assert f_replay["forgetting"]["t1"] < f_plain["forgetting"]["t1"]
    assert "Forgetting matrix" in (tmp_path / "replay" / "report.md").read_text()
    assert json.loads((tmp_path / "replay" / "metrics.json").read_text())["forgetting"]["matrix"] == f_replay["matrix"]
    config = json.loads(json.dumps(__import__("yaml").safe_load((tmp_path / "replay" / "t2" / "config.yaml").read_text())))
    assert config["extensions"][0]["sources"][0]["data"] == [str(files["t1"][0])]
    assert config["model"].endswith("t1/model")  # the second stage starts from the first one's weights


def test_continual_learning_with_ewc_forgets_less(tiny_lm, tmp_path):
    engine = Engine()
    files = continual_files(tmp_path)
    plain = engine.train(staged(tiny_lm, files, tmp_path / "plain", []))
    ewc = engine.train(staged(tiny_lm, files, tmp_path / "ewc", [{"name": "ewc", "weight": 5000}]))
    assert ewc.metrics["forgetting"]["forgetting"]["t1"] < plain.metrics["forgetting"]["forgetting"]["t1"]


def test_stages_are_validated_naming_the_stage(tiny_lm, alpaca_file, tmp_path):
    from tunery import ConfigError

    good = {"name": "a", "data": {"train": [str(alpaca_file)], "eval": [str(alpaca_file)]}}
    config = {"model": tiny_lm, "output_dir": str(tmp_path / "s"), "method": "full", "format": "alpaca"}
    with pytest.raises(ConfigError, match=r"stages\[1\].data.eval"):
        Engine().config({**config, "stages": [good, {"name": "b", "data": {"train": [str(alpaca_file)]}}]})
    with pytest.raises(ConfigError, match=r"stages\[1\] \(b\).*training.nope"):
        Engine().config({**config, "stages": [good, {**good, "name": "b", "training": {"nope": 1}}]})
    with pytest.raises(ConfigError, match=r"stages\[1\].model"):
        Engine().config({**config, "stages": [good, {**good, "name": "b", "model": tiny_lm}]})
    with pytest.raises(ConfigError, match="unique"):
        Engine().config({**config, "stages": [good, good]})
    parsed = Engine().config({**config, "stages": [good, {**good, "name": "b", "training": {"max_steps": 3}}]})
    assert [s.training.max_steps for s in parsed.stages] == [-1, 3]
    assert parsed.stages[1].output_dir == str(tmp_path / "s" / "b")


def test_augment_paraphrases_with_the_base_model(tiny_lm, tmp_path):
    rows = [{"instruction": f"Tell me about the number {i}", "input": "", "output": f"{i} is a number."} for i in range(4)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result = Engine().train(base_config(tiny_lm, data, tmp_path / "para", training={"max_steps": 1},
                                        extensions=[{"name": "augment", "ops": ["paraphrase"], "max_new_tokens": 8}]))
    summary = result.metrics["data"]["train"]
    assert 0 < summary.get("augmented", 0) <= 4 and summary["examples"] == 4 + summary["augmented"]
