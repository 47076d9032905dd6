"""What model-source plugins return."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """Local files of a model.

    ``path`` is a folder loadable with ``from_pretrained``; ``gguf_file`` names a ``.gguf``
    file inside it when the weights only exist in that form. ``origin`` says where it came
    from (shown to users and written to the manifest)."""

    reference: str
    path: str
    origin: str
    gguf_file: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelListing:
    """One line of ``tunery models``: a reference that resolves offline, and from where."""

    reference: str
    path: str
    origin: str
    kind: str = ""  # e.g. "causal_lm", "encoder"
