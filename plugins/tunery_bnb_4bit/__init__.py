"""Quantizer ``bnb-4bit``: 4-bit base weights (NF4 or FP4) through bitsandbytes; with an
adapter method such as ``lora`` this is QLoRA.

Works on CUDA (bitsandbytes >= 0.45, compute capability 5.0+) and on CPU (bitsandbytes >= 0.48).

CPUs with AVX512-BF16: bitsandbytes repacks a 4-bit layer's weights for a faster
inference-only kernel the first time the layer runs in eval mode without gradients
(``Linear4bit.forward``: ``_convert_weight_packed_for_cpu``). The packed layer never produces
gradients again, so any evaluation before or during training silently stopped training, and
the inverse conversion is lossy (it re-quantizes the block scales). :meth:`Bnb4bit.after_load`
turns that switch off on every 4-bit layer, for training and for reloading a run alike, so a
reloaded run computes exactly as the trained model did.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tunery import BnbQuantizer, hookimpl

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass
class Bnb4bitOptions:
    """4-bit settings (see transformers.BitsAndBytesConfig)."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True  # quantize the block scales too (saves ~0.4 bit per weight)
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bfloat16 where fast
    gradient_checkpointing: bool = True


class Bnb4bit(BnbQuantizer):
    name = "bnb-4bit"
    description = "4-bit NF4/FP4 base weights via bitsandbytes (QLoRA); CUDA, or CPU with bitsandbytes >= 0.48"
    Options = Bnb4bitOptions
    min_versions = {"cuda": "0.45.0", "cpu": "0.48.0"}
    min_capability = (5, 0)

    def compute_dtype(self, options):
        import torch

        if options.compute_dtype == "auto":
            from tunery import bf16_default

            return torch.bfloat16 if bf16_default() else torch.float32
        return getattr(torch, options.compute_dtype)

    def bnb_config(self, options, keep_modules, run):
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=options.quant_type,
            bnb_4bit_use_double_quant=options.double_quant, bnb_4bit_compute_dtype=self.compute_dtype(options),
            llm_int8_skip_modules=keep_modules,
        )

    def probe(self, bnb, device, options):
        import torch

        weight = torch.randn(64, 64, device=device)
        packed, state = bnb.functional.quantize_4bit(weight, quant_type=options.quant_type,
                                                     compress_statistics=options.double_quant)
        bnb.functional.dequantize_4bit(packed, state)

    def after_load(self, model, options):
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False  # keep the trainable kernel (module docstring)
        return model


@hookimpl
def tunery_register_quantizers(registry):
    registry.add(Bnb4bit())
