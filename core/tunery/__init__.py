"""tunery: a fine-tuning engine for large language models whose every technique is a plugin.

This module is the public API: everything a plugin or an embedding platform may use is
importable from ``tunery`` and listed in ``__all__`` (``docs/api.md`` is generated from it).
The conformance kits live in :mod:`tunery.testing`. Everything else is internal.

Cheap to import: nothing here loads torch, transformers, peft, datasets or bitsandbytes; the
helpers are imported on first use.
"""

from .engine import Engine
from .errors import (ConfigError, DataError, IncompatibleError, ModelSourceError, PluginError, RowError, TrainingError,
                     TuneryError)
from .hookspecs import hookimpl
from .members import Constraint, EvalResult, Evaluator, Extension, Formatter, Method, Objective, Quantizer, Reward

# name -> module it comes from, imported when first asked for
_LAZY = {
    # the run
    "RunContext": "context", "RunResult": "context", "RunConfig": "config", "Choice": "config",
    "load_raw": "config", "apply_overrides": "config", "set_config_key": "config", "Interrupted": "errors", "md_table": "report",
    "Registry": "registry", "PluginInfo": "plugins",
    # model sources
    "ResolvedModel": "models", "ModelListing": "models",
    # options of members
    "at_least": "options", "closest": "options", "coerce": "options",
    # data and text
    "Row": "data", "Source": "data", "Problem": "data", "load_rows": "data", "problems_message": "data", "expand_paths": "data", "format_rows": "data", "note": "data",
    "IGNORE_INDEX": "collate", "add_example_values": "datastore", "precompute_values": "preference", "Collator": "collate", "labelled_logits": "loss", "loss_and_logits": "loss",
    "text_column": "text", "prompt_response": "text", "chat_prompt_response": "text", "has_chat_template": "text",
    "encode": "text", "encode_batch": "text", "prompt_response_batch": "text", "bos_ids": "text", "eos_ids": "text",
    "missing": "text",
    "ROLES": "chat", "read_messages": "chat", "render": "chat", "trained_messages": "chat", "content_text": "chat",
    "read_tools": "chat",
    # methods and quantizers built on peft / bitsandbytes
    "PeftMethod": "peft_support", "PromptLearningMethod": "peft_support", "target_modules": "peft_support",
    "trainable_summary": "peft_support", "linear_names": "peft_support", "BnbQuantizer": "bnb_support", "bf16_default": "training",
    # evaluation
    "logits": "evaluation", "loss_sum": "evaluation", "example_losses": "evaluation", "split_example": "evaluation",
    "describe": "evaluation",
    # preference pairs
    "pair_logps": "preference", "pair_scores": "preference", "sequence_logps": "preference",
    "score_examples": "preference", "pair_metrics": "preference", "record": "preference",
    "metrics_callback": "preference",
    # online objectives: reward sources
    "reward_sources": "rewards", "check_reward_sources": "rewards", "RewardSources": "rewards",
    # generation and run folders
    "generate": "generation", "complete": "generation", "complete_batch": "generation", "prompt_ids": "generation",
    "resolve_constraints": "generation", "satisfaction": "generation", "control_text": "generation",
    "with_control": "generation", "is_run_dir": "runs", "scan_checkpoints": "checkpoints",
    # command-line plugins
    "command_engine": "cli", "setup_logging": "cli", "track": "phases", "phase": "phases",
    # continual learning
    "source_examples": "stages", "sources_of": "stages",
}

__all__ = [
    "Engine", "hookimpl",
    "Method", "Objective", "Extension", "Formatter", "Quantizer", "Evaluator", "EvalResult", "Reward", "Constraint",
    "TuneryError", "ConfigError", "PluginError", "IncompatibleError", "ModelSourceError", "DataError",
    "RowError", "TrainingError", *_LAZY, "__version__",
]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("tunery")
        except PackageNotFoundError:
            return "0+unknown"
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tunery' has no attribute '{name}'")
