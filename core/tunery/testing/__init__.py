"""Testing helpers for tunery and its plugins: tiny offline models (:mod:`tunery.testing.tiny`),
a pytest plugin with fixtures (:mod:`tunery.testing.plugin`, registered in ``pytest11``) and the
method conformance suite (:class:`MethodConformance`). Cheap to import."""

from __future__ import annotations


def __getattr__(name: str):
    if name == "MethodConformance":  # imports pytest: only when a test asks for it
        from .conformance import MethodConformance

        return MethodConformance
    raise AttributeError(name)


__all__ = ["MethodConformance"]
