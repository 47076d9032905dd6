"""Text generation with a (possibly adapted) causal LM or encoder-decoder (seq2seq) model: batched, with decoding constraints and
control codes.

Prompts are generated in batches, left-padded (the pad sits before the prompt, so every row's
continuation starts at the same position); greedy outputs are the ones each prompt gets alone.
Decoding constraints (:class:`tunery.Constraint` plugins, family ``constraints``) add
``transformers`` logits processors and stopping criteria; control codes (``data.control``)
put attribute tags such as ``<sentiment=positive>`` in front of the prompt tokens, exactly as
training put them in front of each example.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

#: Prompts generated together (one ``model.generate`` call) unless told otherwise.
BATCH_SIZE = 16


@dataclasses.dataclass
class ActiveConstraint:
    """A constraint member with its validated options, as used for one generation."""

    member: Any
    options: Any

    @property
    def name(self) -> str:
        return self.member.name

    def satisfied(self, text: str) -> bool | None:
        return self.member.satisfied(text, self.options)


def resolve_constraints(registry: Any, specs: Iterable[Any], where: str) -> list[ActiveConstraint]:
    """Constraints from specs: ``"NAME:ARG"`` / ``"NAME"`` strings (the ``--constraint`` form),
    mappings ``{"name": NAME, option: value, ...}``, or already resolved ones."""
    from .errors import ConfigError

    active = []
    for i, spec in enumerate(specs or ()):
        here = f"{where}[{i}]"
        if isinstance(spec, ActiveConstraint):
            active.append(spec)
            continue
        if isinstance(spec, str):
            name, _, arg = spec.partition(":")
            member = _member(registry, name.strip(), here)
            raw = member.from_argument(arg, here) if arg else {}
        elif isinstance(spec, Mapping):
            if "name" not in spec:
                raise ConfigError(f"config key '{here}' needs a 'name' (one of: {', '.join(registry.names())})")
            member = _member(registry, str(spec["name"]), here)
            raw = {k: v for k, v in spec.items() if k != "name"}
        else:
            raise ConfigError(f"config key '{here}' must be 'NAME:ARG' or a mapping with a name, got {spec!r}")
        active.append(ActiveConstraint(member, member.parse_options(raw, f"{here}.{member.name}")))
    return active


def _member(registry: Any, name: str, where: str) -> Any:
    from .errors import ConfigError, PluginError

    try:
        return registry.get(name)
    except PluginError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# ----------------------------------------------------------------------------- control codes


def control_text(values: Mapping[str, Any]) -> str:
    """The tags for attribute values, in the given order: ``<sentiment=positive><style=formal>``."""
    return "".join(f"<{key}={value}>" for key, value in values.items())


def control_ids(tokenizer: Any, values: Mapping[str, Any]) -> list[int]:
    """The token ids of the control tags (tokenised on their own, so always the same)."""
    return tokenizer(control_text(values), add_special_tokens=False)["input_ids"]


def control_start(tokenizer: Any, ids: list[int]) -> int:
    """Where control tags go in ``ids``: after a leading BOS token, else first."""
    return 1 if ids and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id else 0


def with_control(tokenizer: Any, ids: list[int], values: Mapping[str, Any] | None) -> list[int]:
    """``ids`` with the control tags' tokens put first (after a leading BOS token, if any), as
    ``data.control`` put them in front of each training example."""
    if not values:
        return list(ids)
    start = control_start(tokenizer, ids)
    return [*ids[:start], *control_ids(tokenizer, values), *ids[start:]]


# ----------------------------------------------------------------------------- generation


def render_prompt(tokenizer: Any, prompt: str, chat: bool | None) -> str:
    """``prompt`` as the model should see it: through the chat template when asked for, or when
    ``chat`` is None and the tokenizer has one."""
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    if not use_chat:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        from .errors import ConfigError

        raise ConfigError("--chat needs a tokenizer with a chat template; this one has none")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def prompt_ids(tokenizer: Any, prompt: str, chat: bool | None = None, control: Mapping[str, Any] | None = None) -> list[int]:
    """The token ids the model is given for ``prompt`` (chat template, control tags)."""
    text = render_prompt(tokenizer, prompt, chat)
    ids = tokenizer(text, add_special_tokens=not text.startswith(tokenizer.bos_token or "\0"))["input_ids"]
    return with_control(tokenizer, ids, control)


def generate(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int = 64,
             chat: bool | None = None, temperature: float = 0.0, seed: int = 0,
             constraints: Iterable[ActiveConstraint] = (), control: Mapping[str, Any] | None = None,
             batch_size: int = BATCH_SIZE, **decoding: Any) -> list[str]:
    """The completion of each prompt (greedy when ``temperature`` is 0), generated in batches of
    ``batch_size``; ``control`` gives attribute values for control tags (``{"sentiment": "positive"}``)."""
    ids = [prompt_ids(tokenizer, p, chat, control) for p in prompts]
    return complete_batch(model, tokenizer, ids, max_new_tokens=max_new_tokens, temperature=temperature,
                          seed=seed, constraints=constraints, batch_size=batch_size, **decoding)


def complete(model: Any, tokenizer: Any, prompt_ids: list[int], **options: Any) -> str:
    """The decoded continuation of the token ids ``prompt_ids`` (see :func:`complete_batch`)."""
    return complete_batch(model, tokenizer, [prompt_ids], **options)[0]


def complete_batch(model: Any, tokenizer: Any, prompts_ids: list[list[int]], *, max_new_tokens: int = 64,
                   temperature: float = 0.0, seed: int = 0, constraints: Iterable[ActiveConstraint] = (),
                   batch_size: int = BATCH_SIZE, **decoding: Any) -> list[str]:
    """The decoded continuation of each prompt (token ids), greedy when ``temperature`` is 0 and
    sampled otherwise; ``decoding`` adds ``generate`` settings such as ``num_beams``. Prompts
    of similar length are batched together (left padding); outputs keep the input order.
    Uses the KV cache, which prompt-learning methods such as prefix tuning need."""
    import torch

    constraints = list(constraints)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, use_cache=True, pad_token_id=pad)
    if temperature > 0:
        torch.manual_seed(seed)
        kwargs.update(do_sample=True, temperature=temperature)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    for c in constraints:
        kwargs.update(c.member.generate_kwargs(c.options))
    kwargs.update(decoding)
    vocab_size = _vocab_size(model, tokenizer) if constraints else 0
    order = sorted(range(len(prompts_ids)), key=lambda i: len(prompts_ids[i]))
    outputs: list[str] = [""] * len(prompts_ids)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            rows = [list(prompts_ids[i]) for i in chunk]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            from transformers import LogitsProcessorList, StoppingCriteriaList

            processors = LogitsProcessorList(p for c in constraints
                                             for p in c.member.logits_processors(c.options, tokenizer, vocab_size,
                                                                                       kwargs["max_new_tokens"]))
            stopping = StoppingCriteriaList(s for c in constraints for s in c.member.stopping_criteria(c.options, tokenizer))
            with torch.no_grad():
                out = model.generate(input_ids=input_ids, attention_mask=mask, logits_processor=processors,
                                     stopping_criteria=stopping, **kwargs)
            new = 0 if getattr(getattr(model, "config", None), "is_encoder_decoder", False) else width
            for row, i in enumerate(chunk):  # a decoder's output is all new; a causal LM's follows the prompt
                text = tokenizer.decode(out[row, new:], skip_special_tokens=True)
                for c in constraints:
                    text = c.member.finish(text, c.options)
                outputs[i] = text.strip()
    finally:
        model.train(was_training)
    return outputs


def _vocab_size(model: Any, tokenizer: Any) -> int:
    """The width of the model's logits (may exceed the tokenizer's vocabulary)."""
    head = model.get_output_embeddings()
    return head.weight.shape[0] if head is not None else len(tokenizer)


def for_inference(model: Any, method: Any, options: Any, quantized: bool) -> Any:
    """A freshly loaded run model made fast for generation: the method's tuning merged into the
    base weights in memory when the method can merge and the base is not quantized (saved files
    are not touched); otherwise ``model`` as it is."""
    if not method.can_merge or quantized:
        return model
    merged = method.merge(model, options)
    merged.eval()
    return merged


def satisfaction(constraints: Iterable[ActiveConstraint], outputs: list[str]) -> dict[str, float]:
    """Share of ``outputs`` that satisfy each constraint that can be checked on text
    (``constraint/<name>``), and of those satisfying all of them (``constraint/all``)."""
    constraints = list(constraints)
    metrics: dict[str, float] = {}
    if not outputs:
        return metrics
    per_output = [[c.satisfied(o) for c in constraints] for o in outputs]
    names = [c.name if [d.name for d in constraints].count(c.name) == 1 else f"{c.name}{j}" for j, c in enumerate(constraints)]
    for j, name in enumerate(names):
        values = [row[j] for row in per_output if row[j] is not None]
        if values:
            metrics[f"constraint/{name}"] = sum(values) / len(values)
    if metrics:
        metrics["constraint/all"] = sum(all(v is not False for v in row) for row in per_output) / len(outputs)
    return metrics
