"""A chunk of Alpaca rows formatted with ``Formatter.format_batch`` (the rows tokenized together)
against calling ``format`` row by row, in one process, SmolLM2-135M's tokenizer: µs a row, best of
``--repeats``. The rows are those of benchmarks/data_scale.py.

    HF_HUB_OFFLINE=1 python benchmarks/format_batch.py [--rows 2000] [--repeats 7]"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_scale import MODEL, rows  # noqa: E402 - the same rows as the data benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from tunery import Engine, Formatter
    from tunery.data import Row, Source, format_rows
    from tunery.datatools import formatting_context
    from tunery.loading import load_tokenizer

    engine = Engine()
    tokenizer = load_tokenizer(engine.resolve_model(MODEL))
    run = formatting_context(engine, "alpaca", {"template": "alpaca"}, tokenizer, specs=[], max_length=512,
                             truncation="right", model=MODEL)
    alpaca, options = run.formatter, run.config.format.options

    class RowByRow(Formatter):  # the default format_batch: format on each row
        name, task = "alpaca", "causal_lm"

        def format(self, row, tokenizer, options, run):
            return alpaca.format(row, tokenizer, options, run)

    chunk = [Row(values, Source("rows.jsonl", line=n)) for n, values in enumerate(rows(args.rows), 1)]

    def best(formatter) -> float:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            examples, _, _ = format_rows(chunk, formatter, options, tokenizer, run, [])
            times.append(time.perf_counter() - started)
            assert len(examples) == len(chunk)
        return min(times) / len(chunk) * 1e6

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # as in the pipeline's workers
    gc.disable()  # as the pipeline formats a chunk
    one, batched = best(RowByRow()), best(alpaca)
    print(f"{args.rows} rows, best of {args.repeats}: format row by row {one:.0f} µs a row, format_batch "
          f"{batched:.0f} µs a row ({100 * (1 - batched / one):.0f}% less); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
