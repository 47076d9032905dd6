"""Which constrained-decoding library tunery uses for `regex` and `json-schema`: each one's
set-up time and time per generated token, against unconstrained greedy decoding, on the tiny
test model and on SmolLM2-135M (4 prompts in one batch, 48 new tokens, one JSON Schema).

    python benchmarks/constraint_libraries.py [--skip-smollm2]

Prints a markdown table (docs/generation.md keeps the measured one)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer"}}, "required": ["name", "age"],
          "additionalProperties": False}
PROMPTS = ["Describe a person as JSON:", "Give me a record.", "Name and age, please:", "JSON:"]
NEW_TOKENS = 48


def processors(library, model, tokenizer):
    """A fresh logits processor for one batch, and the time its set-up took."""
    from transformers import PrefixConstrainedLogitsProcessor

    started = time.perf_counter()
    schema = json.dumps(SCHEMA)
    if library == "none":
        made = []
    elif library == "xgrammar":
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model.get_output_embeddings().weight.shape[0])
        made = [xgr.contrib.hf.LogitsProcessor(xgr.GrammarCompiler(info).compile_json_schema(schema))]
    elif library == "lm-format-enforcer":
        from lmformatenforcer import JsonSchemaParser
        from lmformatenforcer.integrations.transformers import build_transformers_prefix_allowed_tokens_fn

        made = [PrefixConstrainedLogitsProcessor(build_transformers_prefix_allowed_tokens_fn(tokenizer, JsonSchemaParser(SCHEMA)), 1)]
    elif library == "outlines":
        import outlines
        from outlines.backends import get_json_schema_logits_processor

        made = [get_json_schema_logits_processor("outlines_core", outlines.from_transformers(model, tokenizer), schema)]
    return made, time.perf_counter() - started


def measure(library, model, tokenizer):
    import torch
    from transformers import LogitsProcessorList

    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    made, setup = processors(library, model, tokenizer)
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False, logits_processor=LogitsProcessorList(made),
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    elapsed = time.perf_counter() - started
    new = out[:, batch["input_ids"].shape[1]:]
    tokens = int((new != (tokenizer.pad_token_id or tokenizer.eos_token_id)).sum())
    valid = 0
    for row in new:
        try:
            import jsonschema

            jsonschema.validate(json.loads(tokenizer.decode(row, skip_special_tokens=True)), SCHEMA)
            valid += 1
        except Exception:
            pass
    return setup, 1000 * elapsed / max(tokens, 1), valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import tunery
    from tunery.testing.tiny import cached_causal_lm

    torch.set_num_threads(max(1, torch.get_num_threads()))
    folders = {"tiny (2 layers, 64 wide)": cached_causal_lm(tempfile.gettempdir() + "/tunery-bench-tiny")}
    if not args.skip_smollm2:
        folders["SmolLM2-135M"] = tunery.Engine().resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").path
    print("| model | library | set-up (s) | ms per token | valid outputs |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, folder in folders.items():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        measure("none", model, tokenizer)  # warm-up
        for library in ("none", "xgrammar", "lm-format-enforcer", "outlines"):
            setup, per_token, valid = measure(library, model, tokenizer)
            print(f"| {label} | {library} | {setup:.2f} | {per_token:.1f} | {valid}/{len(PROMPTS)} |", flush=True)


if __name__ == "__main__":
    main()
