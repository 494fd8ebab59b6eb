"""A byte-level BPE trained on the ``tldr-synth`` corpus, saved as a ``transformers`` tokenizer.

It behaves like Pythia's GPT-NeoX tokenizer where the implementation details care: byte-level (any text
round-trips), no prefix space, so ``" TL;DR"`` and ``"TL;DR"`` are different tokens, and a leading space on a
reference summary changes its first token (DETAILS.md §2, detail 5). ``<|endoftext|>`` serves as EOS, BOS
and UNK as in Pythia; ``[PAD]`` is a distinct pad token, as sfd adds to Pythia (detail 4).

One difference is deliberate (the embedded world's calibration, docs/tldr-synth.md "Fact tokens"): an age
(``24F``) and a duration (`` 2 years``) are kept whole by the pre-tokenizer, so each becomes one token. Copying a
fact from the post is then one decision, as it is for a word such as a feeling; split into ``24`` ``F`` or
``2`` `` years``, the second piece needs an induction step that a model of a few hundred thousand parameters gets
wrong about half the time, and a half-copied fact is a *wrong* fact to the judge. Every other piece of text is
split exactly as by GPT-2's pattern (the one Pythia's tokenizer uses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "[PAD]"
# Whole facts first (an age right before ")" or a word end; a duration with its leading space), then GPT-2's pattern.
FACT_PATTERN = r"\d{1,2}[FM]\b| ?\d{1,2} (?:years?|months?|weeks?)\b"
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """GPT-2's split with whole facts, then the byte-level alphabet (its own regex off: the split is done)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(f"{FACT_PATTERN}|{GPT2_PATTERN}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; the same texts in the same order give the same tokenizer."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizer()
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],  # ids 0 and 1
        # all 256 byte symbols, so that text unseen in training still encodes without an unknown token
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return _wrap(bpe)


def _wrap(bpe: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        # decode must invert encode exactly (no " ." → "." clean-up)
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerFast:
    """Load a tokenizer written by ``save_pretrained`` (ours, or Pythia's downloaded copy)."""
    return PreTrainedTokenizerFast.from_pretrained(str(path))
