"""Formatter ``preference``: pairs of a chosen and a rejected response to one prompt.

Four layouts are read, by what the row holds:

(a) ``prompt`` / ``chosen`` / ``rejected`` strings;
(b) ``chosen`` / ``rejected`` full transcripts sharing a prefix, no prompt column: the Anthropic
    HH layout ("\\n\\nHuman: ... \\n\\nAssistant: ...") is split into turns; other text is split at
    the longest common prefix (cut back to a word boundary);
(c) ShareGPT ``conversations`` (``from``/``value``) with ``chosen`` / ``rejected`` messages;
(d) OpenAI ``messages`` (``role``/``content``, or ``prompt`` as a message list) with ``chosen`` /
    ``rejected`` as a message, a list of messages, or a string; a full conversation in each
    (without a prompt column) has its shared turns taken as the prompt.

Conversations are rendered with the tokenizer's chat template when it has one (``template:
auto``), else as HH-style text. Each side becomes ``input_ids``/``labels`` with the loss on the
response only; ``margin`` (a number column, 0 when absent) is kept for the reward method.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Literal

from tunery import (
    IGNORE_INDEX,
    ROLES,
    Formatter,
    RowError,
    chat_prompt_response,
    content_text,
    has_chat_template,
    hookimpl,
    missing,
    note,
    prompt_response,
    text_column,
)


@dataclasses.dataclass
class PreferenceOptions:
    """Column names and rendering."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    conversations: list[str] = dataclasses.field(default_factory=lambda: ["conversations", "messages"])
    margin: str = "margin"
    system: str = "system"
    human_marker: str = "\n\nHuman:"
    assistant_marker: str = "\n\nAssistant:"
    # auto: the tokenizer's chat template when it has one; plain: text (HH-style for conversations)
    template: Literal["auto", "chat", "plain"] = "auto"


