"""Built-in formatters: every layout they accept, broken rows reported by number, and the loss on
exactly the right tokens (the shared conformance kit tunery.testing.formatters)."""

from __future__ import annotations

import pytest

from tunery import Engine
from tunery.testing.formatters import LAYOUTS, check_formatter

EOS = "<|endoftext|>"
IM_END = "<|im_end|>"


@pytest.fixture(scope="module")
def engine():
    return Engine()


@pytest.fixture(scope="module")
def tok():
    from tunery.testing.tiny import build_tokenizer

    return build_tokenizer(None)


@pytest.fixture(scope="module")
def plain_tok():
    """The same tokenizer without a chat template."""
    from tunery.testing.tiny import build_tokenizer

    tokenizer = build_tokenizer(None)
    tokenizer.chat_template = None
    return tokenizer


# ----------------------------------------------------------------------------- alpaca

ALPACA_GOOD = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "It is 5."},
    {"instruction": "Summarize the text.", "input": "The meeting covered the budget.", "output": "A budget meeting."},
    {"instruction": "Say hi.", "output": "Hi!", "system": "Be brief."},
]
ALPACA_BAD = [
    ({"instruction": "No output here."}, "missing column"),
    ({"instruction": "Empty.", "output": "  "}, "empty text"),
    ({"instruction": ["not", "text"], "output": "x"}, "wrong type"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_alpaca_text_template_in_every_layout(engine, plain_tok, tmp_path, layout):
    bad = ALPACA_BAD if layout in ("jsonl", "json") else ALPACA_BAD[:2]  # csv/parquet cannot hold a list cell
    if layout in ("csv", "parquet"):  # every row has every column: a missing value is an empty cell or a null
        bad = [(row, "empty text" if reason == "missing column" else reason) for row, reason in bad]
    if layout == "jsonl":
        bad = [*bad, ('{"instruction": "broken', "invalid JSON")]
    per_row = check_formatter(engine, "alpaca", plain_tok, tmp_path, good=ALPACA_GOOD, bad=bad, layout=layout,
                              trained=[r["output"] + EOS for r in ALPACA_GOOD])
    text = plain_tok.decode(per_row[1][0]["input_ids"])
    assert "### Input:\nThe meeting covered the budget." in text
    assert plain_tok.decode(per_row[2][0]["input_ids"]).startswith("Be brief.\n\n### Instruction:\nSay hi.")


def test_alpaca_chat_template_with_system_and_history(engine, tok, tmp_path):
    good = [{"instruction": "And 3 plus 3?", "output": "It is 6.", "system": "You add numbers.",
             "history": [["What is 1 plus 1?", "It is 2."]]}]
    bad = [({"instruction": "x", "output": "y", "history": "not a list"}, "wrong type")]
    (examples,) = check_formatter(engine, "alpaca", tok, tmp_path, good=good, bad=bad, trained=["It is 6." + IM_END])
    text = tok.decode(examples[0]["input_ids"])
    assert text.startswith("<|im_start|>system\nYou add numbers.<|im_end|>\n<|im_start|>user\nWhat is 1 plus 1?")
    assert "<|im_start|>assistant\nIt is 2.<|im_end|>" in text


def test_alpaca_custom_columns_and_prompt(engine, plain_tok, tmp_path):
    options = {"instruction": "q", "output": "a", "history": "past", "prompt": "Q: {instruction}\nA: "}
    good = [{"q": "Capital of France?", "a": "Paris.", "past": [["Capital of Spain?", "Madrid."]]}]
    (examples,) = check_formatter(engine, "alpaca", plain_tok, tmp_path, good=good, options=options,
                                  bad=[({"q": "x"}, "missing column")], trained=["Paris." + EOS])
    assert plain_tok.decode(examples[0]["input_ids"]) == "Q: Capital of Spain?\nA: Madrid.\n\nQ: Capital of France?\nA: Paris." + EOS
    bad_template = {"prompt": "{question}"}
    check_formatter(engine, "alpaca", plain_tok, tmp_path, good=[], options=bad_template, file_name="t.jsonl",
                    bad=[({"instruction": "x", "output": "y"}, "bad template")])


# ----------------------------------------------------------------------------- chat

OPENAI = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How are you?"},
    {"role": "user", "content": [{"type": "text", "text": "Fine, "}, {"type": "text", "text": "thanks."}]},
    {"role": "assistant", "content": "Good."},
]}
SHAREGPT = {"system": "Be brief.", "conversations": [
    {"from": "human", "value": "What is the weather?"},
    {"from": "function_call", "value": '{"name": "weather"}'},
    {"from": "observation", "value": "sunny, 24 C"},
    {"from": "gpt", "value": "It is sunny."},
]}
CHAT_BAD = [
    ({"messages": [{"role": "bot", "content": "Hi"}]}, "unknown role"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}, "empty response"),
    ({"messages": [{"role": "user", "content": "Only a question"}]}, "no trainable token"),
    ({"conversation": []}, "missing column"),
    ({"messages": "hello"}, "wrong type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]},
                   {"role": "assistant", "content": "A cat."}]}, "wrong type"),
    ('{"messages": [', "invalid JSON"),
]


