"""Formatter ``unpaired``: single responses labelled good or bad (thumbs up / down), for ``kto``.

A row holds a ``prompt`` and a ``completion`` (texts, or the prompt as a list of messages),
or a chat conversation (``messages`` / ``conversations``) whose last turn is the assistant's
response, and a boolean ``label`` (true: desirable). LLaMA-Factory's ``kto_en_demo`` layout
(messages plus a ``kto_tag`` column) is read as well. Examples are ``{"input_ids", "labels",
"label"}`` with the loss on the response only (data task ``unpaired``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import (Formatter, RowError, chat_prompt_response, has_chat_template, hookimpl, missing,
                    prompt_response, read_messages, text_column)

TRUE, FALSE = ("true", "yes", "1", "good", "desirable"), ("false", "no", "0", "bad", "undesirable")


@dataclasses.dataclass
class UnpairedOptions:
    """Column names and rendering."""

    prompt: str = "prompt"
    completion: str = "completion"
    label: list[str] = dataclasses.field(default_factory=lambda: ["label", "kto_tag"])
    conversations: list[str] = dataclasses.field(default_factory=lambda: ["messages", "conversations"])
    system: str = "system"
    template: Literal["auto", "chat", "plain"] = "auto"


def read_label(row, columns) -> int:
    column = next((c for c in columns if c in row), None)
    if column is None or row[column] is None:
        raise missing(row, columns[0]) if column is None else RowError("empty text", f"column '{column}' is empty/null")
    value = row[column]
    if isinstance(value, bool) or isinstance(value, int) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return int(value.strip().lower() in TRUE)
    raise RowError("wrong type", f"'{column}' must be true or false, got {value!r}")


class Unpaired(Formatter):
    name = "unpaired"
    description = "unpaired responses with a true/false label (KTO): prompt/completion, messages, kto_tag"
    task = "unpaired"
    Options = UnpairedOptions

    def format(self, row, tokenizer, options, run):
        label = read_label(row, options.label)
        column = next((c for c in options.conversations if row.get(c) is not None), None)
        if column is not None and row.get(options.completion) is None:
            messages = [{"role": m["role"], "content": m["content"]}
                        for m in read_messages(row, column, system_column=options.system)]
            if len(messages) < 2 or messages[-1]["role"] != "assistant":
                raise RowError("wrong role", f"'{column}' must end on the assistant's response after a prompt")
            prompt, completion = messages[:-1], messages[-1]["content"]
        else:
            completion = text_column(row, options.completion)
            if isinstance(row.get(options.prompt), list):
                prompt = [{"role": m["role"], "content": m["content"]}
                          for m in read_messages(row, options.prompt, system_column=options.system)]
            else:
                prompt = text_column(row, options.prompt)
                system = text_column(row, options.system, required=False)
                if system:
                    prompt = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        if not completion.strip():
            raise RowError("empty text", "the completion is empty")
        return {**self._encode(tokenizer, prompt, completion, options), "label": label}

    @staticmethod
    def _encode(tokenizer, prompt, completion, options):
        if options.template == "chat" and not has_chat_template(tokenizer):
            raise RowError("no chat template", "format.template=chat but the tokenizer has no chat template")
        chat = options.template == "chat" or (options.template == "auto" and has_chat_template(tokenizer))
        if chat:
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            return chat_prompt_response(tokenizer, messages, completion)
        if isinstance(prompt, list):
            prompt = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt) + "\n\nAssistant:"
            completion = " " + completion.strip()
        return prompt_response(tokenizer, prompt, completion)


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Unpaired())
