"""The hook specifications: the whole contract between tunery and its plugins.

A plugin is a module (or object) with functions named like the hooks below and marked with
``@tunery.hookimpl``. Plugins are found through the entry-point group ``tunery``; the name of
the entry point is the plugin's name. Hooks are grouped by phase:

* **registration** -- called once when an :class:`~tunery.Engine` starts. Each receives a
  registry object; the plugin adds its members (methods, objectives, extensions, formatters,
  quantizers, evaluators, rewards, constraints) to it. Registration must be cheap: no heavy imports (torch, transformers...) at this point.
* **model sources** -- turn a model reference into local files.
* **run lifecycle** -- observe a training run; a platform embedding tunery gets its progress here.
* **command line** -- add commands to the ``tunery`` CLI.

The reference page ``docs/hooks.md`` is generated from this module (``python -m tunery.docs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only, never imported at run time
    import click

    from .models import ModelListing, ResolvedModel
    from .registry import Registry
    from .context import RunContext, RunResult

hookspec = pluggy.HookspecMarker("tunery")
hookimpl = pluggy.HookimplMarker("tunery")


# --------------------------------------------------------------------------- registration


@hookspec
def tunery_register_methods(registry: Registry) -> None:
    """Add tuning methods (subclasses of :class:`tunery.Method`) with ``registry.add(member)``.

    Called once per engine, for every plugin, before anything else. ``registry`` validates each
    member (a name, the right base class) and refuses a name that another plugin already
    registered, naming both plugins. The distribution that provided the member is recorded and
    shown by ``tunery plugins``. Return value is ignored.
    """


@hookspec
def tunery_register_objectives(registry: Registry) -> None:
    """Add objectives (subclasses of :class:`tunery.Objective`: what a run optimises, e.g.
    ``sft``, ``reward``, ``dpo``) with ``registry.add(member)``.

    Same contract as :func:`tunery_register_methods`.
    """


@hookspec
def tunery_register_extensions(registry: Registry) -> None:
    """Add extensions (subclasses of :class:`tunery.Extension`: loss terms, data order, row
    transforms, optimizer groups, callbacks; any number per run) with ``registry.add(member)``.

    Same contract as :func:`tunery_register_methods`.
    """


@hookspec
def tunery_register_formatters(registry: Registry) -> None:
    """Add data formatters (subclasses of :class:`tunery.Formatter`) with ``registry.add(member)``.

    Same contract as :func:`tunery_register_methods`.
    """


@hookspec
def tunery_register_quantizers(registry: Registry) -> None:
    """Add quantizers (subclasses of :class:`tunery.Quantizer`) with ``registry.add(member)``.

    Same contract as :func:`tunery_register_methods`.
    """


@hookspec
def tunery_register_evaluators(registry: Registry) -> None:
    """Add evaluators (subclasses of :class:`tunery.Evaluator`) with ``registry.add(member)``.

    Same contract as :func:`tunery_register_methods`.
    """


@hookspec
def tunery_register_rewards(registry: Registry) -> None:
    """Add reward sources (subclasses of :class:`tunery.Reward`: score generated completions for
    the online objectives ``grpo`` and ``rloo``) with ``registry.add(member)``.

    Same contract as :func:`tunery_register_methods`.
    """


@hookspec
def tunery_register_constraints(registry: Registry) -> None:
    """Add decoding constraints (subclasses of :class:`tunery.Constraint`: logits processors,
    stopping criteria, output checks used by ``generate``, the report's samples and the
    ``generation`` evaluator) with ``registry.add(member)``.

    Same contract as :func:`tunery_register_methods`.
    """


# --------------------------------------------------------------------------- model sources


@hookspec(firstresult=True)
def tunery_resolve_model(reference: str, cache_dir: str) -> ResolvedModel | None:
    """Resolve a model reference (hub id, folder, file) to local files.

    Called whenever a run, ``generate``, ``merge`` or ``eval`` needs a model. Return a
    :class:`tunery.models.ResolvedModel` when this plugin knows the reference, or ``None`` to
    let the next plugin try. The first non-``None`` result wins; plugins registered later are
    asked first (pluggy order), so a platform can put its own model store in front of the
    built-in sources. ``cache_dir`` is the engine's cache folder, where a source may keep
    converted copies. Raise :class:`tunery.errors.ModelSourceError` when the reference is
    clearly yours but unusable (for example a hub id that is not cached while offline).
    When no plugin resolves the reference the engine raises ``ModelSourceError`` itself.
    """


@hookspec
def tunery_list_models(cache_dir: str) -> list[ModelListing]:
    """List the models this source can resolve on this machine without a network.

    Used by ``tunery models``. Return a list of :class:`tunery.models.ModelListing`; results of
    all plugins are concatenated.
    """


# --------------------------------------------------------------------------- run lifecycle


@hookspec
def tunery_run_start(run: RunContext) -> None:
    """A run is about to load its model. ``run.config`` is the validated configuration and
    ``run.output_dir`` the run folder. Called once per run, on the main process only."""


@hookspec
def tunery_log(run: RunContext, record: dict[str, Any]) -> None:
    """One training log record (step, loss, learning rate, ...), the same record that is
    appended to ``train_log.jsonl``. Called at every logging step on the main process."""


@hookspec
def tunery_evaluation(run: RunContext, phase: str, metrics: dict[str, Any]) -> None:
    """Evaluation results. ``phase`` is ``"before"`` (baseline), ``"few_shot"`` (the untuned
    model prompted with ``few_shot`` training examples), ``"during"`` (every N steps, ``metrics``
    then holds ``step``) or ``"after"``; ``metrics`` maps ``evaluator/metric`` names to values.

    An observer may stop the run from here (a sweep pruning a trial) by raising an exception
    that does not derive from ``Exception``; any other exception is logged and the run goes on."""


@hookspec
def tunery_checkpoint_saved(run: RunContext, path: str, step: int) -> None:
    """A checkpoint (or the final adapter/model) was completely written to ``path`` at ``step``."""


@hookspec
def tunery_run_end(run: RunContext, result: RunResult) -> None:
    """The run finished; ``result`` holds its metrics and paths. Called once, on success only."""


@hookspec
def tunery_run_failed(run: RunContext, error: BaseException) -> None:
    """The run stopped with ``error`` (which is re-raised to the caller afterwards); a run stopped
    by Ctrl-C or SIGTERM gets :class:`tunery.errors.Interrupted`. The run folder's
    ``tunery-run.json`` records the error."""


# --------------------------------------------------------------------------- command line


@hookspec
def tunery_register_commands(cli: click.Group) -> None:
    """Add commands to the ``tunery`` command group with ``cli.add_command`` or ``@cli.command``.

    Called when the CLI starts. Keep the commands' module cheap to import; do heavy work
    inside the command function.
    """