class Preference(Formatter):
    name = "preference"
    description = "preference pairs: prompt/chosen/rejected, HH transcripts, ShareGPT or OpenAI messages"
    task = "preference"
    default_truncation = "left"  # a long pair keeps its responses: the prompt is cut from the left
    Options = PreferenceOptions

    def format(self, row, tokenizer, options, run):
        for column in (options.chosen, options.rejected):
            if row.get(column) is None:
                raise missing(row, column)
        prompt, chosen, rejected = self._split(row, options)
        if chosen == rejected:
            raise RowError("identical responses", "chosen and rejected are the same text")
        example = {}
        for side, response in (("chosen", chosen), ("rejected", rejected)):
            encoded = self._encode(tokenizer, prompt, response, options)
            example[f"{side}_input_ids"], example[f"{side}_labels"] = encoded["input_ids"], encoded["labels"]
        example["margin"] = self._margin(row, options.margin)
        return example

    # ------------------------------------------------------------------ layouts -> (prompt, chosen, rejected)

    def _split(self, row, options):
        """``prompt`` is a string (plain text) or a list of messages; the responses are strings."""
        chosen, rejected = row[options.chosen], row[options.rejected]
        history = next((row[c] for c in options.conversations if row.get(c) is not None), None)
        system = text_column(row, options.system, required=False)
        if isinstance(row.get(options.prompt), list):
            history = row[options.prompt]
        if history is not None:  # (c), (d): a conversation before the two replies
            prompt = ([{"role": "system", "content": system}] if system else []) + self._messages(history, "prompt")
            return self._replies(prompt, chosen, rejected)
        if row.get(options.prompt) is not None:  # (a)
            prompt = text_column(row, options.prompt, allow_empty=True)
            if system:
                prompt = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
            return prompt, self._reply(chosen, options.chosen), self._reply(rejected, options.rejected)
        if isinstance(chosen, str) and isinstance(rejected, str):  # (b)
            if options.human_marker.strip() in chosen and options.assistant_marker.strip() in chosen:
                return self._replies([], self._hh(chosen, options), self._hh(rejected, options))
            return self._common_prefix(chosen, rejected)
        return self._replies([], chosen, rejected)  # (d) two full conversations, no prompt column

    def _replies(self, prompt, chosen_raw, rejected_raw):
        """Split two continuations of ``prompt`` after their shared turns. Where they differ
        before their last reply, the prompt is their longest common prefix that ends before an
        assistant turn, and each response is the rest of its transcript (as TRL does)."""
        chosen = self._continuation(chosen_raw, "chosen")
        rejected = self._continuation(rejected_raw, "rejected")
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        while shared > 0 and not chosen[shared]["role"] == rejected[shared]["role"] == "assistant":
            shared -= 1  # back to a turn boundary before the assistant speaks
        prompt = prompt + chosen[:shared]
        if not prompt:
            raise RowError("no shared prompt", "no prompt turn before the replies")
        if len(chosen) == len(rejected) == shared + 1:
            return prompt, self._reply(chosen[-1], "chosen"), self._reply(rejected[-1], "rejected")
        for side, messages in (("chosen", chosen), ("rejected", rejected)):
            if messages[shared]["role"] != "assistant":
                raise RowError("wrong role", f"'{side}' goes on with a {messages[shared]['role']} turn, "
                                             "not the assistant's reply")
        note("prompt taken as the longest common prefix (the transcripts differ before the last reply)")
        return prompt, chosen[shared:], rejected[shared:]

    def _continuation(self, value, side):
        if isinstance(value, str):
            return [{"role": "assistant", "content": value}]
        if isinstance(value, dict):
            return self._messages([value], side)
        if isinstance(value, list) and value:
            return self._messages(value, side)
        raise RowError("wrong type", f"'{side}' must be text, a message or a list of messages")

    @staticmethod
    def _reply(message, side):
        """The text of one assistant reply given as text, a message, or a list of one message."""
        if isinstance(message, list) and len(message) == 1:
            message = message[0]
        if isinstance(message, dict):
            message = Preference._messages([message], side)[0]
            if message["role"] != "assistant":
                raise RowError("wrong role", f"'{side}' is a {message['role']} message, not the assistant's reply")
            message = message["content"]
        if not isinstance(message, str):
            raise RowError("wrong type", f"'{side}' must be text or one assistant message")
        if not message.strip():  # a valid reply (HH-RLHF's harmless answer is silence): end-of-sequence only
            note("empty reply (trained as end-of-sequence only)")
        return message

    @staticmethod
    def _messages(value, column):
        """role/content (OpenAI) or from/value (ShareGPT) messages -> role/content, roles mapped."""
        if not isinstance(value, list) or not value:
            raise RowError("wrong type", f"'{column}' must be a non-empty list of messages")
        out = []
        for i, message in enumerate(value):
            if not isinstance(message, dict):
                raise RowError("wrong type", f"'{column}'[{i}] must be a message object")
            role = message.get("role", message.get("from"))
            if role not in ROLES:
                raise RowError("unknown role", f"'{column}'[{i}] has role {role!r}; known: {', '.join(ROLES)}")
            content = content_text(message.get("content", message.get("value")), f"'{column}'[{i}]")
            out.append({"role": ROLES[role], "content": content})
        return out

    @staticmethod
    def _hh(text, options):
        """An HH transcript -> messages."""
        human, assistant = options.human_marker.strip(), options.assistant_marker.strip()
        pattern = re.compile(r"(?:^|\n\n)(" + re.escape(human) + "|" + re.escape(assistant) + ")")
        parts = pattern.split(text)
        if parts[0].strip():
            raise RowError("bad transcript", f"text before the first '{human}' turn")
        messages = []
        for marker, content in zip(parts[1::2], parts[2::2]):
            messages.append({"role": "user" if marker == human else "assistant", "content": content.strip()})
        return messages

    @staticmethod
    def _common_prefix(chosen, rejected):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        while n > 0 and not chosen[n - 1].isspace():  # back to a word boundary
            n -= 1
        if n == 0:
            raise RowError("no shared prompt", "chosen and rejected share no prefix; add a 'prompt' column")
        if not chosen[n:].strip() or not rejected[n:].strip():
            raise RowError("empty response", "one transcript is the other's prefix: its response is empty")
        return chosen[:n], chosen[n:], rejected[n:]

    @staticmethod
    def _margin(row, column):
        value = row.get(column)
        if value is None:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RowError("wrong type", f"'{column}' must be a finite number, got {value!r}")
        return float(value)

    # ------------------------------------------------------------------ rendering

    @staticmethod
    def _encode(tokenizer, prompt, response, options):
        if options.template == "chat" and not has_chat_template(tokenizer):
            raise RowError("no chat template", "format.template=chat but the tokenizer has no chat template")
        chat = options.template == "chat" or (options.template == "auto" and has_chat_template(tokenizer))
        if isinstance(prompt, str) and chat:
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(prompt, list):
            if chat:  # prompt and reply tokenised apart: both sides share the very same prompt tokens
                return chat_prompt_response(tokenizer, prompt, response, allow_empty=True)
            prompt = Preference._plain(prompt, options)
            if isinstance(response, list):  # several turns, the first the assistant's: its marker ends the prompt
                response = Preference._plain(response, options, then_assistant=False)[len(options.assistant_marker):]
            response = " " + response.strip() if response.strip() else ""
        if tokenizer.bos_token_id is None and tokenizer.cls_token_id is not None:  # an encoder: [CLS] p [SEP] r [SEP]
            ids = list((tokenizer(prompt, response) if prompt else tokenizer(response))["input_ids"])
            n_prompt = len(tokenizer(prompt)["input_ids"]) if prompt else 1  # [CLS] prompt [SEP]
            return {"input_ids": ids, "labels": [IGNORE_INDEX] * n_prompt + ids[n_prompt:]}
        return prompt_response(tokenizer, prompt, response)

    @staticmethod
    def _plain(messages, options, then_assistant=True):
        text = ""
        for message in messages:
            if message["role"] == "system":
                text += message["content"].strip()
            else:
                marker = options.human_marker if message["role"] != "assistant" else options.assistant_marker
                text += f"{marker} {message['content'].strip()}"
        return text + (options.assistant_marker if then_assistant else "")


@hookimpl
def tunery_register_formatters(registry):
    registry.add(Preference())
