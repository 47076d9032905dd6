"""Tiny, deterministic models and tokenizers for tests, built offline in well under a second.

torch, transformers and tokenizers are imported inside the functions only: this module is
imported by a pytest plugin and must stay cheap to import.
"""

from __future__ import annotations

import os
import shutil
import uuid

# Bump when the output of a build changes, so cached folders get rebuilt.
BUILD_VERSION = "2"
MARKER = ".tunery-tiny-complete"

EOS = "<|endoftext|>"
PAD = "<pad>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Byte-level BPE covers every byte, so no <unk> is needed. The order fixes the ids: 0..3.
SPECIAL_TOKENS = [EOS, PAD, IM_START, IM_END]

# Like SmolLM2's, without the default system prompt; {% generation %} marks what the
# assistant says, so that return_assistant_tokens_mask=True works.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = """\
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Once upon a time, in a small village by the sea, there lived an old fisherman and his wife.
Every morning he walked down to the harbour, pushed his boat into the water and sailed out.
She stayed at home, baked bread, tended the garden and sold eggs at the market on Saturdays.
The weather today is sunny with a high of 24 degrees and a light breeze from the west.
Tomorrow it will rain in the morning; the afternoon should be dry, but cooler (around 17 C).
Please remember to bring your umbrella, your keys, and your phone before leaving the house!
Can you believe it? The train was 45 minutes late again, so I missed the 9:15 meeting.
In 1969, astronauts landed on the Moon. In 2012, a rover called Curiosity reached Mars.
The recipe needs 2 cups of flour, 3 eggs, 1/2 cup of sugar, 250 ml of milk and a pinch of salt.
Mix the dry ingredients first, then add the eggs and milk, and stir until the batter is smooth.
Bake at 180 degrees for 35 to 40 minutes, or until a knife comes out clean.
Machine learning models learn patterns from data. A language model predicts the next word.
Fine-tuning adapts a pre-trained model to a new task with a smaller, focused data set.
Training loss should go down; if it goes up, try a lower learning rate or a larger batch size.
Python is a popular programming language. It is easy to read, and it has many libraries.
def add(a, b): return a + b  # adds two numbers, e.g. add(2, 3) == 5
for i in range(10): print(i * i)  # prints 0, 1, 4, 9, 16, 25, 36, 49, 64, 81
User: What is the capital of France?
Assistant: The capital of France is Paris.
User: How many days are there in a week?
Assistant: There are 7 days in a week: Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday.
### Instruction:
Summarize the following text in one sentence.
### Input:
The meeting covered the budget for next year, the hiring plan and the new office in Berlin.
### Response:
The meeting discussed next year's budget, hiring and the new Berlin office.
### Instruction:
Translate "good morning" into Spanish.
### Response:
"Buenos dias" means good morning in Spanish.
### Instruction:
Write a short poem about the autumn.
### Response:
Golden leaves fall slowly down, painting red the quiet town; the wind is cold, the days are short, and birds fly south to a warmer port.
Question: What is 12 plus 30? Answer: 42.
Question: If a shirt costs $20 and is 25% off, what is the price? Answer: $15.
Question: Is the sentence "I loved this film" positive or negative? Answer: positive.
Question: Is the sentence "The food was cold and bland" positive or negative? Answer: negative.
Review: An absolutely wonderful experience, the staff were kind and the room was clean. Label: positive
Review: Terrible service, we waited for an hour and nobody came. Label: negative
Review: It was okay, nothing special, but not bad either. Label: neutral
Dear Sir or Madam, I am writing to ask about the order number 58213, which has not arrived yet.
Thank you for your help. Best regards, Anna.
The library opens at 8 a.m. and closes at 10 p.m.; on Sundays it is closed.
Her phone number is 555-0142 and her e-mail address is anna@example.com.
Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level.
The Earth orbits the Sun once every 365.25 days, and the Moon orbits the Earth every 27.3 days.
Children were playing football in the park while their parents talked on the benches.
"Where are you going?" she asked. "To the station," he said, "I have a train to catch."
Good software is tested, documented and simple; complex software is hard to change.
Read the error message carefully: it often tells you exactly what went wrong, and where.
Numbers: zero, one, two, three, four, five, six, seven, eight, nine, ten, 11, 12, 100, 1000.
Punctuation: commas, periods. Question marks? Exclamation marks! Colons: semicolons; dashes - and (brackets).
"""


def _text(text: str | None) -> str:
    return CORPUS if text is None else text


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def build_tokenizer(folder, text: str | None = None):
    """Train a byte-level BPE tokenizer (~750 ids) with ChatML specials, save it to folder.

    ``<|endoftext|>`` is bos and eos (no bos is added when encoding, as with GPT-2 or
    SmolLM2), ``<pad>`` pads. Returns the PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=768,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_lines(_text(text)), trainer=trainer)

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    hf.chat_template = CHAT_TEMPLATE
    if folder is not None:
        hf.save_pretrained(os.fspath(folder))
    return hf