def test_chat_openai_and_sharegpt_layouts(engine, tok, tmp_path):
    per_row = check_formatter(engine, "chat", tok, tmp_path, good=[OPENAI, SHAREGPT], bad=CHAT_BAD, trained=[
        "Hello! How are you?" + IM_END + "Good." + IM_END,
        '{"name": "weather"}' + IM_END + "It is sunny." + IM_END,
    ])
    sharegpt = tok.decode(per_row[1][0]["input_ids"])
    assert sharegpt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is the weather?")
    assert "<|im_start|>tool\nsunny, 24 C<|im_end|>" in sharegpt


def test_chat_labels_match_the_templates_generation_marks(engine, tok, tmp_path):
    """The tiny template marks assistant text with {% generation %}: the incremental masks agree."""
    messages = [{**m, "content": m["content"] if isinstance(m["content"], str) else "Fine, thanks."}
                for m in OPENAI["messages"]]
    (examples,) = check_formatter(engine, "chat", tok, tmp_path, good=[{"messages": messages}])
    marked = tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
    assert examples[0]["input_ids"] == marked["input_ids"]
    assert [label != -100 for label in examples[0]["labels"]] == [bool(m) for m in marked["assistant_masks"]]


@pytest.mark.parametrize("template, trained", [
    ("chatml", "Hello! How are you?<|im_end|>Good.<|im_end|>"),
    ("llama-3", "Hello! How are you?<|eot_id|>Good.<|eot_id|>"),
    ("llama-2", f" Hello! How are you? {EOS} Good. {EOS}"),
    ("alpaca", f"Hello! How are you?{EOS}Good.{EOS}"),
])
def test_chat_named_templates_for_a_tokenizer_without_one(engine, plain_tok, tmp_path, template, trained):
    (examples,) = check_formatter(engine, "chat", plain_tok, tmp_path, good=[OPENAI], options={"template": template},
                                  trained=[trained])
    text = plain_tok.decode(examples[0]["input_ids"])
    assert {"chatml": "<|im_start|>user\nHi there", "llama-3": "<|start_header_id|>user<|end_header_id|>\n\nHi there",
            "llama-2": "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST]",
            "alpaca": "Be brief.\n\n### Instruction:\nHi there\n\n### Response:\n"}[template] in text


def test_chat_without_any_template_is_reported(engine, plain_tok, tmp_path):
    check_formatter(engine, "chat", plain_tok, tmp_path, good=[], bad=[(OPENAI, "no chat template")])
    check_formatter(engine, "chat", plain_tok, tmp_path, good=[], bad=[(OPENAI, "unknown template")],
                    options={"template": "vicuna-9"}, file_name="unknown.jsonl")


def test_chat_refuses_a_template_that_rewrites_earlier_turns(engine, plain_tok, tmp_path):
    template = "{% for m in messages %}{{ m['role'] }} ({{ messages|length }}): {{ m['content'] }}\n{% endfor %}"
    check_formatter(engine, "chat", plain_tok, tmp_path, good=[], bad=[(OPENAI, "template mismatch")],
                    options={"template": template})


