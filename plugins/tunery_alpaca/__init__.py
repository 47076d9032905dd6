"""Formatter ``alpaca``: instruction / input / output rows; the loss falls on the output only."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import (Formatter, RowError, chat_prompt_response, has_chat_template, hookimpl, prompt_response_batch,
                    text_column)

PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
PROMPT_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


@dataclasses.dataclass
class AlpacaOptions:
    """Column names and how the prompt is rendered."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    system: str = "system"
    history: str = "history"
    # auto: the tokenizer's chat template when it has one, else the Alpaca text template
    template: Literal["auto", "alpaca", "chat"] = "auto"
    prompt: str = PROMPT
    prompt_with_input: str = PROMPT_WITH_INPUT


class Alpaca(Formatter):
    name = "alpaca"
    description = "instruction/input/output rows (optional system and history), prompt masked"
    task = "causal_lm"
    Options = AlpacaOptions

    def format_batch(self, rows, tokenizer, options, run):
        has_template = has_chat_template(tokenizer)
        use_chat = options.template == "chat" or (options.template == "auto" and has_template)
        out, prompts, outputs, where = [], [], [], []
        for row in rows:  # each row's prompt (or its error); the text prompts are tokenized together
            try:
                instruction, extra, output, system, history = self._fields(row, options)
                if use_chat:
                    if not has_template:
                        raise RowError("no chat template", "format.template=chat but the tokenizer has no chat template")
                    out.append(chat_prompt_response(tokenizer, self._messages(instruction, extra, system, history),
                                                    output))
                    continue
                prompt = self._prompt(instruction, extra, system, history, options)
            except RowError as exc:
                out.append(exc)
                continue
            where.append(len(out))
            out.append(None)
            prompts.append(prompt)
            outputs.append(output)
        for at, example in zip(where, prompt_response_batch(tokenizer, prompts, outputs)):
            out[at] = example
        return out

    def _fields(self, row, options):
        return (text_column(row, options.instruction), text_column(row, options.input, required=False),
                text_column(row, options.output), text_column(row, options.system, required=False),
                self._history(row, options.history))

    @staticmethod
    def _messages(instruction, extra, system, history):
        messages = [{"role": "system", "content": system}] if system else []
        for user, assistant in history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction})
        return messages

    @staticmethod
    def _prompt(instruction, extra, system, history, options):
        prompt = system + "\n\n" if system else ""
        template = options.prompt_with_input if extra else options.prompt
        try:
            for user, assistant in history:
                prompt += options.prompt.format(instruction=user, input="") + assistant + "\n\n"
            return prompt + template.format(instruction=instruction, input=extra)
        except (KeyError, IndexError) as exc:
            raise RowError("bad template", f"format.prompt uses an unknown field {exc}") from None

    @staticmethod
    def _history(row, column):
        history = row.get(column)
        if history in (None, "", []):
            return []
        if not isinstance(history, list) or not all(
            isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)
            for turn in history
        ):
            raise RowError("wrong type", f"'{column}' must be a list of [instruction, response] pairs")
        return [tuple(turn) for turn in history]


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Alpaca())
