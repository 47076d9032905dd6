"""Calls into plugin members that name the member and its plugin when they fail."""

from __future__ import annotations

import functools
from typing import Any

from .errors import PluginError, TuneryError

#: Calls whose exceptions the core itself reads: out of memory while fitting a batch size or a
#: failing training step (``compute_loss``), a bad row reported by file and line (``format``).
UNWRAPPED = frozenset({"compute_loss", "format"})


class Guarded:
    """``member`` as the run sees it: an exception other than a TuneryError raised by one of its
    methods becomes a PluginError "method 'x' (plugin 'y') failed in prepare: RuntimeError: boom".
    Attributes and the calls in ``UNWRAPPED`` pass through as they are."""

    __slots__ = ("_member", "_where")

    def __init__(self, member: Any, plugin: str):
        self._member = member
        self._where = f"{member.family[:-1]} '{member.name}' (plugin '{plugin}')"

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._member, attr)
        if attr in UNWRAPPED or attr.startswith("_") or isinstance(value, type) or not callable(value):
            return value

        @functools.wraps(value)
        def call(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except TuneryError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of plugin code is reported by name
                raise PluginError(f"{self._where} failed in {attr}: {type(exc).__name__}: {exc}") from exc

        return call

    def __repr__(self) -> str:
        return repr(self._member)


def guarded(engine: Any, family: str, name: str) -> Guarded:
    """The member ``name`` of ``family`` (e.g. "methods") of ``engine``, guarded."""
    entry = engine.host.registries[family].entry(name)
    return Guarded(entry.member, entry.plugin)
