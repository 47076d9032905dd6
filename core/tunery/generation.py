"""Text generation with a (possibly adapted) causal LM."""

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
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for prompt in prompts:
            text = render_prompt(tokenizer, prompt, chat)
            enc = tokenizer(text, return_tensors="pt", add_special_tokens=not text.startswith(tokenizer.bos_token or "\0"))
            enc = {k: v.to(device) for k, v in enc.items()}
            kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, use_cache=True,
                                          pad_token_id=tokenizer.pad_token_id)
            if temperature > 0:
                torch.manual_seed(seed)
                kwargs.update(do_sample=True, temperature=temperature)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.no_grad():
                out = model.generate(**enc, **kwargs)
            new = out[0, enc["input_ids"].shape[1]:]
            outputs.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    finally:
        model.train(was_training)
    return outputs