def test_chat_train_on_options_and_message_weights(engine, tok, tmp_path):
    weighted = {"messages": [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Wrong answer.", "weight": 0},
        {"role": "user", "content": "Try again"},
        {"role": "assistant", "content": "Right answer.", "weight": 1},
    ]}
    check_formatter(engine, "chat", tok, tmp_path, good=[OPENAI, weighted], options={"train_on": "last_assistant"},
                    trained=["Good." + IM_END, "Right answer." + IM_END],
                    bad=[({"messages": [{"role": "user", "content": "x", "weight": 2}]}, "wrong type")])
    (everything,) = check_formatter(engine, "chat", tok, tmp_path, good=[OPENAI], options={"train_on": "all"},
                                    file_name="all.jsonl")
    assert everything[0]["labels"] == everything[0]["input_ids"]
    (plain,) = check_formatter(engine, "chat", tok, tmp_path, good=[weighted], file_name="weights.jsonl",
                               trained=["Right answer." + IM_END])
    assert plain


def test_chat_mapped_column_keys_and_roles(engine, tok, tmp_path):
    row = {"dialog": [{"speaker": "customer", "text": "Where is my order?"},
                      {"speaker": "agent", "text": "It ships today."}]}
    options = {"column": "dialog", "role_key": "speaker", "content_key": "text",
               "roles": {"customer": "user", "agent": "assistant"}}
    (examples,) = check_formatter(engine, "chat", tok, tmp_path, good=[row], options=options,
                                  bad=[({"dialog": [{"speaker": "boss", "text": "x"}]}, "unknown role")],
                                  trained=["It ships today." + IM_END])
    assert "<|im_start|>user\nWhere is my order?" in tok.decode(examples[0]["input_ids"])


# ----------------------------------------------------------------------------- completion

DOC = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_completion_in_every_layout(engine, tok, tmp_path, layout):
    good = [{"text": "Water boils at 100 degrees."}, {"text": "The library opens at 8 a.m."}]
    bad = [({"text": " "}, "empty text"), ({"body": "no text column"}, "empty text" if layout in ("csv", "parquet") else "missing column")]
    check_formatter(engine, "completion", tok, tmp_path, good=good, bad=bad, layout=layout,
                    trained=[good[0]["text"] + EOS, good[1]["text"] + EOS])


def test_completion_reads_txt_lines(engine, tok, tmp_path):
    from tunery.datatools import check

    path = tmp_path / "notes.txt"
    path.write_text("First line of text.\n\nSecond line.\n")
    result = check(engine, "completion", [str(path)])
    assert [tok.decode(ex["input_ids"]) for ex in result.examples] == ["First line of text." + EOS, "Second line." + EOS]
    assert not result.problems and result.rows == 2


