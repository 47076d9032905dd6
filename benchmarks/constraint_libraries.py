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

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]{2,8}$"},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "mood": {"enum": ["happy", "sad"]}},
          "required": ["name", "age", "mood"], "additionalProperties": False}
PROMPTS = ["Describe a person as JSON:", "Give me a record.", "Name and age, please:", "JSON:"]
NEW_TOKENS = 64


def processors(library, model, tokenizer):
    """A fresh logits processor for one batch, and the time its set-up took."""
    from transformers import PrefixConstrainedLogitsProcessor

    import tunery

    started = time.perf_counter()
    schema = json.dumps(SCHEMA)
    if library == "none":
        made = []
    elif library == "xgrammar":  # through tunery's constraint (compact JSON)
        from tunery_structured import _COMPILERS, _GRAMMARS

        _COMPILERS.clear(), _GRAMMARS.clear()  # measure the set-up, not the cache
        constraint = tunery.Engine().constraints.get("json-schema")
        made = constraint.logits_processors(constraint.parse_options({"schema": SCHEMA}, "c"), tokenizer,
                                            model.get_output_embeddings().weight.shape[0], NEW_TOKENS)
    elif library == "lm-format-enforcer":
        import transformers.tokenization_utils as legacy  # 0.11.3 imports a name transformers 5 moved
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase

        legacy.PreTrainedTokenizerBase = PreTrainedTokenizerBase
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
    from tunery.testing.tiny import cached_causal_lm  # noqa: I001

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
