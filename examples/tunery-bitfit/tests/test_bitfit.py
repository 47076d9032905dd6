"""The conformance suite of tunery, run against this plugin (pytest finds the fixtures through
tunery's pytest11 entry point)."""

from tunery.testing import MethodConformance


class TestBitFit(MethodConformance):
    method = "bitfit"
    learning_rate = 5e-2
