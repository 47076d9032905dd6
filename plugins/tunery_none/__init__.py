"""Quantizer ``none``: base weights load in full precision."""

from tunery import Quantizer, hookimpl


class NoQuantization(Quantizer):
    name = "none"
    description = "full-precision base weights"
    quantizes = False


@hookimpl
def tunery_register_quantizers(registry):
    registry.add(NoQuantization())
