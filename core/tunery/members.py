"""Base classes of the plugin families: what a method, objective, extension, formatter,
quantizer, evaluator or decoding constraint is.

A plugin subclasses one of these, sets ``name`` (and ``Options``, a dataclass of its config
section), and registers an instance through the matching ``tunery_register_*`` hook. This
module is imported at start-up: keep it free of heavy imports, and keep heavy imports of your
own member inside its methods.

Two axes, chosen independently in a run: the **method** decides *what is trainable* (and how
it is saved, loaded, merged); the **objective** decides *what is optimised* (the loss, or the
training algorithm). Any number of **extensions** change training without owning it.

Data tasks. A formatter produces examples for one *data task* (an open set: a plugin may add
one, with an objective that optimises it). The built-in ones:

* ``causal_lm`` -- ``{"input_ids", "labels"}`` (labels ``-100`` where no loss is taken);
* ``classification`` -- ``{"input_ids", "labels": int}``;
* ``preference`` -- ``{"chosen_input_ids", "chosen_labels", "rejected_input_ids",
  "rejected_labels"}`` (plus optional ``margin``);
* ``seq2seq`` -- ``{"input_ids", "labels"}``: the encoder's input and the decoder's target
  token ids, of different lengths (the model shifts the labels itself);
* ``token_classification`` -- ``{"input_ids", "labels"}``: one label id per token (``-100``
  where no loss is taken, e.g. special tokens and later sub-words of a word), plus
  ``_first``: the position of each word's first sub-token (for word-level metrics).

Model tasks. The objective maps the data task to the *model task*, the head that is loaded
(:meth:`Objective.model_task`): ``causal_lm`` (``AutoModelForCausalLM``),
``classification`` (``AutoModelForSequenceClassification``), ``seq2seq``
(``AutoModelForSeq2SeqLM``) or ``token_classification`` (``AutoModelForTokenClassification``). A method lists the model tasks it
can train in :attr:`Method.tasks`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping

from .errors import ConfigError, IncompatibleError, RowError
from .options import NoOptions, parse

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext

DATA_TASKS = ("causal_lm", "classification", "preference", "seq2seq", "token_classification")  # built-in data tasks
MODEL_TASKS = ("causal_lm", "classification", "seq2seq", "token_classification")  # the model heads tunery loads
GENERATIVE_TASKS = ("causal_lm", "seq2seq")  # model tasks that generate text
LABELLED_TASKS = ("classification", "token_classification")  # data tasks whose label names are saved


#: The transformers ``AutoModelFor<...>`` class name of each model task (model cards).
HEAD_CLASSES = {"causal_lm": "CausalLM", "classification": "SequenceClassification", "seq2seq": "Seq2SeqLM",
                "token_classification": "TokenClassification"}


class Member:
    """Common part of every plugin member."""

    #: The name users select the member by (``--method lora``). Lower case, no spaces.
    name: ClassVar[str] = ""
    #: One line shown by ``tunery plugins``.
    description: ClassVar[str] = ""
    #: Dataclass of this member's config section; its fields are the valid keys.
    Options: ClassVar[type] = NoOptions
    #: Import names this member needs beyond tunery's own dependencies (e.g. ``["bitsandbytes"]``).
    #: When one is missing the plugin is listed as ``unavailable: missing dependency X``.
    requires: ClassVar[tuple[str, ...]] = ()

    def parse_options(self, raw: Mapping[str, Any] | None, where: str) -> Any:
        """Validate this member's config section; ``where`` is its key path for messages."""
        return parse(self.Options, raw, where)

    def describe_options(self) -> dict[str, Any]:
        """Default value of each option (for ``tunery init`` and the docs)."""
        out = {}
        for f in dataclasses.fields(self.Options):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out


