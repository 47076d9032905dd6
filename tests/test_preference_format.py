"""The preference formatter: four layouts, chat template or plain text, bad rows by line."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def engine():
    from tunery import Engine

    return Engine()


@pytest.fixture(scope="module")
def lm_tokenizer(tiny_lm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm)


def fmt(engine, tokenizer, row, **options):
    formatter = engine.formatters.get("preference")
    return formatter.format(row, tokenizer, formatter.parse_options(options, "format"), None)


def learned(tokenizer, example, side):
    ids = [t for t in example[f"{side}_labels"] if t != -100]
    return tokenizer.decode(ids)


def prompt_text(tokenizer, example, side):
    ids = example[f"{side}_input_ids"]
    n = sum(1 for t in example[f"{side}_labels"] if t == -100)
    return tokenizer.decode(ids[:n])


SHAREGPT = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi there"}],
            "chosen": {"from": "gpt", "value": "Hello!"}, "rejected": {"from": "gpt", "value": "Go away."}}
OPENAI = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
          "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}]}
OPENAI_FULL = {"chosen": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
               "rejected": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Go away."}]}
HH = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away."}
PLAIN = {"prompt": "Hi there", "chosen": "Hello!", "rejected": "Go away."}
SYSTEM = {**PLAIN, "system": "Be brief."}


@pytest.mark.parametrize("row", [PLAIN, SYSTEM, HH, SHAREGPT, OPENAI, OPENAI_FULL],
                         ids=["a", "a-system", "b-hh", "c-sharegpt", "d-openai", "d-full"])
def test_every_layout_renders_the_chat_template_with_loss_on_the_reply(engine, lm_tokenizer, row):
    example = fmt(engine, lm_tokenizer, row)
    assert learned(lm_tokenizer, example, "chosen") == "Hello!<|im_end|>"
    assert learned(lm_tokenizer, example, "rejected") == "Go away.<|im_end|>"
    prompt = prompt_text(lm_tokenizer, example, "chosen")
    assert prompt == prompt_text(lm_tokenizer, example, "rejected")
    assert prompt.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert ("Be brief." in prompt) == (row is SHAREGPT or row is SYSTEM)
    assert example["margin"] == 0.0


def test_plain_text_without_template_and_hh_split(engine, lm_tokenizer):
    example = fmt(engine, lm_tokenizer, HH, template="plain")
    assert prompt_text(lm_tokenizer, example, "chosen") == "\n\nHuman: Hi there\n\nAssistant:"
    assert learned(lm_tokenizer, example, "chosen") == " Hello!<|endoftext|>"
    # transcripts without HH markers: split at the longest shared prefix, on a word boundary
    example = fmt(engine, lm_tokenizer, {"chosen": "Q: two plus two? A: four", "rejected": "Q: two plus two? A: five"},
                  template="plain")
    assert prompt_text(lm_tokenizer, example, "rejected") == "Q: two plus two? A: "
    assert learned(lm_tokenizer, example, "rejected") == "five<|endoftext|>"


def test_encoder_pairs_prompt_and_reply(engine, tiny_encoder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    example = fmt(engine, tokenizer, {**PLAIN, "margin": 2})
    assert tokenizer.decode(example["chosen_input_ids"]) == "[CLS] hi there [SEP] hello! [SEP]"
    assert learned(tokenizer, example, "chosen") == "hello! [SEP]"
    assert example["margin"] == 2.0


@pytest.mark.parametrize("row, reason", [
    ({"prompt": "x", "chosen": "same", "rejected": "same"}, "identical responses"),
    ({"prompt": "x", "chosen": "yes"}, "missing column"),
    ({"messages": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"}, "unknown role"),
    ({"messages": [{"role": "user", "content": "x"}], "chosen": {"role": "user", "content": "a"}, "rejected": "b"}, "wrong role"),
    ({"chosen": "abc", "rejected": "xyz"}, "no shared prompt"),
    ({"prompt": "x", "chosen": "a", "rejected": "b", "margin": "big"}, "wrong type"),
    ({"prompt": "x", "chosen": 3.5, "rejected": ["a", "b"]}, "wrong type"),
])
def test_bad_rows_have_a_reason(engine, lm_tokenizer, row, reason):
    from tunery import RowError

    with pytest.raises(RowError) as info:
        fmt(engine, lm_tokenizer, row)
    assert info.value.reason == reason


def test_conformance_reports_bad_rows_by_line(engine, lm_tokenizer, tmp_path):
    from tunery.testing.formatters import check_formatter

    bad = [({"prompt": "x", "chosen": "same", "rejected": "same"}, "identical responses"),
           ("{not json", "invalid JSON"),
           ({"chosen": "a"}, "missing column"),
           ({"conversations": [{"from": "alien", "value": "x"}], "chosen": "a", "rejected": "b"}, "unknown role")]
    examples = check_formatter(engine, "preference", lm_tokenizer, tmp_path,
                               good=[PLAIN, SYSTEM, HH, SHAREGPT, OPENAI, OPENAI_FULL], bad=bad)
    assert len(examples) == 6
