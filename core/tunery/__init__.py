"""tunery: a fine-tuning engine for large language models whose every technique is a plugin.

Cheap to import: nothing here loads torch, transformers, peft, datasets or bitsandbytes.
"""

from .engine import Engine
from .errors import ConfigError, DataError, IncompatibleError, ModelSourceError, PluginError, RowError, TrainingError, TuneryError
from .hookspecs import hookimpl
from .members import EvalResult, Evaluator, Formatter, Method, Quantizer

__all__ = [
    "Engine", "hookimpl", "Method", "Formatter", "Quantizer", "Evaluator", "EvalResult",
    "TuneryError", "ConfigError", "PluginError", "IncompatibleError", "ModelSourceError", "DataError",
    "RowError", "TrainingError", "__version__",
]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("tunery")
        except PackageNotFoundError:
            return "0+unknown"
    raise AttributeError(name)