class Method(Member):
    """A tuning method: decides what is trainable and how, and how the result is saved."""

    family: ClassVar[str] = "methods"
    #: Model tasks (heads, see the module docstring) this method can train.
    tasks: ClassVar[frozenset[str]] = frozenset(MODEL_TASKS)
    #: Whether the base model may be quantized (QLoRA-style training).
    accepts_quantized: ClassVar[bool] = False
    #: Whether :meth:`merge` can fold the result into the base weights.
    can_merge: ClassVar[bool] = False
    #: Whether several examples may be packed into one training row.
    supports_packing: ClassVar[bool] = True
    #: Whether a tuned causal LM can generate text.
    can_generate: ClassVar[bool] = True
    #: Whether the model can be switched back to its untrained state in place
    #: (``model.disable_adapter()``), so an objective needs no copy for a reference model.
    can_disable: ClassVar[bool] = False
    #: ``"adapter"`` (the run folder holds ``adapter/``) or ``"model"`` (``model/``).
    output_kind: ClassVar[str] = "adapter"
    #: The learning rate a run uses when ``training.learning_rate`` is not set: methods differ by
    #: orders of magnitude (full fine-tuning ~2e-5, LoRA 2e-4, prompt tuning ~1e-2); see
    #: docs/learning-rates.md for the measurements behind the built-in ones.
    default_learning_rate: ClassVar[float] = 2e-4

    def check(self, options: Any, run: RunContext) -> None:
        """Refuse impossible combinations before any weights load (raise IncompatibleError)."""

    def output(self, options: Any) -> str:
        """The run folder's result for these options (``"adapter"`` or ``"model"``)."""
        return self.output_kind

    def fully_trained_modules(self, options: Any, run: RunContext) -> list[str]:
        """Names of modules this method trains in full; quantizers leave them unquantized."""
        return []

    def prepare(self, model: Any, options: Any, run: RunContext) -> Any:
        """Make ``model`` trainable (wrap it, freeze parts) and return the model to train."""
        raise NotImplementedError

    def callbacks(self, options: Any, run: RunContext) -> list:
        """Extra ``transformers.TrainerCallback`` objects for the training loop. They run before
        tunery's reporter, so keys an ``on_log`` adds to ``logs`` reach ``train_log.jsonl``."""
        return []

    def save(self, model: Any, path: str, options: Any, run: RunContext) -> None:
        """Write the trained result to ``path`` (an empty folder) in a standard format."""
        raise NotImplementedError

    def load(self, base_model: Any, path: str, options: Any) -> Any:
        """Load what :meth:`save` wrote onto ``base_model``; return a model ready for inference."""
        raise NotImplementedError

    def merge(self, model: Any, options: Any) -> Any:
        """Return a plain ``transformers`` model with the tuning folded into its weights."""
        raise IncompatibleError(self.merge_refusal())

    def model_card(self, options: Any, run: RunContext) -> dict | str:
        """What the result folder's model card (README.md) says about loading it: a dict with
        ``library_name``, ``usage`` (Python code that loads the folder) and ``summary`` (one
        sentence) merged into tunery's card, or a string that is the whole card."""
        head = HEAD_CLASSES.get(run.model_task, "CausalLM")
        folder = self.output(options)
        return {"library_name": "transformers",
                "summary": f"a full model trained with the **{self.name}** method",
                "usage": f"from transformers import AutoModelFor{head}\n"
                         f"model = AutoModelFor{head}.from_pretrained(\"{folder}\")"}

    def merge_refusal(self) -> str:
        """Why this method cannot merge and what to use instead (``tunery merge`` shows it
        before loading anything when ``can_merge`` is false)."""
        return f"method '{self.name}' cannot be merged into the base weights; use the run's {self.output_kind}/ folder"


