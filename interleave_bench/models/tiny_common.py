"""What the tiny test models share: a small corpus of our own sentences and an in-memory BPE."""

from __future__ import annotations

import itertools
from typing import Any

SUBJECTS = ["the cat", "a red fox", "my friend", "the chef", "a small robot", "the painter"]
VERBS = ["draws", "looks at", "cooks", "paints", "finds", "describes"]
OBJECTS = ["a blue house", "the green garden", "an old map", "two apples", "the night sky"]


def sentences(endings: list[str], extra: list[str]) -> list[str]:
    """Every subject/verb/object/ending combination (a few hundred lines) plus ``extra``."""
    lines = [
        f"{s} {v} {o}{e}".capitalize()
        for s, v, o, e in itertools.product(SUBJECTS, VERBS, OBJECTS, endings)
    ]
    return lines + extra


def train_bpe(corpus: list[str], special_tokens: list[str], vocab_size: int) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained in memory; specials get the first ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok
