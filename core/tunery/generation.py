"""Text generation with a (possibly adapted) causal LM or encoder-decoder (seq2seq) model."""

from __future__ import annotations

from typing import Any


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


def generate(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int = 64,
             chat: bool | None = None, temperature: float = 0.0, seed: int = 0) -> list[str]:
    """The completion of each prompt (greedy when ``temperature`` is 0). Uses the KV cache,
    which prompt-learning methods such as prefix tuning need."""
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for prompt in prompts:
            text = render_prompt(tokenizer, prompt, chat)
            ids = tokenizer(text, add_special_tokens=not text.startswith(tokenizer.bos_token or "\0"))["input_ids"]
            outputs.append(complete(model, tokenizer, ids, max_new_tokens=max_new_tokens,
                                    temperature=temperature, seed=seed))
    finally:
        model.train(was_training)
    return outputs


def complete(model: Any, tokenizer: Any, prompt_ids: list[int], *, max_new_tokens: int = 64,
             temperature: float = 0.0, seed: int = 0, **decoding: Any) -> str:
    """The decoded continuation of the token ids ``prompt_ids`` (greedy when ``temperature`` is
    0, sampled otherwise); ``decoding`` adds ``generate`` settings such as ``num_beams``."""
    import torch

    device = next(model.parameters()).device
    input_ids = torch.tensor([list(prompt_ids)], device=device)
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, use_cache=True, pad_token_id=tokenizer.pad_token_id,
                                  attention_mask=torch.ones_like(input_ids))
    if temperature > 0:
        torch.manual_seed(seed)
        kwargs.update(do_sample=True, temperature=temperature)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    kwargs.update(decoding)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, **kwargs)
    encoder_decoder = getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    start = 0 if encoder_decoder else input_ids.shape[1]  # a decoder's output is all new
    return tokenizer.decode(out[0, start:], skip_special_tokens=True).strip()