@pytest.mark.parametrize("stride", [0, 5])
def test_completion_windows_lose_no_token(engine, tok, tmp_path, stride):
    """Every token of a long text is predicted exactly once across the windows."""
    (windows,) = check_formatter(engine, "completion", tok, tmp_path, good=[{"text": DOC}], max_length=32,
                                 options={"stride": stride})
    ids = tok(DOC, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(windows) > 2 and all(len(w["input_ids"]) <= 32 for w in windows)
    predicted = []
    for w in windows:
        predicted += [label for label in w["labels"][1:] if label != -100]  # position 0 is only context
    assert predicted == ids[1:]


# ----------------------------------------------------------------------------- classification


@pytest.fixture(scope="module")
def wordpiece():
    from tunery.testing.tiny import build_wordpiece_tokenizer

    return build_wordpiece_tokenizer(None)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_classification_pairs_with_string_labels(engine, wordpiece, tmp_path, layout):
    good = [{"premise": "The cat sleeps.", "hypothesis": "An animal rests.", "label": "entailment"},
            {"premise": "The cat sleeps.", "hypothesis": "The cat runs.", "label": "contradiction"}]
    bad = [({"premise": "x", "hypothesis": "y"}, "missing column"),
           ({"premise": "x", "label": "entailment"}, "empty text" if layout in ("csv", "parquet") else "missing column")]
    per_row = check_formatter(engine, "classification", wordpiece, tmp_path, good=good, bad=bad, layout=layout,
                              options={"text": "premise", "text_pair": "hypothesis"})
    assert [r[0]["labels"] for r in per_row] == [1, 0]  # contradiction, entailment: sorted names
    assert wordpiece.decode(per_row[0][0]["input_ids"]) == "[CLS] the cat sleeps. [SEP] an animal rests. [SEP]"


def test_classification_integer_labels_sort_numerically(engine, wordpiece, tmp_path):
    good = [{"text": f"review {i}", "label": n} for i, n in enumerate([10, 2, 1])]
    per_row = check_formatter(engine, "classification", wordpiece, tmp_path, good=good,
                              bad=[({"text": "x", "label": [1]}, "wrong type"), ({"text": "x", "label": 1.5}, "wrong type")])
    assert [r[0]["labels"] for r in per_row] == [2, 1, 0]  # names 1, 2, 10
    check_formatter(engine, "classification", wordpiece, tmp_path, good=[{"text": "ok", "label": "pos"}],
                    options={"labels": ["neg", "pos"]}, bad=[({"text": "x", "label": "meh"}, "unknown label")],
                    file_name="fixed.jsonl")


# ----------------------------------------------------------------------------- multitask

MULTITASK = {"tasks": [
    {"name": "qa", "files": ["qa*.jsonl"], "format": "alpaca", "template": {"instruction": "Answer: {instruction}"}},
    {"name": "talk", "files": ["chat*.jsonl"], "format": {"name": "chat", "train_on": "last_assistant"}},
]}


def test_multitask_formats_each_file_with_its_task(engine, tok, tmp_path):
    good = [{"instruction": "Capital of France?", "output": "Paris."}]
    (examples,) = check_formatter(engine, "multitask", tok, tmp_path, good=good, options=MULTITASK,
                                  file_name="qa_train.jsonl", trained=["Paris." + IM_END],
                                  bad=[({"instruction": "x"}, "missing column"), ({"output": "y"}, "missing column")])
    assert examples[0]["_task"] == "qa"
    assert "<|im_start|>user\nAnswer: Capital of France?<|im_end|>" in tok.decode(examples[0]["input_ids"])
    (talk,) = check_formatter(engine, "multitask", tok, tmp_path, good=[OPENAI], options=MULTITASK,
                              file_name="chat.jsonl", trained=["Good." + IM_END])
    assert talk[0]["_task"] == "talk"


def _mix(engine, tok, tmp_path, options, seed=0):
    from tunery.datatools import formatting_context, read_split
    from tunery.testing.formatters import write_rows

    write_rows(tmp_path / "qa.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(6)], "jsonl")
    write_rows(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": f"u{i}"},
                                                       {"role": "assistant", "content": f"r{i}"}]} for i in range(2)], "jsonl")
    specs = [str(tmp_path / "qa.jsonl"), str(tmp_path / "chat.jsonl")]
    run = formatting_context(engine, "multitask", options, tok, specs=specs, seed=seed)
    rows, _, _ = read_split(run, specs, "train")
    return [(r.values["_task"], r.source.line) for r in rows]


def test_multitask_mixing_is_seeded(engine, tok, tmp_path):
    concat = _mix(engine, tok, tmp_path, {**MULTITASK, "mixing": "concat"})
    assert concat == [("qa", n) for n in range(1, 7)] + [("talk", 1), ("talk", 2)]
    interleaved = _mix(engine, tok, tmp_path, {**MULTITASK, "mixing": "interleave"})
    assert interleaved[:4] == [("qa", 1), ("talk", 1), ("qa", 2), ("talk", 2)] and len(interleaved) == 8
    weighted = {**MULTITASK, "size": 400, "tasks": [{**MULTITASK["tasks"][0], "weight": 1},
                                                   {**MULTITASK["tasks"][1], "weight": 3}]}
    mixed = _mix(engine, tok, tmp_path, weighted)
    assert mixed == _mix(engine, tok, tmp_path, weighted)
    assert mixed != _mix(engine, tok, tmp_path, weighted, seed=1)
    share = sum(task == "talk" for task, _ in mixed) / len(mixed)
    assert 0.68 < share < 0.82  # weight 3 of 4


def test_multitask_refuses_unowned_files_and_unknown_formatters(engine, tok, tmp_path):
    from tunery import ConfigError

    with pytest.raises(ConfigError, match="matches no task"):
        check_formatter(engine, "multitask", tok, tmp_path, good=[{"text": "x"}], options=MULTITASK,
                        file_name="other.jsonl")
    wrong = {"tasks": [{"name": "a", "files": ["*"], "format": "alpacca"}]}
    with pytest.raises(ConfigError, match=r"format.tasks\[0\].format"):
        check_formatter(engine, "multitask", tok, tmp_path, good=[{"text": "x"}], options=wrong)
