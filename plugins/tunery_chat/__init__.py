"""Formatter ``chat``: conversations (OpenAI ``messages`` or ShareGPT ``conversations``) rendered
with a chat template; the loss falls on the assistant's turns (or as chosen)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import Formatter, hookimpl


@dataclasses.dataclass
class ChatOptions:
    """Where the conversation is, how its roles are named, and which tokens are learned."""

    column: str | None = None  # default: "messages", else "conversations"
    role_key: str | None = None  # default per message: "role" (OpenAI) or "from" (ShareGPT)
    content_key: str | None = None  # default: "content" with "role", "value" with "from"
    roles: dict = dataclasses.field(default_factory=dict)  # extra role names, e.g. {bot: assistant}
    system: str | None = "system"  # a column holding the system prompt (ShareGPT style)
    weight_key: str = "weight"  # per-message 0/1 loss weight, when present
    # assistant: every assistant turn; last_assistant: the final one; all: every token
    train_on: Literal["assistant", "last_assistant", "all"] = "assistant"
    # None: the tokenizer's chat template; or chatml, llama-2, llama-3, alpaca; or a Jinja template
    template: str | None = None
    # a column of function schemas (OpenAI ``tools``, or glaive / ShareGPT's JSON text), given to the template
    tools: str | None = "tools"


class Chat(Formatter):
    name = "chat"
    description = "OpenAI messages / ShareGPT conversations with a chat template, loss on assistant turns"
    task = "causal_lm"
    Options = ChatOptions

    def format(self, row, tokenizer, options, run):
        from tunery import read_messages, read_tools, render, trained_messages

        messages = read_messages(row, options.column, roles=options.roles, role_key=options.role_key,
                                 content_key=options.content_key, weight_key=options.weight_key,
                                 system_column=options.system)
        trained = trained_messages(messages, options.train_on)
        return render(tokenizer, messages, trained, options.template, every_token=options.train_on == "all",
                      tools=read_tools(row, options.tools))


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Chat())
