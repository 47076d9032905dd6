"""The Engine: tunery's Python API. Each engine owns its plugins; there is no global state."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import ModelSourceError
from .plugins import PluginHost, PluginInfo

log = logging.getLogger("tunery")


class Engine:
    """Runs fine-tuning jobs with a set of plugins.

    ``autoload`` loads the plugins installed in the entry-point group ``tunery`` (subject to the
    ``TUNERY_*`` switches in ``env``); ``plugins`` are extra plugin objects registered directly,
    e.g. by a platform or a test (registered after the installed ones, so they are asked first
    by ``firstresult`` hooks such as ``tunery_resolve_model``). Without autoload, the engine
    still adds tunery's essentials where ``plugins`` do not provide them: the model sources
    (``models``), the quantizer ``none`` and the default objective ``sft``. ``env`` defaults to
    ``os.environ``; ``cache_dir`` to ``$TUNERY_CACHE`` or ``~/.cache/tunery``.
    """

    def __init__(self, *, autoload: bool = True, plugins: Iterable[Any] = (),
                 env: Mapping[str, str] | None = None, cache_dir: str | os.PathLike | None = None):
        self.env = dict(os.environ if env is None else env)
        self.cache_dir = Path(cache_dir) if cache_dir else self.default_cache_dir(self.env)
        self.host = PluginHost(self.env, autoload=autoload, plugins=plugins, cache_dir=self.cache_dir)

    @staticmethod
    def default_cache_dir(env: Mapping[str, str]) -> Path:
        """``$TUNERY_CACHE``, else ``~/.cache/tunery``."""
        return Path(env.get("TUNERY_CACHE") or Path.home() / ".cache" / "tunery")

    # ------------------------------------------------------------------ plugins

    @property
    def hook(self):
        """The pluggy hook relay (``engine.hook.tunery_...``)."""
        return self.host.hook

    @property
    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or not, with its status and members."""
        return sorted(self.host.infos.values(), key=lambda i: i.name)

    def register(self, plugin: Any, name: str | None = None) -> PluginInfo:
        """Register one more plugin object after creation."""
        return self.host.add(plugin, name=name)

    @property
    def methods(self):
        return self.host.registries["methods"]

    @property
    def objectives(self):
        return self.host.registries["objectives"]

    @property
    def extensions(self):
        return self.host.registries["extensions"]

    @property
    def formatters(self):
        return self.host.registries["formatters"]

    @property
    def quantizers(self):
        return self.host.registries["quantizers"]

    @property
    def evaluators(self):
        return self.host.registries["evaluators"]

    @property
    def rewards(self):
        """Reward sources of the online objectives (``grpo``, ``rloo``)."""
        return self.host.registries["rewards"]

    @property
    def constraints(self):
        return self.host.registries["constraints"]

    def notify(self, hook: str, **kwargs) -> None:
        """Call a lifecycle hook the pluggy way; each implementation is isolated (a plugin that
        raises is logged with its name, or raises PluginError in strict mode)."""
        getattr(self.hook, hook)(**kwargs)

    # ------------------------------------------------------------------ configuration and runs

    def config(self, source: Mapping[str, Any] | str | os.PathLike, overrides: Iterable[str] = ()):
        """Validate a config (mapping or YAML path) with ``key.path=value`` overrides -> RunConfig."""
        from .config import apply_overrides, load_raw, parse_config

        raw = apply_overrides(load_raw(source), list(overrides))
        if "stages" in raw:  # continual learning: see tunery.stages
            from .stages import parse_staged

            return parse_staged(raw, self.host.registries)
        return parse_config(raw, self.host.registries)

    def train(self, config: Any, overrides: Iterable[str] = ()):
        """Run a training job (config mapping, YAML path or RunConfig) and return a RunResult."""
        from .config import RunConfig
        from .run import execute

        if not isinstance(config, RunConfig):
            config = self.config(config, overrides)
        if config.stages:  # continual learning: the stages one after another
            from .stages import run_stages

            return run_stages(self, config)
        return execute(self, config)

    run = train

    def check(self, config: Any, overrides: Iterable[str] = ()):
        """Validate a run without loading or writing anything: the config, every plugin's options
        and every compatibility check a run makes first. Returns the RunConfig; raises the error
        the run would raise."""
        from .config import RunConfig
        from .run import check_compatibility, new_context
        from .training import training_arguments

        if not isinstance(config, RunConfig):
            config = self.config(config, overrides)
        for stage in config.stages or [config]:
            run = new_context(self, stage)
            check_compatibility(run)
            training_arguments(run)
        return config

    def prepare_data(self, config: Any, overrides: Iterable[str] = ()):
        """Read, format and cache a run's data as training will (no model weights are loaded);
        returns a :class:`~tunery.datatools.Prepared` whose splits' ``examples`` are memory-mapped.
        A run of the same config then reuses the cache."""
        from .config import RunConfig
        from .datatools import prepare_data
        from .loading import load_tokenizer
        from .run import new_context

        if not isinstance(config, RunConfig):
            config = self.config(config, overrides)
        run = new_context(self, config)
        run.tokenizer = load_tokenizer(self.resolve_model(config.model), config.trust_remote_code)
        return prepare_data(run)

    def resolve_model(self, reference: str):
        """Local files for a model reference, asked of the model-source plugins in turn."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        resolved = self.hook.tunery_resolve_model(reference=str(reference), cache_dir=str(self.cache_dir))
        if resolved is None:
            raise ModelSourceError(
                f"no model source knows '{reference}': it is not a local folder or file, nor a known hub id; "
                "`tunery models` lists the models available offline"
            )
        return resolved

    def list_models(self) -> list:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return [m for found in self.hook.tunery_list_models(cache_dir=str(self.cache_dir)) for m in found or []]

    def load(self, target: str, task: str | None = None, generation: bool = False):
        """Load a run folder or a model reference for inference -> LoadedModel (``generation``:
        merged in memory when the run's method can merge)."""
        from .runs import load

        return load(self, str(target), task, generation)

    def generate(self, target: str, prompts: list[str], *, constraints: Iterable[Any] = (),
                 control: Mapping[str, Any] | None = None, **options) -> list[str]:
        """Generate a completion of each prompt with a run folder or model (see tunery.generation),
        batched, on merged weights when the run's method can merge. ``constraints``: decoding
        constraints (``"ban:words.txt"``, ``{"name": "regex", "pattern": ...}``); ``control``:
        attribute values for a run trained with control codes (``{"sentiment": "positive"}``)."""
        from .generation import generate, resolve_constraints
        from .runs import check_can_generate, run_control

        check_can_generate(self, str(target))
        active = resolve_constraints(self.constraints, constraints, "constraints")
        loaded = self.load(target, generation=True)
        control = run_control(loaded, control, str(target))
        return generate(loaded.model, loaded.tokenizer, prompts, constraints=active, control=control, **options)

    def evaluate(self, target: str, evaluators: Iterable[str] = (), data: Iterable[str] = (),
                 format: str | None = None, overrides: Iterable[str] = (), few_shot: int = 0,
                 shots_from: Iterable[str] = ()) -> dict:
        """Evaluate a run folder or model -> ``{evaluator: EvalResult}`` (see tunery.evaluation);
        ``few_shot`` training examples (from ``shots_from`` or the run's data) in front of each prompt."""
        from .runs import evaluate_target

        return evaluate_target(self, str(target), evaluators, data, format, overrides, few_shot, shots_from)

    def merge(self, run_dir: str, output_dir: str) -> Path:
        """Fold a run's tuning into the base weights and write a standalone model folder."""
        from .runs import merge

        return merge(self, str(run_dir), str(output_dir))
