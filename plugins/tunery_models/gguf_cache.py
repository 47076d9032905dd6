"""Convert a ``.gguf`` file once into a plain ``save_pretrained`` folder, cached by content hash.

transformers can load a gguf file (it dequantises the weights), but refuses to
``save_pretrained`` the result, and loading takes tens of seconds. So the first use converts
the file into ``<cache_dir>/gguf/<sha256[:16]>/`` (safetensors + tokenizer) and later uses
load that folder like any other model.

The folder is built in a temporary sibling folder, the marker file ``MARKER`` is written last,
and the temporary folder is renamed into place: a folder without the marker is incomplete and
is converted again. Heavy libraries are imported only inside :func:`convert_gguf`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Callable

from tunery import phase, track

log = logging.getLogger("tunery.models")

MARKER = "tunery-gguf.json"  # written last; its presence means the folder is complete
INDEX = "index.json"  # memo of file hashes: realpath -> {size, mtime_ns, sha256}
DIGEST_CHARS = 16

Converter = Callable[[str, str], None]


def gguf_root(cache_dir: str) -> str:
    """The folder holding the converted copies."""
    return os.path.join(cache_dir, "gguf")


def file_sha256(path: str, cache_dir: str) -> str:
    """sha256 of ``path``, memoised in the cache's index by (path, size, mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    index_path = os.path.join(gguf_root(cache_dir), INDEX)
    index = _read_json(index_path) or {}
    entry = index.get(real)
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    index[real] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}
    try:
        _write_json_atomic(index_path, index)
    except OSError:  # a read-only cache still works, only slower
        log.debug("could not write %s", index_path, exc_info=True)
    return digest.hexdigest()


def converted_folder(gguf_path: str, cache_dir: str) -> str:
    """Where the converted copy of ``gguf_path`` lives (whether or not it exists yet)."""
    return os.path.join(gguf_root(cache_dir), file_sha256(gguf_path, cache_dir)[:DIGEST_CHARS])


def is_complete(folder: str) -> bool:
    """True when ``folder`` is a finished conversion (its marker exists)."""
    return os.path.isfile(os.path.join(folder, MARKER))


def read_marker(folder: str) -> dict | None:
    """The marker's content (source file, hash, size...), or None if absent or unreadable."""
    return _read_json(os.path.join(folder, MARKER))


def cached_conversion(gguf_path: str, cache_dir: str, converter: Converter | None = None) -> tuple[str, bool]:
    """Return ``(folder, was_cached)``: the converted copy of ``gguf_path``, converting if needed.

    ``converter(gguf_path, out_dir)`` writes the model into ``out_dir``; it defaults to
    :func:`convert_gguf` (tests pass a fake one)."""
    converter = converter or convert_gguf
    gguf_path = os.path.abspath(gguf_path)
    sha = file_sha256(gguf_path, cache_dir)
    root = gguf_root(cache_dir)
    target = os.path.join(root, sha[:DIGEST_CHARS])
    if is_complete(target):
        return target, True
    if os.path.exists(target):  # left over by something that did not finish: redo it
        log.warning("ignoring incomplete converted model %s; converting again", target)
        shutil.rmtree(target, ignore_errors=True)
    os.makedirs(root, exist_ok=True)
    _remove_dead_temps(root, sha[:DIGEST_CHARS])

    tmp = tempfile.mkdtemp(prefix=f".{sha[:DIGEST_CHARS]}.tmp-{os.getpid()}-", dir=root)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        log.warning("converting %s to a transformers folder (once; cached in %s)", gguf_path, target)
        started = time.time()
        with phase("converting the gguf file (tokenizer, then the weights)"):
            converter(gguf_path, tmp)
        for name in os.listdir(tmp):  # some writers (safetensors) leave files private
            os.chmod(os.path.join(tmp, name), 0o755 if os.path.isdir(os.path.join(tmp, name)) else 0o644)
        marker = {
            "source": gguf_path,
            "sha256": sha,
            "size": os.path.getsize(gguf_path),
            "seconds": round(time.time() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        _write_json_atomic(os.path.join(tmp, MARKER), marker)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete(target):  # someone else finished first otherwise
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, False


def convert_gguf(gguf_path: str, out_dir: str) -> None:
    """Load ``gguf_path`` with transformers (dequantised) and save it as a plain model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    folder, name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    bar = gguf_utils.tqdm  # transformers' own bar is one long line in a log file: show tunery's progress
    gguf_utils.tqdm = lambda items, **_: track(items, len(items), "de-quantising the gguf tensors")
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    finally:
        gguf_utils.tqdm = bar
    log.info("saving the converted model")
    config = loaded.config
    # The loaded model is marked gguf-quantized, and save_pretrained refuses it: rebuild a
    # plain model from a config without the quantization markers and copy the weights over.
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _remove_dead_temps(root: str, prefix: str) -> None:
    """Delete temporary folders of the same file left by processes that no longer run."""
    for name in os.listdir(root):
        if not name.startswith(f".{prefix}.tmp-"):
            continue
        try:
            pid = int(name.split(".tmp-", 1)[1].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except (ValueError, OSError):
            pass  # cannot tell (bad name, or another user's process): leave it


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
