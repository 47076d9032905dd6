"""Scoring data with a reward model run folder (the library side of ``tunery score``)."""

from __future__ import annotations

from pathlib import Path

from tunery import (
    DataError,
    IncompatibleError,
    Problem,
    RowError,
    RunContext,
    format_rows,
    is_run_dir,
    load_rows,
    pair_metrics,
    problems_message,
    score_examples,
    text_column,
)


def score_file(engine, run_dir: str, specs: list[str], fmt: str = "preference",
               batch_size: int | None = None, overrides: list[str] = ()) -> tuple[list[dict], dict]:
    """One record per row of ``specs`` and a summary.

    ``preference``: ``{"source", "chosen", "rejected", "correct"}`` per pair (formatted as in
    training, with the run's format options when it used ``preference``), and the evaluator's
    ``accuracy``, ``margin`` and ``pairs``. ``completion``: ``{"source", "score"}`` per text.
    ``overrides`` (``key.path=value``) change the run's config first; bad rows follow its
    ``data.on_bad_row`` (skipped ones are counted in the summary's ``skipped``)."""
    import torch

    if not is_run_dir(run_dir):
        raise IncompatibleError(f"'{run_dir}' is not a run folder (it needs manifest.json and config.yaml)")
    loaded = engine.load(run_dir)
    task = loaded.manifest["task"]
    if task["model"] != "classification" or task.get("num_labels") != 1:
        raise IncompatibleError(f"run '{run_dir}' is not a reward model (method '{loaded.method}'); "
                                "train one with --objective reward --format preference")
    config = loaded.config
    if overrides:
        config = engine.config(config.to_dict(), list(overrides))
    run = RunContext.create(engine, config, output_dir=Path(run_dir), data_task="preference",
                            model_task="classification", num_labels=1, tokenizer=loaded.tokenizer,
                            device=next(loaded.model.parameters()).device)
    rows, _, problems = load_rows(specs)
    examples, sources = [], []
    if fmt == "preference":
        formatter = engine.formatters.get("preference")
        options = config.format.options if config.format.name == "preference" else formatter.parse_options({}, "format")
        for row in rows:  # one at a time, so that each score keeps its row's source
            formatted, _, dropped = format_rows([row], formatter, options, loaded.tokenizer, run, problems)
            if dropped:
                problems.append(Problem(row.source, "too long", "longer than data.max_length (data.truncation=drop)"))
            examples += formatted
            sources += [str(row.source)] * len(formatted)
    else:
        for row in rows:
            try:
                text = text_column(row.values, "text") if isinstance(row.values, dict) else None
                if text is None:
                    raise RowError("wrong type", "a row must be an object with a 'text' column")
                ids = loaded.tokenizer(text, truncation=True, max_length=config.data.max_length)["input_ids"]
                examples.append({"input_ids": list(ids)})
                sources.append(str(row.source))
            except RowError as exc:
                problems.append(Problem(row.source, exc.reason, exc.detail))
    if problems and config.data.on_bad_row == "error":
        raise DataError(problems_message(problems, "scored"), problems)
    skipped = {"skipped": len(problems)} if problems else {}
    if fmt == "preference":
        scores = score_examples(loaded.model, examples, run, batch_size)
        results = [{"source": s, "chosen": c, "rejected": r, "correct": c > r} for s, (c, r) in zip(sources, scores)]
        return results, {**pair_metrics(scores), **skipped}
    results = []
    with torch.no_grad():
        for start, batch in zip(range(0, len(examples), batch_size or config.training.batch_size),
                                run.batches(examples, batch_size)):
            values = loaded.model(**batch).logits[:, 0].float().tolist()
            results += [{"source": s, "score": v} for s, v in zip(sources[start:], values)]
    return results, {"texts": len(results), "mean_score": sum(r["score"] for r in results) / max(len(results), 1),
                     **skipped}