class Objective(Member):
    """An objective: what a run optimises -- the loss of a batch, and where an algorithm needs
    it (online RL), the training step itself. Combines with any method whose capabilities fit.

    The default objective of a data task (``sft``: the model's own loss) is used when a run
    names none; an objective with ``default = True`` is a candidate for the tasks it handles."""

    family: ClassVar[str] = "objectives"
    #: Data tasks this objective can optimise.
    tasks: ClassVar[frozenset[str]] = frozenset({"causal_lm"})
    #: Whether a run that names no objective uses this one (for the tasks it handles).
    default: ClassVar[bool] = False
    #: Whether packed rows (several examples per row) are fine for its loss.
    supports_packing: ClassVar[bool] = False
    #: Whether the tuned model generates text (``False`` for a reward model).
    can_generate: ClassVar[bool] = True

    def model_task(self, data_task: str) -> tuple[str, int | None]:
        """The model head to load for ``data_task``: ``("causal_lm", None)``,
        ``("classification", num_labels)`` (``None`` = number of labels in the data),
        ``("seq2seq", None)`` or ``("token_classification", None)``."""
        if data_task in ("classification", "seq2seq", "token_classification"):
            return data_task, None
        return "causal_lm", None

    def check(self, options: Any, run: RunContext) -> None:
        """Refuse impossible combinations (with ``run.method``, the quantizer, ...) before any
        weights load: raise IncompatibleError naming both parts and a way out."""

    def prepare(self, model: Any, options: Any, run: RunContext) -> Any:
        """Adjust the model after the method made it trainable (e.g. check that a reward head
        trains, keep reference weights); return it."""
        return model

    def compute_loss(self, model: Any, inputs: dict, options: Any, run: RunContext) -> Any:
        """The training loss of one batch, or ``None`` for the model's own loss (tunery then
        computes a causal LM's loss in chunks, never building the full logits)."""
        return None

    def training_step(self, step: Any, model: Any, inputs: dict, options: Any, run: RunContext) -> Any:
        """One optimisation step's forward and backward pass; ``step(model, inputs)`` is the
        standard one (it calls :meth:`compute_loss` and the extensions, and backpropagates).
        Online algorithms override it to generate and score before calling ``step`` on the
        batch they built. Returns the detached loss."""
        return step(model, inputs)

    def callbacks(self, options: Any, run: RunContext) -> list:
        """Extra ``transformers.TrainerCallback`` objects (e.g. to add metrics to each log)."""
        return []


class Extension(Member):
    """An extension: changes training without owning it. A run applies any number, in the
    order of its ``extensions:`` list. Each part below is optional; the defaults change nothing.

    * rows: :meth:`transform_rows` (augmentation) before formatting;
    * examples: :meth:`transform_examples` (ordering, sampling, replay) after formatting;
    * the model: :meth:`prepare` after the method and objective (hooks, snapshots);
    * the loss: :meth:`compute_loss` wraps the objective's loss (extra terms, perturbations);
    * the optimizer: :meth:`parameter_groups`;
    * the loop: :meth:`callbacks`."""

    family: ClassVar[str] = "extensions"
    #: Data tasks it applies to.
    tasks: ClassVar[frozenset[str]] = frozenset(DATA_TASKS)
    #: Whether the order of the training examples it returns is the order to train in
    #: (tunery then samples sequentially instead of shuffling).
    keeps_order: ClassVar[bool] = False
    #: Whether its loss needs the model's logits (tunery then does not use the chunked loss).
    needs_logits: ClassVar[bool] = False

    def check(self, options: Any, run: RunContext) -> None:
        """Refuse impossible combinations before any weights load (raise IncompatibleError)."""

    def transform_rows(self, rows: list, options: Any, run: RunContext, split: str) -> list:
        """Rows (:class:`tunery.data.Row`) of a split (``"train"`` or ``"eval"``) before the
        formatter sees them. Return new rows; never change evaluation data unless that is the point.
        A run whose extension defines it reads the whole split into memory first (rows otherwise
        stream from the files)."""
        return rows

    def transform_examples(self, examples: list[dict], options: Any, run: RunContext, split: str) -> list[dict]:
        """Formatted examples of a split, before packing and training (reorder, resample, add).
        An extension that defines it gets the whole split as a list in memory (without it, the
        examples stay memory-mapped: see docs/performance.md, "Data at scale")."""
        return examples

    def prepare(self, model: Any, options: Any, run: RunContext) -> Any:
        """Adjust the model after the method and objective prepared it; return it."""
        return model

    def compute_loss(self, inner: Any, model: Any, inputs: dict, options: Any, run: RunContext) -> Any:
        """The loss of one batch. ``inner(model, inputs)`` computes the loss without this
        extension (the objective and the extensions listed before it);
        ``inner(model, inputs, return_outputs=True)`` returns ``(loss, outputs)`` with the
        model outputs (logits) where the objective has them. Default: ``inner(model, inputs)``."""
        return inner(model, inputs)

    def parameter_groups(self, model: Any, options: Any, run: RunContext) -> list[dict] | None:
        """Optimizer parameter groups (``[{"params": [...], "lr": ...}, ...]``) covering every
        trainable parameter, or ``None`` to leave them to the next extension / the default."""
        return None

    def callbacks(self, options: Any, run: RunContext) -> list:
        """Extra ``transformers.TrainerCallback`` objects."""
        return []