def build_causal_lm(
    folder,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    seed: int = 0,
    with_tokenizer: bool = True,
) -> str:
    """Save a tiny random LlamaForCausalLM (safetensors) and its tokenizer to folder."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = os.fspath(folder)
    tok = build_tokenizer(folder if with_tokenizer else None)
    eos, pad, im_end = (tok.convert_tokens_to_ids(t) for t in (EOS, PAD, IM_END))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    # Chat turns end with <|im_end|>: generation stops at either.
    model.generation_config = GenerationConfig(
        bos_token_id=eos, eos_token_id=[eos, im_end], pad_token_id=pad
    )
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def build_wordpiece_tokenizer(folder, text: str | None = None):
    """Train a lower-casing BERT-style WordPiece tokenizer ([CLS] x [SEP]), save it to folder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=768, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(_lines(_text(text)), trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    if folder is not None:
        hf.save_pretrained(os.fspath(folder))
    return hf


def build_encoder(folder, *, layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0) -> str:
    """Save a tiny random BertModel and a WordPiece tokenizer to folder.

    Load it with AutoModelForSequenceClassification.from_pretrained(folder, num_labels=N)
    (the classifier head is then freshly initialised)."""
    import torch
    from transformers import BertConfig, BertModel

    folder = os.fspath(folder)
    tok = build_wordpiece_tokenizer(folder)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


# English -> "German" word pairs for toy translation tests (the tiny T5's vocabulary covers them).
TOY_DICTIONARY = {
    "red": "rot", "blue": "blau", "green": "gruen", "big": "gross", "small": "klein", "old": "alt",
    "dog": "hund", "cat": "katze", "house": "haus", "tree": "baum", "car": "auto", "bird": "vogel",
    "runs": "rennt", "sleeps": "schlaeft", "eats": "isst", "sings": "singt",
}


def build_word_tokenizer(folder, text: str | None = None, words: list[str] = ()):
    """A lower-casing word-level tokenizer in T5's shape (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2;
    ``</s>`` appended to every sequence), from the words of ``text`` and ``words``; saved to folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    splitter = pre_tokenizers.WhitespaceSplit()
    found = [w for line in _lines(_text(text)) for w, _ in splitter.pre_tokenize_str(line.lower())]
    found = [w for line in found for w in _split_punctuation(line)]
    vocab = {t: i for i, t in enumerate(dict.fromkeys([*specials, *found, *(w.lower() for w in words)]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                 model_max_length=512, clean_up_tokenization_spaces=False)
    if folder is not None:
        hf.save_pretrained(os.fspath(folder))
    return hf


def _split_punctuation(word: str) -> list[str]:
    import re

    return [part for part in re.split(r"([^\w\s])", word) if part]


def build_seq2seq(folder, *, layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0) -> str:
    """Save a tiny random T5ForConditionalGeneration (``layers`` encoder and decoder layers, T5's
    32 relative-position buckets) and a word-level tokenizer (the corpus and :data:`TOY_DICTIONARY`)
    to folder."""
    import torch
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    folder = os.fspath(folder)
    words = [w for pair in TOY_DICTIONARY.items() for w in pair]
    tok = build_word_tokenizer(folder, words=[*words, "translate", "english", "to", "german", ":"])
    config = T5Config(vocab_size=len(tok), d_model=hidden, d_kv=hidden // heads, d_ff=2 * hidden, num_layers=layers,
                      num_decoder_layers=layers, num_heads=heads, relative_attention_num_buckets=32,
                      dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def _is_complete(folder: str) -> bool:
    try:
        with open(os.path.join(folder, MARKER)) as f:
            return f.read().strip() == BUILD_VERSION
    except OSError:
        return False


def _cached(build, root, name: str, kwargs: dict) -> str:
    """Build into root/name once (atomically, safe with parallel workers); reuse after."""
    if kwargs:
        name += "-" + "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
    target = os.path.join(os.fspath(root), name)
    if _is_complete(target):
        return target
    os.makedirs(os.fspath(root), exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    build(tmp, **kwargs)
    with open(os.path.join(tmp, MARKER), "w") as f:
        f.write(BUILD_VERSION)
    if os.path.isdir(target) and not _is_complete(target):
        shutil.rmtree(target, ignore_errors=True)  # stale or half-built
    try:
        os.rename(tmp, target)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_complete(target):
            raise
    return target


def cached_causal_lm(root, **kwargs) -> str:
    """build_causal_lm into root/causal_lm (name includes any kwargs) unless already there."""
    return _cached(build_causal_lm, root, "causal_lm", kwargs)


def cached_encoder(root, **kwargs) -> str:
    """build_encoder into root/encoder (name includes any kwargs) unless already there."""
    return _cached(build_encoder, root, "encoder", kwargs)


def cached_seq2seq(root, **kwargs) -> str:
    """build_seq2seq into root/seq2seq (name includes any kwargs) unless already there."""
    return _cached(build_seq2seq, root, "seq2seq", kwargs)
