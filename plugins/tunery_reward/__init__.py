"""Objective ``reward`` (the RLHF reward step) and the ``tunery score`` command.

A reward model is the base model (causal LM or encoder) with a one-output score head, trained
on preference pairs with the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected - margin)``.
Any method trains the weights underneath (``method: lora``, ``full``, ``ia3``, ``prefix`` ...);
the score head is always trained and saved. The result loads with
``AutoModelForSequenceClassification`` (``num_labels=1``) plus the adapter.
"""

from __future__ import annotations

from tunery import IncompatibleError, Objective, hookimpl

HEAD_NAMES = ("score", "classifier")


def bradley_terry_loss(chosen, rejected, margin=None):
    """Mean of ``-log sigmoid(r_chosen - r_rejected - margin)`` over the pairs."""
    import torch.nn.functional as F

    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin.to(diff.dtype)
    return -F.logsigmoid(diff).mean()


class Reward(Objective):
    name = "reward"
    description = "reward model (RLHF reward step): score head + Bradley-Terry loss on preference pairs"
    tasks = frozenset({"preference"})
    can_generate = False

    def model_task(self, data_task):
        return "classification", 1

    def prepare(self, model, options, run):
        if not any(p.requires_grad for n, p in model.named_parameters() if any(h in n for h in HEAD_NAMES)):
            raise IncompatibleError(
                f"objective 'reward' with method '{run.method.name}': the score head is not trained; "
                "use a method that trains it (lora, ia3, full, ...) or list it in the method's modules_to_save"
            )
        return model

    def compute_loss(self, model, inputs, options, run):
        from tunery import pair_scores, record

        chosen, rejected = pair_scores(model, inputs, run)
        if model.training:
            record(run.state.setdefault(self.name, {}), accuracy=(chosen > rejected).float(),
                   margin=chosen.detach() - rejected.detach())
        return bradley_terry_loss(chosen, rejected, inputs.get("margin"))

    def callbacks(self, options, run):
        from tunery import metrics_callback

        return [metrics_callback(run.state.setdefault(self.name, {}))]


@hookimpl
def tunery_register_objectives(registry):
    registry.add(Reward())


@hookimpl
def tunery_register_commands(cli):
    import click

    @cli.command()
    @click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
    @click.option("--data", "data", multiple=True, required=True, help="File, folder or glob to score (repeatable).")
    @click.option("--format", "fmt", type=click.Choice(["preference", "completion"]), default="preference",
                  show_default=True, help="Pairs (chosen vs rejected), or one text per row ('text' column or .txt lines).")
    @click.option("--output", type=click.Path(dir_okay=False), help="Write JSON lines here instead of stdout.")
    @click.option("--batch-size", type=int, help="Default: the run's training.batch_size.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                  help="Override a key of the run's config, e.g. data.on_bad_row=skip or data.max_length=1024.")
    @click.pass_context
    def score(ctx, run_dir, data, fmt, output, batch_size, overrides):
        """Score texts or preference pairs with a reward model run folder."""
        import json

        from tunery import command_engine, setup_logging

        from .scoring import score_file

        setup_logging(False)
        results, summary = score_file(command_engine(ctx), run_dir, list(data), fmt, batch_size, list(overrides))
        lines = "".join(json.dumps(r) + "\n" for r in results)
        if output:
            with open(output, "w") as f:
                f.write(lines)
        else:
            click.echo(lines, nl=False)
        click.echo(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()),
                   err=True)
