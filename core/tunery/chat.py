"""Conversations: reading OpenAI / ShareGPT message lists, named chat templates, and rendering a
conversation to tokens with the loss on exactly the chosen messages.

The loss mask comes from *incremental rendering*: the conversation is rendered once in full and
once per message up to that message, so each message's character span in the full text is
known whatever the template looks like (no ``{% generation %}`` marks needed); the full text is
tokenised once and a token is trained when it overlaps a trained span. A template that renders
earlier turns differently once later turns follow cannot be masked this way and is refused.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from .collate import IGNORE_INDEX
from .errors import RowError
from .text import missing

#: Role names of OpenAI messages and ShareGPT conversations, mapped to chat-template roles.
ROLES = {
    "system": "system", "user": "user", "assistant": "assistant", "tool": "tool",
    "human": "user", "gpt": "assistant", "observation": "tool", "function_call": "assistant",
    "function": "tool",
}

_RAISE_OTHER = "{% else %}{{ raise_exception('this template has no role ' + message['role']) }}{% endif %}"

#: Well-known chat templates, for tokenizers that bring none (``format.template: NAME``).
TEMPLATES = {
    # chatml renders function schemas (``tools``) and calls (``tool_calls``) as Qwen2.5 / Hermes do
    "chatml": (
        "{% set ns = namespace(skip=false) %}"
        "{% if tools %}{{ '<|im_start|>system\\n' }}"
        "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}"
        "{% set ns.skip = true %}{% endif %}"
        "{{ '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'"
        " + 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
        "{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
        "{{ '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '"
        " + 'within <tool_call></tool_call> XML tags.<|im_end|>\\n' }}{% endif %}"
        "{% for message in messages %}{% if not (loop.first and ns.skip) %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
        "{% for call in message.get('tool_calls') or [] %}"
        "{% set call = call['function'] if call['function'] is defined else call %}"
        "{% if message['content'] or not loop.first %}{{ '\\n' }}{% endif %}"
        "{{ '<tool_call>\\n{\"name\": ' + (call['name'] | tojson) + ', \"arguments\": ' + (call['arguments'] "
        "if call['arguments'] is string else (call['arguments'] | tojson)) + '}\\n</tool_call>' }}"
        "{% endfor %}{{ '<|im_end|>' + '\\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama-3": (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "llama-2": (
        "{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
        "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
        "{% for message in messages %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' }}"
        "{% if loop.first and system %}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}"
        "{{ message['content'] | trim + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}"
        + _RAISE_OTHER + "{% endfor %}"
    ),
    "alpaca": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + '\\n\\n' }}"
        + _RAISE_OTHER + "{% endfor %}"
    ),
}


def resolve_template(tokenizer: Any, template: str | None) -> str:
    """The Jinja template to render with: a named one, a literal one, or the tokenizer's own."""
    if template in TEMPLATES:
        return TEMPLATES[template]
    if template and ("{%" in template or "{{" in template):
        return template
    if template:
        raise RowError("unknown template", f"format.template '{template}' is not one of {', '.join(TEMPLATES)} "
                                           "(or a Jinja template)")
    own = getattr(tokenizer, "chat_template", None)
    if not own:
        raise RowError("no chat template", f"the tokenizer has no chat template; set format.template to one of "
                                           f"{', '.join(TEMPLATES)}")
    return own


