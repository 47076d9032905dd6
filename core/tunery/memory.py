"""What a run is expected to need in memory, shown before training starts.

A rough, documented estimate (docs/memory.md): the weights as loaded, gradients and AdamW's two
moments for the trainable parameters (float32), and the activations a batch keeps for the
backward pass (about 16 values per hidden unit per token per layer, plus the attention scores;
with gradient checkpointing, about two values per hidden unit per layer). The real peak adds
the framework itself (a few hundred MB) and allocator slack.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext

log = logging.getLogger("tunery")
GIB = 1024**3


def estimate(model: Any, batch_size: int, length: int, checkpointing: bool = False) -> dict:
    """Bytes expected for ``weights``, ``optimizer`` (gradients + AdamW moments), ``activations``
    of one batch of ``batch_size`` x ``length`` tokens, and their ``total``."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    hidden = getattr(config, "hidden_size", 0) or 0
    layers = getattr(config, "num_hidden_layers", 0) or 0
    heads = getattr(config, "num_attention_heads", 0) or 0
    size = next((p.element_size() for p in model.parameters() if p.is_floating_point()), 4)
    tokens = batch_size * length
    if checkpointing:
        activations = tokens * hidden * layers * 2 * size + tokens * hidden * 16 * size
    else:
        activations = tokens * hidden * layers * 16 * size + batch_size * heads * length * length * layers * size
    optimizer = trainable * 4 * 3
    return {"weights": weights, "optimizer": optimizer, "activations": activations,
            "total": weights + optimizer + activations}


def available() -> tuple[int | None, str]:
    """Free memory of the device training runs on: (bytes or None, its name)."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, "GPU memory free"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024, "RAM available"
    except (OSError, KeyError, ValueError):
        return None, ""


def report(run: RunContext, model: Any, rows: list[dict]) -> dict:
    """Log the estimate for this run's batches (warning, with what to change, when it exceeds
    the free memory); returns the estimate in GiB."""
    t, data = run.config.training, run.config.data
    from .datastore import lengths

    longest = max(lengths(rows), default=0)
    length = min(data.max_length, longest) or data.max_length
    if run.data_task == "preference":
        length *= 2  # chosen and rejected go through together
    parts = estimate(model, t.batch_size, length, t.gradient_checkpointing)
    gib = {k: round(v / GIB, 2) for k, v in parts.items()}
    line = (f"expected memory: ~{gib['total']:.1f} GiB (weights {gib['weights']:.2f} + gradients and optimizer "
            f"{gib['optimizer']:.2f} + activations {gib['activations']:.2f} for batches of {t.batch_size} x "
            f"{length} tokens)")
    free, what = available()
    if free is not None and parts["total"] > free:
        log.warning("%s, more than the %.1f GiB %s: lower training.batch_size (raise training.grad_accum to keep "
                    "the same batch), lower data.max_length, or set training.gradient_checkpointing=true",
                    line, free / GIB, what)
    else:
        log.info("%s%s", line, f"; {free / GIB:.1f} GiB {what}" if free is not None else "")
    return gib


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, in GiB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)
