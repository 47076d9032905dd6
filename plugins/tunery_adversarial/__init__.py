"""Extension ``adversarial``: adversarial training in embedding space (PGD / FreeLB-style). Each
training batch also gets a perturbation ``delta`` of the input embeddings, bounded elementwise by
``eps``: started at random in [-eps, eps], moved ``steps`` times up the gradient of the loss by
``step_size`` (gradient normalised per token) and clipped back into the bound. The loss is the
clean loss + ``weight`` * the loss on the perturbed embeddings. Works with any method and
objective (the perturbation is a hook on the embedding layer). Logged as ``adversarial/gap``
(perturbed minus clean loss)."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, Extension, hookimpl


@dataclasses.dataclass
class AdversarialOptions:
    eps: float = 0.01  # bound of each embedding coordinate's perturbation
    steps: int = 1  # ascent steps per batch
    step_size: float | None = None  # None: eps
    weight: float = 1.0  # weight of the perturbed loss

    def validate(self, where):
        if self.eps <= 0 or self.weight <= 0:
            raise ConfigError(f"config keys '{where}.eps' and '{where}.weight' must be positive")
        if self.steps < 1:
            raise ConfigError(f"config key '{where}.steps' must be 1 or more, got {self.steps}")


def embeddings_of(model):
    get_base = getattr(model, "get_base_model", None)
    return (get_base() if callable(get_base) else model).get_input_embeddings()


class Adversarial(Extension):
    name = "adversarial"
    description = "embedding-space adversarial training (PGD/FreeLB-style), bounded by eps"
    tasks = frozenset({"causal_lm", "classification"})
    Options = AdversarialOptions

    def prepare(self, model, options, run):
        state = run.state[self.name] = {"delta": None, "init": False, "metrics": {}}

        def hook(module, args, output):
            if state["init"]:
                state["init"] = False
                state["delta"] = output.detach().new_empty(output.shape).uniform_(-options.eps, options.eps)
                state["delta"].requires_grad_(True)
            delta = state["delta"]
            return output if delta is None or delta.shape != output.shape else output + delta

        state["hook"] = embeddings_of(model).register_forward_hook(hook)
        return model

    def compute_loss(self, inner, model, inputs, options, run):
        import torch
        from tunery import record

        clean = inner(model, inputs)
        if not model.training:
            return clean
        state = run.state[self.name]
        step = options.step_size or options.eps
        try:
            state["init"] = True
            for _ in range(options.steps):
                loss = inner(model, inputs)
                delta = state["delta"]
                (grad,) = torch.autograd.grad(loss, delta)
                grad = grad / (grad.norm(dim=-1, keepdim=True) + 1e-12)
                state["delta"] = (delta + step * grad).clamp(-options.eps, options.eps).detach().requires_grad_(True)
            state["delta"] = state["delta"].detach()
            perturbed = inner(model, inputs)
        finally:
            state["delta"], state["init"] = None, False
        record(state["metrics"], **{"adversarial/gap": (perturbed - clean).detach()})
        return clean + options.weight * perturbed

    def callbacks(self, options, run):
        from tunery import metrics_callback

        return [metrics_callback(run.state.setdefault(self.name, {}).setdefault("metrics", {}))]


@hookimpl
def tunery_register_extensions(registry):
    registry.add(Adversarial())
