"""The run configuration: one YAML file (plus ``--set`` overrides) that fully describes a run.

Core keys are validated here; each plugin section (``method``, ``objective``, ``format``,
``quantizer``, and the lists ``extensions`` and ``evaluators``) is validated by the plugin that
owns it. A section is written either as a name (``method: lora``) or as a mapping with
``name`` and that plugin's options (``method: {name: lora, r: 8}``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal, Mapping

from .errors import ConfigError
from .options import at_least, closest, coerce, parse, to_dict, unknown_key_error


@dataclasses.dataclass
class DataConfig:
    """Where the examples come from and how they are shaped."""

    train: list[str] = dataclasses.field(default_factory=list)
    eval: list[str] = dataclasses.field(default_factory=list)
    val_split: float | None = None  # None: 10% (1..200) held out when evaluators run without data.eval
    max_length: int = 512
    packing: bool | None = None  # None: on for causal-LM data when the method supports it
    on_bad_row: Literal["error", "skip"] = "error"
    truncation: Literal["right", "left", "drop", "error"] | None = None  # None: the formatter's (right; preference: left)
    limit: int | None = None
    group_by_length: bool = False  # batch examples of similar length together (less padding)
    cache: bool = True  # reuse tokenised examples when files, tokenizer and formatter are unchanged
    workers: int | None = None  # processes that format the rows (None: the usable cores, at most 8)
    control: list[str] = dataclasses.field(default_factory=list)  # columns whose values become tags: <col=value>

    def validate(self, where: str) -> None:
        if not self.train:
            raise ConfigError(f"missing required config key '{where}.train' (a data file, folder or glob)")
        from .data import absolute  # recorded absolute: a run's config.yaml reads the same files from anywhere

        self.train, self.eval = [absolute(p) for p in self.train], [absolute(p) for p in self.eval]
        if self.val_split is not None and not 0.0 <= self.val_split < 1.0:
            raise ConfigError(f"config key '{where}.val_split' must be in [0, 1), got {self.val_split}")
        at_least(self, where, max_length=8, workers=1)


@dataclasses.dataclass
class TrainingConfig:
    """Optimisation settings, passed to ``transformers.TrainingArguments``."""

    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float | None = None  # None: the method's measured default (Method.default_learning_rate)
    batch_size: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    bf16: bool | None = None  # None: on where the hardware runs bf16 fast
    gradient_checkpointing: bool = False
    chunked_loss: bool = True  # causal LM: loss from hidden states in chunks, no full logits tensor
    logging_steps: int = 1
    eval_steps: int | None = None
    save_steps: int | None = None
    save_total_limit: int | None = None
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a non-finite loss or gradient norm stops the run or skips the step
    auto_batch_size: bool = False  # halve the batch size until it fits in memory, raising grad_accum to match
    report_to: list[str] = dataclasses.field(default_factory=list)  # trackers: tensorboard, wandb, mlflow
    extra: dict = dataclasses.field(default_factory=dict)  # any other TrainingArguments field

    def validate(self, where: str) -> None:
        at_least(self, where, batch_size=1, grad_accum=1, logging_steps=1)
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"config key '{where}.max_steps' must be a positive number of steps (or -1 for epochs)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"config key '{where}.warmup_ratio' must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError(f"config key '{where}.learning_rate' must be positive, got {self.learning_rate}")
        if self.epochs <= 0:
            raise ConfigError(f"config key '{where}.epochs' must be positive, got {self.epochs} "
                              f"(set {where}.max_steps to train a number of steps instead)")
        if self.max_grad_norm < 0:
            raise ConfigError(f"config key '{where}.max_grad_norm' must be 0 or more, got {self.max_grad_norm} "
                              "(0 turns gradient clipping off)")
        fp16 = coerce(self.extra.get("fp16", False), bool, f"{where}.extra.fp16")
        if fp16 and self.bf16:
            raise ConfigError(f"config keys '{where}.bf16' and '{where}.extra.fp16' are both true; "
                              "choose one precision")
        if fp16 and self.bf16 is None:  # an explicit fp16 turns the automatic bf16 off
            self.bf16 = False
        at_least(self, where, eval_steps=1)


@dataclasses.dataclass
class EarlyStoppingConfig:
    """Stop when a metric of the evaluation every ``training.eval_steps`` stops improving."""

    metric: str | None = None  # "evaluator/metric", e.g. loss/loss; None: no early stopping
    patience: int = 3  # evaluations without improvement before training stops
    threshold: float = 0.0  # smallest change that counts as an improvement
    greater_is_better: bool | None = None  # None: lower is better for loss and perplexity, higher otherwise
    keep_best: bool = True  # the saved result is the best checkpoint, not the last step

    def validate(self, where: str) -> None:
        at_least(self, where, patience=1)
        if self.threshold < 0:
            raise ConfigError(f"config key '{where}.threshold' must be 0 or more, got {self.threshold}")
        if self.metric is not None and "/" not in self.metric:
            raise ConfigError(
                f"config key '{where}.metric' must be 'evaluator/metric' (e.g. loss/loss), got {self.metric!r}"
            )

    @property
    def higher_is_better(self) -> bool:
        if self.greater_is_better is not None:
            return self.greater_is_better
        return not self.metric.rsplit("/", 1)[-1].endswith(("loss", "perplexity"))


ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclasses.dataclass
class ModelLoadingConfig:
    """How the base model's weights are loaded (``from_pretrained``'s attn_implementation and dtype)."""

    attn_implementation: str | None = None  # None: transformers' choice (sdpa where it can); eager, flash_attention_2, ...
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"  # auto: as stored in the checkpoint

    def validate(self, where: str) -> None:
        import importlib.util

        if self.attn_implementation is None:
            return
        if self.attn_implementation not in ATTENTION:
            raise ConfigError(f"config key '{where}.attn_implementation' must be one of {', '.join(ATTENTION)}, "
                              f"got {self.attn_implementation!r}{closest(self.attn_implementation, ATTENTION)}")
        package = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}.get(
            self.attn_implementation)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"config key '{where}.attn_implementation={self.attn_implementation}' needs the "
                              f"{package} package (and a CUDA GPU): pip install flash-attn, or use sdpa")


@dataclasses.dataclass
class GenerationConfig:
    """Prompts answered before and after training, so the change is visible."""

    prompts: list[str] = dataclasses.field(default_factory=list)
    from_eval: int = 2  # without prompts: answer the prompts of the first N evaluation examples (0: none)
    max_new_tokens: int = 64
    chat: bool | None = None  # None: use the chat template when the tokenizer has one
    temperature: float = 0.0
    constraints: list[Any] = dataclasses.field(default_factory=list)  # "NAME:ARG" or {name: NAME, ...}
    control: dict = dataclasses.field(default_factory=dict)  # control-code values for the samples


@dataclasses.dataclass
class Choice:
    """A selected plugin member and its validated options."""

    name: str
    options: Any

    def to_dict(self) -> dict:
        return {"name": self.name, **to_dict(self.options)}


@dataclasses.dataclass
class RunConfig:
    """A validated run configuration."""

    model: str
    output_dir: str
    method: Choice
    objective: Choice
    format: Choice
    quantizer: Choice
    extensions: list[Choice]
    evaluators: list[Choice]
    data: DataConfig
    training: TrainingConfig
    generation: GenerationConfig
    seed: int = 0
    trust_remote_code: bool = False
    overwrite: bool = False
    resume: str | None = None  # "auto" (newest complete checkpoint of the run folder) or a checkpoint folder
    resume_force: bool = False  # resume even though the config, data or plugins changed
    few_shot: int = 0  # also score the untuned model with this many training examples before each eval prompt
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    model_loading: ModelLoadingConfig = dataclasses.field(default_factory=ModelLoadingConfig)
    stages: list = dataclasses.field(default_factory=list)  # continual learning: each stage's RunConfig

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Choice):
                out[f.name] = value.to_dict()
            elif f.name == "stages":
                if value:  # a staged run's config.yaml lists each stage's resolved config
                    out[f.name] = [{"name": Path(c.output_dir).name, **c.to_dict()} for c in value]
            elif f.name in LISTS:
                out[f.name] = [c.to_dict() for c in value]
            elif dataclasses.is_dataclass(value):
                out[f.name] = to_dict(value)
            else:
                out[f.name] = value
        return out

    def digest(self) -> str:
        """sha256 of the resolved configuration (recorded in manifests and checkpoints)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()


