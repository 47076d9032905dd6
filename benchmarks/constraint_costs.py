"""What each decoding constraint costs: milliseconds per generated token with and without it,
through tunery's generate (4 prompts in a batch, greedy), on the tiny test model and on
SmolLM2-135M. The first call of a constraint also builds its caches (token texts, xgrammar's
tokenizer info and compiled grammar): shown as set-up.

    python benchmarks/constraint_costs.py [--new-tokens 48] [--skip-smollm2]"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

PROMPTS = ["Describe a person:", "Write a short story about the sea.", "What is the weather like?", "Give me a record."]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]{2,8}$"},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
BANNED = ["the", "and", "sea", "weather", "person", "story", "water", "good", "bad", "cat",
          "dog", "house", "rain", "sun", "blue", "green", "red", "happy", "sad", "time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    from tunery import Engine
    from tunery.generation import generate, resolve_constraints, satisfaction
    from tunery.testing.tiny import cached_causal_lm

    engine = Engine()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "schema.json").write_text(json.dumps(SCHEMA))
    cases = {"none": [], "stop:.": ["stop:."], f"ban ({len(BANNED)} words)": [{"name": "ban", "words": BANNED}],
             "require:harbour,moon": ["require:harbour,moon"], "repetition:1.3": ["repetition:1.3"],
             "length:8-48": ["length:8-48"], r"regex:[a-z]+( [a-z]+)*\.": [r"regex:[a-z]+( [a-z]+)*\."],
             "json-schema": [f"json-schema:{tmp / 'schema.json'}"]}
    models = {"tiny (2 layers, 64 wide)": cached_causal_lm(tempfile.gettempdir() + "/tunery-bench-tiny")}
    if not args.skip_smollm2:
        models["SmolLM2-135M-Instruct"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    print("| model | constraint | set-up (s) | ms per token | x unconstrained | satisfied |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, target in models.items():
        loaded = engine.load(target)
        generate(loaded.model, loaded.tokenizer, PROMPTS, max_new_tokens=4, chat=False)  # warm-up
        base = None
        for case, specs in cases.items():
            constraints = resolve_constraints(engine.constraints, specs, "constraints")
            timings = []
            for _ in range(2):  # the first call builds the caches
                started = time.perf_counter()
                outputs = generate(loaded.model, loaded.tokenizer, PROMPTS, max_new_tokens=args.new_tokens,
                                   chat=False, constraints=constraints)
                timings.append(time.perf_counter() - started)
            tokens = sum(max(1, len(loaded.tokenizer(o, add_special_tokens=False)["input_ids"])) for o in outputs)
            per_token = 1000 * timings[1] / tokens
            base = per_token if base is None else base
            met = satisfaction(constraints, outputs).get("constraint/all")
            print(f"| {label} | {case} | {max(0.0, timings[0] - timings[1]):.2f} | {per_token:.1f} | "
                  f"{per_token / base:.2f} | {'-' if met is None else f'{met:.0%}'} |", flush=True)


if __name__ == "__main__":
    main()
