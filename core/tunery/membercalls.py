"""Calls into the run's plugin members that name the member and its plugin when they fail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import PluginError, TuneryError

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext

FAMILIES = {"method": "methods", "objective": "objectives", "quantizer": "quantizers", "extension": "extensions",
            "evaluator": "evaluators", "formatter": "formatters"}


def member_call(run: RunContext, part: str, step: str, *args, member: Any = None) -> Any:
    """Call ``step`` of the run's ``part`` (method, objective, quantizer, extension, evaluator): a
    tunery error passes through; any other exception becomes a PluginError naming the member and
    plugin ("method 'x' (plugin 'y') failed in prepare: RuntimeError: boom")."""
    member = member or getattr(run, part)
    try:
        return getattr(member, step)(*args)
    except (TuneryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of plugin code is reported by name
        raise PluginError(f"{member_label(run, part, member)} failed in {step}: {type(exc).__name__}: {exc}") from exc


def member_label(run: RunContext, part: str, member: Any) -> str:
    """``method 'x' (plugin 'y')``: how an error names a member (without the plugin when the
    member is not in the run's registry)."""
    try:
        plugin = run.engine.host.plugin_of(FAMILIES[part], member.name).name
    except Exception:  # noqa: BLE001 - a member used without a registry
        return f"{part} '{member.name}'"
    return f"{part} '{member.name}' (plugin '{plugin}')"
