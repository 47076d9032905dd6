"""Formatter ``prompts``: prompt-only data for the online objectives (``grpo``, ``rloo``).

A row holds a ``prompt`` (text) or a chat conversation (``messages`` / ``conversations``,
OpenAI or ShareGPT layout) that ends on a user turn; every other column (a reference answer,
test cases, ...) is kept and passed by name to the reward functions. The prompt is rendered
with the tokenizer's chat template when it has one (``template: auto``) and ends where the
model's reply begins. Examples are ``{"input_ids", "_prompt", "_columns"}`` (data task
``prompts``): nothing is trained on the prompt itself.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import Formatter, RowError, bos_ids, encode, has_chat_template, hookimpl, read_messages, text_column


@dataclasses.dataclass
class PromptsOptions:
    """Column names and rendering."""

    prompt: str = "prompt"
    conversations: list[str] = dataclasses.field(default_factory=lambda: ["messages", "conversations"])
    system: str = "system"
    # auto: the tokenizer's chat template when it has one; plain: the prompt text as is
    template: Literal["auto", "chat", "plain"] = "auto"


class Prompts(Formatter):
    name = "prompts"
    description = "prompts for online RL (grpo, rloo): a prompt column or chat messages ending on a user turn"
    task = "prompts"
    Options = PromptsOptions

    def format(self, row, tokenizer, options, run):
        column = next((c for c in options.conversations if row.get(c) is not None), None)
        if isinstance(row.get(options.prompt), list):
            column = options.prompt
        if column is not None:
            messages = [{"role": m["role"], "content": m["content"]}
                        for m in read_messages(row, column, system_column=options.system)]
            if messages[-1]["role"] != "user":
                raise RowError("wrong role", f"'{column}' ends on a {messages[-1]['role']} turn; a prompt must "
                                             "end on the user's turn (the model replies to it)")
            prompt = messages
        else:
            prompt = text_column(row, options.prompt)
            system = text_column(row, options.system, required=False)
            if system:
                prompt = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        used = {options.prompt, options.system, *options.conversations}
        return {"input_ids": self._ids(tokenizer, prompt, options), "_prompt": prompt,
                "_columns": {k: v for k, v in row.items() if k not in used}}

    @staticmethod
    def _ids(tokenizer, prompt, options):
        if options.template == "chat" and not has_chat_template(tokenizer):
            raise RowError("no chat template", "format.template=chat but the tokenizer has no chat template")
        chat = options.template == "chat" or (options.template == "auto" and has_chat_template(tokenizer))
        if chat:
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            return encode(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        if isinstance(prompt, list):
            prompt = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt) + "\n\nAssistant:"
        ids = bos_ids(tokenizer) + encode(tokenizer, prompt)
        if not ids:
            raise RowError("empty text", "the prompt has no tokens")
        return ids


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Prompts())
