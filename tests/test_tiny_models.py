"""The tiny test models build offline, load with the Auto classes and can be trained."""

import json
import math
import os
import subprocess
import sys

import pytest

from tunery.testing import tiny

SENTENCE = "The quick brown fox jumps over the lazy dog, 42 times!"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return tiny.cached_causal_lm(root), tiny.cached_encoder(root)


def test_import_is_cheap():
    code = "import sys, tunery.testing.tiny; print([m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tokenizer_round_trip_and_specials(tmp_path):
    tok = tiny.build_tokenizer(tmp_path)
    assert 500 <= len(tok) <= 1000
    text = "Hello, World! 3.14 + 2 = 5.14; naïve café\n  indented\ttab"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<pad>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2, 3]
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token == "<pad>"
    assert tok("<|im_start|>user")["input_ids"][0] == 2  # specials are single tokens


def test_tokenizer_is_deterministic(tmp_path):
    a = tiny.build_tokenizer(tmp_path / "a")
    b = tiny.build_tokenizer(tmp_path / "b")
    assert a.get_vocab() == b.get_vocab()
    assert a(SENTENCE)["input_ids"] == b(SENTENCE)["input_ids"]
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_chat_template(models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models[0])
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(masked) == "Hello!<|im_end|>"


def test_causal_lm_loads_trains_and_generates(models):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models[0]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    assert not model.config.tie_word_embeddings
    assert os.path.exists(os.path.join(path, "model.safetensors"))

    batch = tok([SENTENCE, "Short one."], padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "attention_mask"}
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = model(**batch, labels=labels).loss
    assert math.isfinite(loss.item())
    assert abs(loss.item() - math.log(len(tok))) < 1.0  # near uniform at init

    torch.manual_seed(0)
    one = tok(SENTENCE, return_tensors="pt")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(5):
        loss = model(**one, labels=one["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses

    model.eval()
    out = model.generate(**one, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 1 and one["input_ids"].shape[1] < out.shape[1] <= one["input_ids"].shape[1] + 5


def test_causal_lm_is_deterministic(tmp_path):
    a = (tmp_path / "a").as_posix()
    tiny.build_causal_lm(a, with_tokenizer=False, layers=1)
    tiny.build_causal_lm(tmp_path / "b", with_tokenizer=False, layers=1)
    tiny.build_causal_lm(tmp_path / "c", with_tokenizer=False, layers=1, seed=1)
    assert not os.path.exists(os.path.join(a, "tokenizer.json"))
    read = lambda name: (tmp_path / name / "model.safetensors").read_bytes()
    assert read("a") == read("b") != read("c")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["num_hidden_layers"] == 1


def test_encoder_sequence_classification(models):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = models[1]
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.pad_token is not None
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    batch = tok(["A wonderful film.", "Terrible service, we waited for an hour."], padding=True, return_tensors="pt")
    assert {"input_ids", "attention_mask"} <= set(batch)
    assert (batch["input_ids"][:, 0] == tok.cls_token_id).all()
    logits = model(**batch).logits
    assert logits.shape == (2, 3)
    loss = model(**batch, labels=torch.tensor([0, 2])).loss
    assert math.isfinite(loss.item())
    # the encoder body is the saved one, not a fresh random init
    fresh = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, fresh.bert.embeddings.word_embeddings.weight)


def test_cache_reuses_complete_builds(tmp_path):
    first = tiny.cached_encoder(tmp_path)
    stamp = os.path.getmtime(os.path.join(first, "model.safetensors"))
    assert tiny.cached_encoder(tmp_path) == first
    assert os.path.getmtime(os.path.join(first, "model.safetensors")) == stamp
    assert sorted(os.listdir(tmp_path)) == ["encoder"]
    # a half-built folder (no marker) is replaced
    os.remove(os.path.join(first, tiny.MARKER))
    assert tiny.cached_encoder(tmp_path) == first
    assert os.path.exists(os.path.join(first, tiny.MARKER))
    assert tiny.cached_encoder(tmp_path, layers=1).endswith("encoder-layers1")
