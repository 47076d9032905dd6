"""Quantizer ``bnb-8bit``: LLM.int8() base weights through bitsandbytes.

Works on CUDA (bitsandbytes >= 0.45, compute capability 7.5+: Turing or newer) and on CPU
(bitsandbytes >= 0.48). Outlier features above ``threshold`` are computed in 16 bits.
"""

from __future__ import annotations

import dataclasses

from tunery import BnbQuantizer, ConfigError, hookimpl


@dataclasses.dataclass
class Bnb8bitOptions:
    """8-bit settings (see transformers.BitsAndBytesConfig)."""

    threshold: float = 6.0  # LLM.int8() outlier threshold
    gradient_checkpointing: bool = True

    def validate(self, where):
        if self.threshold < 0:
            raise ConfigError(f"config key '{where}.threshold' must be 0 or more, got {self.threshold}")


class Bnb8bit(BnbQuantizer):
    name = "bnb-8bit"
    description = "8-bit LLM.int8() base weights via bitsandbytes; CUDA, or CPU with bitsandbytes >= 0.48"
    Options = Bnb8bitOptions
    min_versions = {"cuda": "0.45.0", "cpu": "0.48.0"}
    min_capability = (7, 5)

    def bnb_config(self, options, keep_modules, run):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=options.threshold,
                                  llm_int8_skip_modules=keep_modules)

    def probe(self, bnb, device, options):
        import torch

        bnb.functional.int8_vectorwise_quant(torch.randn(64, 64, device=device, dtype=torch.float16))


@hookimpl
def tunery_register_quantizers(registry):
    registry.add(Bnb8bit())
