"""Testing kits for tunery and its plugins, shipped so third-party plugins run the same checks.

* conformance kits, one per family -- subclass one in a test module and set its attributes:
  :class:`MethodConformance`, :class:`ObjectiveConformance`, :class:`ExtensionConformance`,
  :class:`EvaluatorConformance`, :class:`QuantizerConformance`, :class:`FormatterConformance`
  (and :func:`check_formatter`, the formatter checks as a function);
* fixtures from the pytest plugin :mod:`tunery.testing.plugin` (registered in ``pytest11``, so
  installing tunery makes them available): ``tunery_tiny_lm``, ``tunery_tiny_encoder``,
  ``tunery_data``, ``tunery_tokenizer``, ``tunery_engine``;
* tiny offline models and tokenizers: :mod:`tunery.testing.tiny`.

Cheap to import: the kits (which import pytest) load on first use.
"""

from __future__ import annotations

_KITS = {
    "MethodConformance": "conformance", "ObjectiveConformance": "kits", "ExtensionConformance": "kits",
    "EvaluatorConformance": "kits", "QuantizerConformance": "kits", "FormatterConformance": "kits",
    "check_formatter": "formatters",
}

__all__ = list(_KITS)


def __getattr__(name: str):
    if name in _KITS:
        import importlib

        return getattr(importlib.import_module(f".{_KITS[name]}", __name__), name)
    raise AttributeError(name)