MAX_SEED = 2**32 - 1  # numpy's seed range, which transformers.set_seed uses
SECTIONS = {"method": "methods", "objective": "objectives", "format": "formatters", "quantizer": "quantizers"}
LISTS = {"extensions": "extensions", "evaluators": "evaluators"}
SIMPLE = {
    "model": str, "output_dir": str, "seed": int, "trust_remote_code": bool, "overwrite": bool,
    "resume": str | None, "resume_force": bool, "few_shot": int,
}
NESTED = {"data": DataConfig, "training": TrainingConfig, "generation": GenerationConfig,
          "early_stopping": EarlyStoppingConfig, "model_loading": ModelLoadingConfig}
TOP_KEYS = set(SIMPLE) | set(NESTED) | set(SECTIONS) | set(LISTS)  # and `stages`: see tunery.stages


def load_raw(source: Mapping[str, Any] | str | os.PathLike) -> dict:
    """The raw mapping of a config given as a mapping or a YAML file path."""
    if isinstance(source, Mapping):
        return json.loads(json.dumps(source, default=str))  # a deep, plain copy
    import yaml

    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, not {type(raw).__name__}")
    base = path.parent
    stages = raw.get("stages") if isinstance(raw.get("stages"), list) else []
    for data in [raw.get("data")] + [s.get("data") for s in stages if isinstance(s, dict)]:
        if not isinstance(data, dict):  # data paths in a file are relative to the file's folder
            continue
        for key in ("train", "eval"):
            if isinstance(data.get(key), str):
                data[key] = _relative(data[key], base, f"data.{key}", path)
            elif isinstance(data.get(key), list):
                data[key] = [_relative(p, base, f"data.{key}[{i}]", path) if isinstance(p, str) else p
                             for i, p in enumerate(data[key])]
    extra = (raw.get("training") or {}).get("extra") if isinstance(raw.get("training"), dict) else None
    if isinstance(extra, dict):  # launch files (DeepSpeed, FSDP) too: relative to the config file
        for key in ("deepspeed", "fsdp_config"):
            if isinstance(extra.get(key), str) and extra[key].endswith(".json"):
                extra[key] = _relative(extra[key], base, f"training.extra.{key}", path)
    return raw