def content_text(content: Any, where: str) -> str:
    """Text of a message's content: a string, or a list of text parts (``{"type": "text", "text"}``
    or plain strings)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                out.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise RowError("wrong type", f"{where}: only text content parts are supported, got {kind!r}")
        return "".join(out)
    raise RowError("wrong type", f"{where}: content must be text or a list of text parts, got {type(content).__name__}")


def read_messages(row: Mapping[str, Any], column: str | None = None, *, roles: Mapping[str, str] | None = None,
                  role_key: str | None = None, content_key: str | None = None, weight_key: str = "weight",
                  system_column: str | None = "system") -> list[dict]:
    """Messages of ``row`` as ``[{"role", "content", "weight"}]`` (weight ``None`` when absent).

    ``column`` defaults to ``messages`` (OpenAI layout) or else ``conversations`` (ShareGPT);
    keys default per message to role/content or from/value. ``roles`` maps the data's role names
    to template roles (added to :data:`ROLES`). A string in ``row[system_column]`` becomes the
    system message when the conversation has none."""
    if column is None:
        column = next((c for c in ("messages", "conversations") if c in row), "messages")
    if column not in row or row[column] is None:
        raise missing(row, column)
    raw = row[column]
    if not isinstance(raw, list):
        raise RowError("wrong type", f"'{column}' must be a list of messages, got {type(raw).__name__}")
    if not raw:
        raise RowError("empty conversation", f"'{column}' holds no message")
    mapping = {**ROLES, **(roles or {})}
    messages = []
    for n, message in enumerate(raw, 1):
        where = f"{column}[{n}]"
        if not isinstance(message, Mapping):
            raise RowError("wrong type", f"{where} must be an object, got {type(message).__name__}")
        rkey = role_key or ("role" if "role" in message else "from")
        ckey = content_key or ("content" if rkey == "role" else "value")
        if rkey not in message:
            raise RowError("missing column", f"{where} has no '{rkey}'")
        name = message[rkey]
        if not isinstance(name, str) or name not in mapping:
            raise RowError("unknown role", f"{where}: role {name!r} is not one of {', '.join(sorted(mapping))}; "
                                           "map it with format.roles")
        weight = message.get(weight_key)
        if weight is not None and (weight not in (0, 1) or isinstance(weight, float) and not weight.is_integer()):
            raise RowError("wrong type", f"{where}: '{weight_key}' must be 0 or 1, got {weight!r}")
        item = {"role": mapping[name], "content": content_text(message.get(ckey), where),
                "weight": None if weight is None else int(weight)}
        calls = message.get("tool_calls")
        if calls:  # OpenAI function calls of an assistant message, rendered by the template
            if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
                raise RowError("wrong type", f"{where}: 'tool_calls' must be a list of objects")
            item["tool_calls"] = [dict(c) for c in calls]
        messages.append(item)
    system = row.get(system_column) if system_column else None
    if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system, "weight": None})
    return messages


def read_tools(row: Mapping[str, Any], column: str | None) -> list[dict] | None:
    """The function schemas in ``row[column]`` (a list of objects, or that list as a JSON string as
    in glaive / ShareGPT tool-use data), or None when the row has none."""
    raw = row.get(column) if column else None
    if isinstance(raw, str):
        if not raw.strip():
            return None
        try:
            raw = json.loads(raw)
        except ValueError:
            raise RowError("wrong type", f"'{column}' must be a list of function schemas (or that list as "
                                         "JSON text); its text is not JSON") from None
    if raw is None or raw == []:
        return None
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(t, Mapping) for t in raw):
        raise RowError("wrong type", f"'{column}' must be a list of function schemas (objects)")
    return [dict(t) for t in raw]


def trained_messages(messages: list[dict], train_on: str) -> list[bool]:
    """Which messages carry the loss: ``assistant`` (every assistant turn), ``last_assistant`` or
    ``all`` (every token); a message's own ``weight`` (0/1) overrides the choice."""
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "all":
        chosen = [True] * len(messages)
    elif train_on == "last_assistant":
        chosen = [i == assistant[-1] if assistant else False for i in range(len(messages))]
    else:
        chosen = [m["role"] == "assistant" for m in messages]
    return [bool(m["weight"]) if m["weight"] is not None else c for m, c in zip(messages, chosen)]


def render(tokenizer: Any, messages: list[dict], trained: list[bool], template: str | None = None,
           *, every_token: bool = False, tools: list[dict] | None = None) -> dict:
    """``{"input_ids", "labels"}`` of ``messages`` rendered with ``template`` (see
    :func:`resolve_template`), with labels only on the tokens of trained messages (their
    end-of-turn token included), or on every token when ``every_token``. ``tools`` (function
    schemas) and messages' ``tool_calls`` go to the template; one that does not render them is
    refused, never ignored."""
    from jinja2 import TemplateError

    chat_template = resolve_template(tokenizer, template)
    plain = [{k: v for k, v in m.items() if k != "weight"} for m in messages]

    def text(upto: int, prompt: bool = False, convo: list[dict] = plain, schemas=tools) -> str:
        if upto == 0:
            return ""
        return tokenizer.apply_chat_template(convo[:upto], chat_template=chat_template, tokenize=False,
                                             add_generation_prompt=prompt, tools=schemas or None)

    for i, (message, on) in enumerate(zip(messages, trained)):
        if on and message["role"] == "assistant" and not message["content"].strip() and not message.get("tool_calls"):
            raise RowError("empty response", f"message {i + 1} (assistant) is empty")

    def span(i: int) -> tuple[int, int]:
        opening, upto = text(i, prompt=plain[i]["role"] == "assistant"), text(i + 1)
        if not (full.startswith(upto) and upto.startswith(opening)):
            raise RowError("template mismatch", "the chat template renders earlier turns differently once later "
                                                "turns follow, so the loss cannot be placed; set format.template")
        return len(opening), len(upto.rstrip())

    try:
        full = text(len(plain))
        if tools and text(len(plain), schemas=None) == full:
            raise RowError("tools not rendered", "the chat template ignores the row's tools (function schemas); "
                                                 "use a template that renders them (format.template=chatml does)")
        if any("tool_calls" in m for m in plain) and full == text(
                len(plain), convo=[{k: v for k, v in m.items() if k != "tool_calls"} for m in plain]):
            raise RowError("tools not rendered", "the chat template ignores the messages' tool_calls; "
                                                 "use a template that renders them (format.template=chatml does)")
        spans = [(0, len(full))] if every_token else [span(i) for i, on in enumerate(trained) if on]
    except TemplateError as exc:
        raise RowError("template error", f"the chat template refused this conversation: {exc}") from None
    ids, offsets = _tokenize(tokenizer, full, spans)
    labels = [tok if any(_overlaps(o, s) for s in spans) else IGNORE_INDEX for tok, o in zip(ids, offsets)]
    return {"input_ids": ids, "labels": labels}


def _overlaps(offset: tuple[int, int], span: tuple[int, int]) -> bool:
    a, b = offset
    s, e = span
    return s <= a < e if a == b else a < e and b > s


def _tokenize(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` and each token's character range. Fast tokenizers report offsets;
    for others the text is cut at the span edges and each piece tokenised on its own."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    cuts = sorted({0, len(text), *(p for s in spans for p in s)})
    ids, offsets = [], []
    for a, b in zip(cuts, cuts[1:]):
        piece = tokenizer(text[a:b], add_special_tokens=False)["input_ids"]
        ids += piece
        offsets += [(a, b)] * len(piece)
    return ids, offsets
