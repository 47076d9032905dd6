"""Typed errors raised by tunery. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


class TuneryError(Exception):
    """Base of every error tunery raises on purpose. The message is written for the user."""

    exit_code = 1


class ConfigError(TuneryError):
    """A configuration key is missing, unknown, of the wrong type, or out of range."""

    exit_code = 2


class PluginError(TuneryError):
    """A plugin failed to load or register, or a requested plugin member does not exist."""

    exit_code = 3


class IncompatibleError(ConfigError):
    """Two parts of a run cannot work together (e.g. a method that cannot merge asked to merge)."""


class ModelSourceError(TuneryError):
    """A model reference could not be resolved to local files."""

    exit_code = 4


class DataError(TuneryError):
    """Input data is unreadable or has bad rows. ``problems`` lists every bad row found."""

    exit_code = 5

    def __init__(self, message: str, problems: list | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class TrainingError(TuneryError):
    """Training could not go on (non-finite loss, a failing hook, a broken checkpoint...)."""

    exit_code = 6


class RowError(TuneryError):
    """Raised by a formatter for one bad row; the pipeline adds file and row number.

    ``reason`` is a short, stable category (``missing column``, ``empty response``...) used to
    count problems; ``detail`` says exactly what is wrong in this row."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ResumeError(TuneryError):
    """A run cannot resume: the checkpoint is missing or incomplete, or the setup changed since."""

    exit_code = 7


class Interrupted(TuneryError):
    """Training was stopped by Ctrl-C or SIGTERM after saving a checkpoint to resume from."""

    exit_code = 130
