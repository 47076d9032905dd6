"""Model folders that try to run code: remote code stays off, pickled weights never execute."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tunery.errors import ModelSourceError
from tunery.loading import load_model
from tunery.models import ResolvedModel


@pytest.fixture
def hostile(tiny_lm, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_lm, folder)
    return folder, tmp_path / "pwned"


def test_remote_code_is_not_run_unless_the_config_says_so(hostile):
    folder, witness = hostile
    (folder / "evil.py").write_text(f"open({str(witness)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(ResolvedModel("hostile", str(folder), "test"), "causal_lm")
    assert type(model).__module__.startswith("transformers.")  # the library's own class, not evil.py
    assert not witness.exists()


def test_pickled_weights_with_code_are_refused(hostile):
    import torch
    from safetensors.torch import load_file

    folder, witness = hostile

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {witness}",))

    state = dict(load_file(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save({**state, "payload": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelSourceError, match="holds pickled weights with more than tensors"):
        load_model(ResolvedModel("hostile", str(folder), "test"), "causal_lm")
    assert not witness.exists()
