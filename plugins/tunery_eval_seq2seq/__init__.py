"""Evaluator ``seq2seq``: generates each example's output and scores it against the target --
ROUGE-1/2/L (``rouge-score``, F-measure x 100), BLEU and chrF (``sacrebleu``, 0-100) and the
exact-match rate (0-1). The examples with the lowest chrF are kept, with what was generated."""

from __future__ import annotations

import dataclasses

from tunery import ConfigError, EvalResult, Evaluator, hookimpl


@dataclasses.dataclass
class Seq2SeqOptions:
    batch_size: int | None = None  # default: training.batch_size
    max_new_tokens: int = 64
    num_beams: int = 1  # 1: greedy decoding
    worst: int = 5  # examples with the lowest chrF kept for error analysis (0: none)
    bleu_order: int = 4  # longest n-gram BLEU counts (outputs of fewer words score 0 at 4)

    def validate(self, where):
        for key in ("max_new_tokens", "num_beams", "bleu_order"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key '{where}.{key}' must be at least 1, got {getattr(self, key)}")


def scores(predictions: list[str], references: list[str], bleu_order: int = 4) -> dict[str, float]:
    """Corpus BLEU (n-grams up to ``bleu_order``) and chrF, mean ROUGE F-measures and exact match
    of ``predictions``."""
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    rouge = {key: 0.0 for key in ("rouge1", "rouge2", "rougeL")}
    for prediction, reference in zip(predictions, references):
        for key, value in scorer.score(reference, prediction).items():
            rouge[key] += value.fmeasure
    n = max(len(predictions), 1)
    return {
        "bleu": sacrebleu.BLEU(max_ngram_order=bleu_order).corpus_score(predictions, [references]).score,
        "chrf": sacrebleu.corpus_chrf(predictions, [references]).score,
        **{key: 100.0 * value / n for key, value in rouge.items()},
        "exact_match": sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / n,
        "examples": len(predictions),
    }


class Seq2SeqEval(Evaluator):
    name = "seq2seq"
    description = "generation scored by ROUGE-1/2/L, BLEU, chrF and exact match (seq2seq models)"
    tasks = frozenset({"seq2seq"})
    Options = Seq2SeqOptions
    requires = ("sacrebleu", "rouge_score")

    def evaluate(self, model, dataset, options, run):
        import sacrebleu

        tokenizer = run.tokenizer
        predictions, references, sources = [], [], []
        for batch in run.batches(dataset, options.batch_size):
            out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 max_new_tokens=options.max_new_tokens, num_beams=options.num_beams, do_sample=False)
            predictions += [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
            labels = batch["labels"].masked_fill(batch["labels"] < 0, tokenizer.pad_token_id)
            references += [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
            sources += [t.strip() for t in tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)]
        chrf = [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(predictions, references)]
        order = sorted(range(len(chrf)), key=lambda i: chrf[i])[:options.worst]
        worst = [{"source": sources[i], "target": references[i], "generated": predictions[i], "chrf": chrf[i]}
                 for i in order]
        records = [{"source": s, "target": r, "generated": p} for s, r, p in zip(sources, references, predictions)]
        return EvalResult(scores(predictions, references, options.bleu_order), worst=worst, records=records)


@hookimpl
def tunery_register_evaluators(registry):
    registry.add(Seq2SeqEval())