def _relative(value: str, base: Path, key: str, config: Path) -> str:
    """A data path written in a config file, resolved against the config file's folder (a hub
    name ``org/name`` stays one unless such a path exists there). A path that exists only
    relative to the working directory is refused, naming both places."""
    import glob

    from .data import HUB_NAME, SUFFIXES

    if os.path.isabs(value):
        return value
    candidate = str(base / value)
    pattern = any(ch in value for ch in "*?[")
    found = glob.glob(candidate, recursive=True) if pattern else os.path.lexists(candidate)
    if found:
        return candidate
    if glob.glob(value, recursive=True) if pattern else os.path.lexists(value):
        raise ConfigError(
            f"config key '{key}' in {config}: '{value}' is not beside the config file (tried "
            f"{os.path.abspath(candidate)}) but exists at {os.path.abspath(value)}; data paths in a config file "
            "are relative to the config file's folder: write the path from there, or an absolute one"
        )
    if not pattern and HUB_NAME.fullmatch(value) and Path(value).suffix.lower() not in SUFFIXES:
        return value  # a `datasets` hub name
    return candidate  # missing everywhere: reading it names the absolute path tried


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides; values are read as YAML (``8`` -> int, ``[a,b]`` -> list)."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key.path=value, got '{item}'")
        path, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        set_config_key(raw, path, value, f"--set {item}")
    return raw


def set_config_key(raw: dict, path: str, value: Any, where: str) -> dict:
    """Set the dotted key ``path`` (``training.learning_rate``) of the raw config mapping ``raw``;
    a plugin section given by name (``method: lora``) becomes ``{name: lora, ...}``. Errors start
    with ``where`` (the option or config key that asked)."""
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"{where}: expected a dotted config key such as training.learning_rate, got '{path}'")
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if isinstance(child, str) and key in SECTIONS:  # "method: lora" + method.r=8
            child = {"name": child}
        elif child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{where}: '{'.'.join(keys[:depth + 1])}' is not a section")
        node[key] = child
        node = child
    node[keys[-1]] = value
    return raw


