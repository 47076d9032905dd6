"""Shared machinery for quantizers built on bitsandbytes (``bnb-8bit``, ``bnb-4bit``).

A subclass sets where it works (:attr:`BnbQuantizer.min_versions`,
:attr:`BnbQuantizer.min_capability`) and implements :meth:`BnbQuantizer.bnb_config` and
:meth:`BnbQuantizer.probe`. Shared here: the platform check before any weights load, the
``transformers.BitsAndBytesConfig`` hand-over with the modules kept unquantized, and k-bit
training preparation. Third-party bitsandbytes quantizers may use it the same way.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .errors import IncompatibleError
from .members import Quantizer

INSTALL_HINT = "install it with: pip install 'tunery[bnb]'"


def training_device() -> str:
    """``cuda`` or ``cpu``: where the run's Trainer puts the model (see ``run.build_trainer``)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def import_bitsandbytes(member: str):
    """Import bitsandbytes, or raise IncompatibleError saying why it is unusable and how to fix it."""
    try:
        import bitsandbytes
    except Exception as exc:  # a missing dependency or a broken native library fails at import time
        raise IncompatibleError(f"quantizer '{member}': bitsandbytes is installed but cannot be loaded "
                                f"({type(exc).__name__}: {exc}); reinstall it: {INSTALL_HINT}") from None
    return bitsandbytes


class BnbQuantizer(Quantizer):
    """A quantizer that loads the base weights through bitsandbytes."""

    requires: ClassVar[tuple[str, ...]] = ("bitsandbytes",)
    install_hint: ClassVar[str] = INSTALL_HINT
    #: Oldest bitsandbytes release that works, per device type; a device not listed is refused.
    min_versions: ClassVar[dict[str, str]] = {}
    #: Oldest CUDA compute capability the kernels need.
    min_capability: ClassVar[tuple[int, int]] = (5, 0)

    def bnb_config(self, options: Any, keep_modules: list[str], run: Any) -> Any:
        """The ``transformers.BitsAndBytesConfig`` to load with; ``keep_modules`` stay unquantized."""
        raise NotImplementedError

    def probe(self, bnb: Any, device: str, options: Any) -> None:
        """Quantize a small tensor on ``device`` with these options; raise if the kernels are unusable."""
        raise NotImplementedError

    def where(self) -> str:
        """Where this quantizer works, for messages and ``tunery plugins``."""
        return ", ".join(f"{device} (bitsandbytes >= {version})" for device, version in self.min_versions.items())

    def check(self, options: Any, run: Any) -> None:
        from packaging.version import Version

        device = training_device()
        if device not in self.min_versions:
            raise IncompatibleError(f"quantizer '{self.name}' does not work on {device}; it works on: {self.where()}")
        bnb = import_bitsandbytes(self.name)
        version = getattr(bnb, "__version__", "0")
        if Version(version) < Version(self.min_versions[device]):
            raise IncompatibleError(
                f"quantizer '{self.name}' needs bitsandbytes >= {self.min_versions[device]} on {device}, "
                f"found {version}; upgrade it: pip install -U 'tunery[bnb]'")
        if device == "cuda":
            import torch

            capability = torch.cuda.get_device_capability()
            if capability < self.min_capability:
                raise IncompatibleError(
                    f"quantizer '{self.name}' needs a GPU of compute capability "
                    f"{'.'.join(map(str, self.min_capability))} or newer; this one ({torch.cuda.get_device_name()}) "
                    f"is {'.'.join(map(str, capability))}; use quantizer 'none'")
        try:
            self.probe(bnb, device, options)
        except Exception as exc:  # any kernel failure means the platform is unusable
            raise IncompatibleError(
                f"quantizer '{self.name}': bitsandbytes {version} cannot quantize on {device} here "
                f"({type(exc).__name__}: {exc}); it works on: {self.where()}; or use quantizer 'none'") from None

    def load_kwargs(self, options: Any, keep_modules: list[str], run: Any) -> dict:
        return {"quantization_config": self.bnb_config(options, sorted(set(keep_modules)), run)}

    def prepare(self, model: Any, options: Any, run: Any) -> Any:
        """k-bit training preparation (peft): frozen base, non-quantized weights in fp32, input
        gradients and gradient checkpointing (``gradient_checkpointing`` option)."""
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=options.gradient_checkpointing)
