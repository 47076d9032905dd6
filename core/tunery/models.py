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


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def fingerprint(path: str, cache_dir: str | None = None) -> str:
    """sha256 over a model folder's config.json and weight files (memoised by path, size and
    mtime in ``<cache_dir>/fingerprints.json``): the same weights give the same fingerprint on
    any machine, so a run folder can tell whether the base it is loaded onto is the one it was
    trained on."""
    import hashlib
    import json
    import os

    folder = os.path.realpath(path)
    files = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                   if n == "config.json" or n.endswith(WEIGHT_SUFFIXES)) if os.path.isdir(folder) else [folder]
    memo_path = os.path.join(cache_dir, "fingerprints.json") if cache_dir else None
    try:
        memo = json.loads(open(memo_path).read()) if memo_path and os.path.isfile(memo_path) else {}
    except (OSError, ValueError):
        memo = {}
    total = hashlib.sha256()
    for file in files:
        st = os.stat(file)
        key = f"{file}:{st.st_size}:{st.st_mtime_ns}"
        if key not in memo:
            digest = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
            memo[key] = digest.hexdigest()
        total.update(f"{os.path.basename(file)}:{memo[key]}\n".encode())
    if memo_path:
        try:
            tmp = f"{memo_path}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(memo, f)
            os.replace(tmp, memo_path)
        except OSError:  # a read-only cache only costs time
            pass
    return total.hexdigest()