def _section(raw: Any, where: str) -> tuple[str, dict]:
    if isinstance(raw, str):
        return raw, {}
    if isinstance(raw, Mapping):
        options = dict(raw)
        name = options.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"config key '{where}.name' is required (the plugin to use)")
        return name, options
    raise ConfigError(f"config key '{where}' must be a plugin name or a mapping with 'name', got {raw!r}")


def parse_config(raw: Mapping[str, Any], registries: Mapping[str, Any]) -> RunConfig:
    """Validate a raw config mapping against the core keys and each chosen plugin's options."""
    raw = dict(raw)
    if "sweep" in raw:
        raise ConfigError("this config has a 'sweep:' section: run it with `tunery sweep CONFIG` "
                          "(pip install 'tunery[sweep]'), or remove the section to train once")
    for key in raw:
        if key not in TOP_KEYS:
            raise unknown_key_error(key, TOP_KEYS, "")
    for key in ("model", "output_dir", "method", "format"):
        if raw.get(key) in (None, ""):
            raise ConfigError(f"missing required config key '{key}'")
    values: dict[str, Any] = {}
    for key, tp in SIMPLE.items():
        if key in raw:
            values[key] = coerce(raw[key], tp, key)
    if not 0 <= values.get("seed", 0) <= MAX_SEED:
        raise ConfigError(f"config key 'seed' must be in 0..{MAX_SEED} (2**32-1), got {values['seed']}")
    if values.get("few_shot", 0) < 0:
        raise ConfigError(f"config key 'few_shot' must be 0 or more (training examples shown before each "
                          f"evaluation prompt), got {values['few_shot']}")
    for key, cls in NESTED.items():
        section = raw.get(key) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"config key '{key}' must be a mapping, got {section!r}")
        values[key] = parse(cls, section, key)
    formatter = _member(registries["formatters"], _section(raw["format"], "format")[0], "format")
    task = formatter.task
    if values["data"].truncation is None:
        values["data"].truncation = formatter.default_truncation
    for key, family in SECTIONS.items():
        if key not in raw or raw[key] is None:
            raw[key] = _default_objective(registries, task) if key == "objective" else "none"
        name, options = _section(raw[key], key)
        member = _member(registries[family], name, key, registries)
        values[key] = Choice(name, member.parse_options(options, key))
    if raw.get("evaluators") is None:  # the defaults that can measure this formatter's data
        raw["evaluators"] = [e.name for e in registries["evaluators"] if e.default and task in e.tasks]
    for key, family in LISTS.items():
        items = raw.get(key) or []
        if isinstance(items, str):
            items = [e.strip() for e in items.split(",") if e.strip()]
        if not isinstance(items, list):
            raise ConfigError(f"config key '{key}' must be a list of {family} names or mappings, got {items!r}")
        choices = []
        for i, item in enumerate(items):
            name, options = _section(item, f"{key}[{i}]")
            member = _member(registries[family], name, f"{key}[{i}]", registries)
            choices.append(Choice(name, member.parse_options(options, f"{key}[{i}]")))
        names = [c.name for c in choices]
        if key == "extensions" and len(set(names)) < len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ConfigError(f"config key 'extensions' names '{twice}' twice; give it once, with all its options")
        values[key] = choices
    return RunConfig(**values)


def _default_objective(registries, task: str) -> str:
    """The objective a run of ``task`` data uses when it names none."""
    defaults = [o.name for o in registries["objectives"] if o.default and task in o.tasks]
    if defaults:
        return defaults[0]
    able = [o.name for o in registries["objectives"] if task in o.tasks]
    raise ConfigError(f"missing config key 'objective': {task} data has no default objective; "
                      f"choose one of: {', '.join(able) or 'none installed'} (e.g. objective: {able[0] if able else '...'})")


KEY_OF_FAMILY = {**{family: key for key, family in SECTIONS.items()}, **{family: key for key, family in LISTS.items()}}


def _member(registry, name: str, where: str, registries=None):
    if name not in registry:
        other = next((r for r in (registries or {}).values() if r is not registry and name in r), None)
        if other is not None:
            article = "an" if other.family[0] in "aeiou" else "a"
            raise ConfigError(f"config key '{where}': '{name}' is {article} {other.family[:-1]}, not a "
                              f"{registry.family[:-1]}: name it under '{KEY_OF_FAMILY[other.family]}'")
        raise ConfigError(f"config key '{where}': {registry.unknown(name)}")
    return registry.get(name)


def dump_yaml(config: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