class Formatter(Member):
    """A data formatter: turns one raw row into model-ready examples."""

    family: ClassVar[str] = "formatters"
    #: The data task of the examples this formatter produces.
    task: ClassVar[str] = "causal_lm"
    #: ``data.truncation`` when a run does not set it: ``"right"`` keeps the start of a long
    #: example; ``"left"`` keeps its end (preference pairs: the responses, cutting the prompt).
    default_truncation: ClassVar[str] = "right"

    def format(self, row: Mapping[str, Any], tokenizer: Any, options: Any, run: RunContext) -> dict | list[dict]:
        """Return one example (or a list, e.g. windows of a long text) for ``row``.

        Raise :class:`tunery.RowError` with a short reason for a bad row; the pipeline adds the
        file and row number. Never drop a row silently. A formatter that defines
        :meth:`format_batch` instead gets this for free (its entry for the one row)."""
        if type(self).format_batch is Formatter.format_batch:
            raise NotImplementedError(f"formatter '{self.name}' defines neither format nor format_batch")
        example = self.format_batch([row], tokenizer, options, run)[0]
        if isinstance(example, RowError):
            raise example
        return example

    def format_batch(self, rows: list[Mapping[str, Any]], tokenizer: Any, options: Any,
                     run: RunContext) -> list[dict | list[dict] | RowError]:
        """What :meth:`format` gives for each of ``rows`` (one entry per row, in order; a bad row's
        entry is its :class:`tunery.RowError`, returned). The pipeline calls this with a chunk of
        rows; the default calls :meth:`format` row by row. Define it instead of :meth:`format` to
        tokenize the rows together (:func:`tunery.encode_batch`): faster for large data sets."""
        out: list = []
        for row in rows:
            try:
                out.append(self.format(row, tokenizer, options, run))
            except RowError as exc:
                out.append(exc)
        return out

    def prepare_rows(self, rows: list, options: Any, run: RunContext, split: str) -> list:
        """Reorder, select or tag the rows of a split (``"train"`` or ``"eval"``) before
        :meth:`format` sees them; ``rows`` are :class:`tunery.data.Row` (values and source).
        The default keeps them as they are; ``multitask`` uses it to mix its data sets. A formatter
        that defines it (or ``label_names``) gets the whole split in memory; without it, rows
        stream from the files and a split of any size is formatted in constant memory."""
        return rows

    def label_names(self, rows: list[Mapping[str, Any]], options: Any) -> list[str] | None:
        """Classification and token classification: the ordered label names found in (or
        configured for) the data; saved with the run (``labels.json``)."""
        return None

    def read_file(self, path: str, options: Any, problems: list) -> Iterator[Any] | None:
        """Rows (:class:`tunery.data.Row`, each with its file and line) of a data file this
        formatter reads itself, e.g. CoNLL files; unreadable parts are appended to ``problems``
        (:class:`tunery.data.Problem`). ``None`` (the default) lets tunery read the file by its suffix."""
        return None


class Quantizer(Member):
    """A quantizer: how the base weights are loaded and stored."""

    family: ClassVar[str] = "quantizers"
    #: Whether the weights end up quantized (methods with ``accepts_quantized=False`` refuse it).
    quantizes: ClassVar[bool] = True

    def check(self, options: Any, run: RunContext) -> None:
        """Refuse an unusable platform or a missing library before any weights load."""

    def load_kwargs(self, options: Any, keep_modules: list[str], run: RunContext) -> dict:
        """Extra keyword arguments for ``from_pretrained`` (e.g. ``quantization_config``).
        ``keep_modules`` must stay unquantized (fresh heads, fully trained modules)."""
        return {}

    def after_load(self, model: Any, options: Any) -> Any:
        """Adjust the base model right after it loads, for training and for reloading a run alike
        (e.g. pin a kernel choice so a reloaded run computes exactly as in training); return it."""
        return model

    def prepare(self, model: Any, options: Any, run: RunContext) -> Any:
        """Prepare the loaded model for training (e.g. k-bit preparation); return it."""
        return model


