"""Extension ``neftune``: NEFTune (Jain et al. 2023), uniform noise on the input embeddings in
training only, of magnitude alpha / sqrt(L * d) (L tokens, d embedding width), through
transformers' own NEFTune hook; removed when training ends."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Extension, hookimpl


@dataclasses.dataclass
class NeftuneOptions:
    alpha: float = 5.0  # the paper uses 5 to 15

    def validate(self, where):
        if self.alpha <= 0:
            raise ConfigError(f"config key '{where}.alpha' must be positive, got {self.alpha}")


class Neftune(Extension):
    name = "neftune"
    description = "NEFTune: noise on the input embeddings while training"
    Options = NeftuneOptions

    def prepare(self, model, options, run):
        from transformers.integrations.neftune import activate_neftune

        run.state[self.name] = {"hook": activate_neftune(model, options.alpha)}
        return model

    def callbacks(self, options, run):
        from transformers import TrainerCallback

        state = run.state

        class Remove(TrainerCallback):
            def on_train_end(self, args, st, control, **kwargs):
                hook = state.get("neftune", {}).pop("hook", None)
                if hook is not None:
                    hook.remove()

        return [Remove()]


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Neftune())