@dataclasses.dataclass
class EvalResult:
    """What an evaluator may return instead of a plain metrics mapping, for error analysis.

    ``metrics``: plain numbers, names without the evaluator prefix. ``worst``: the worst examples
    (highest loss, wrong predictions, lowest scores), worst first, as readable JSON objects.
    ``records``: one JSON object per example when the outputs are worth keeping (generations).
    ``details``: other JSON results, e.g. ``{"confusion_matrix": {"labels": [...], "matrix": [[...]]}}``.
    The run writes all but ``metrics`` to ``evaluations/<phase>.json`` and shows them in ``report.md``."""

    metrics: dict[str, Any]
    worst: list[dict] = dataclasses.field(default_factory=list)
    records: list[dict] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class Evaluator(Member):
    """An evaluator: measures a model on data."""

    family: ClassVar[str] = "evaluators"
    #: Data tasks this evaluator can measure.
    tasks: ClassVar[frozenset[str]] = frozenset(DATA_TASKS)
    #: Whether a run that names no evaluators uses this one (for the tasks it handles).
    default: ClassVar[bool] = False
    #: Whether it measures the run's evaluation examples; ``False`` for an evaluator that reads
    #: its own data (named in its options), which then runs even when the run has no eval split.
    uses_run_data: ClassVar[bool] = True

    def evaluate(self, model: Any, dataset: Any, options: Any, run: RunContext) -> dict[str, Any] | EvalResult:
        """Return metrics (plain numbers; names without the evaluator prefix) for ``dataset``
        (a list of examples from the run's formatter), or an :class:`EvalResult` that also
        carries the worst examples and per-example records."""
        raise NotImplementedError


class Reward(Member):
    """A reward source for online objectives (``grpo``, ``rloo``): scores generated completions.

    The scoring follows TRL's reward-function convention: ``prompts`` and ``completions`` are
    texts (a chat prompt is its list of messages), and ``columns`` holds the other data columns
    of each prompt's row (e.g. a reference answer), one list entry per completion. A run names
    it in its objective's options: ``rewards: [{name: exact_match, weight: 1.0}]``; the keys
    besides ``name`` and ``weight`` are this member's :attr:`Options`."""

    family: ClassVar[str] = "rewards"

    def score(self, prompts: list, completions: list[str], columns: dict[str, list], options: Any,
              run: RunContext) -> list[float]:
        """One reward per completion (``None`` where this reward does not apply)."""
        raise NotImplementedError


class Constraint(Member):
    """A decoding constraint: steers generation (``tunery generate --constraint NAME:ARG``,
    ``generation.constraints``, the ``generation`` evaluator's ``constraints`` option,
    ``Engine.generate(constraints=[...])``). Any number combine; each part below is optional.

    * :meth:`logits_processors` -- ``transformers.LogitsProcessor`` objects (mask tokens);
    * :meth:`stopping_criteria` -- ``transformers.StoppingCriteria`` objects;
    * :meth:`generate_kwargs` -- plain ``generate`` settings (``repetition_penalty``...);
    * :meth:`finish` -- the decoded text after generation (cut at a stop string);
    * :meth:`satisfied` -- whether a text keeps the constraint (reported by the evaluator)."""

    family: ClassVar[str] = "constraints"
    #: The option that the short form ``NAME:ARG`` sets (see :meth:`from_argument`).
    argument: ClassVar[str] = ""

    def from_argument(self, arg: str, where: str) -> dict:
        """The raw options for the short form ``NAME:ARG``."""
        if not self.argument:
            raise ConfigError(f"{where}: constraint '{self.name}' takes no argument; use '{self.name}' alone")
        return {self.argument: arg}

    def logits_processors(self, options: Any, tokenizer: Any, vocab_size: int, max_new_tokens: int) -> list:
        """Fresh logits processors for one ``generate`` call (a batch of left-padded prompts);
        ``vocab_size`` is the width of the model's logits."""
        return []

    def stopping_criteria(self, options: Any, tokenizer: Any) -> list:
        return []

    def generate_kwargs(self, options: Any) -> dict:
        return {}

    def finish(self, text: str, options: Any) -> str:
        return text

    def satisfied(self, text: str, options: Any) -> bool | None:
        """Whether ``text`` (a finished output) keeps this constraint; ``None``: not checkable."""
        return None


FAMILIES = {cls.family: cls for cls in (Method, Objective, Extension, Formatter, Quantizer, Evaluator, Reward,
                                           Constraint)}
