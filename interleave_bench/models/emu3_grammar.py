"""Emu3's image grammar: the token layout of an image in Emu3's stream as a state machine
(equivalent to a ``prefix_allowed_tokens_fn``), and the special-token ids it needs.

    <|image start|> "H*W" <|image token|> (W visual tokens, <|extra_200|>) x H <|extra_201|> <|image end|>

In text mode visual and structure tokens are banned; after the image start the header, wrapper,
row ends, frame end and image end are forced and every other position holds a visual token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# grammar modes
TEXT, HEADER, GRID, TAIL, DONE = "text", "header", "grid", "tail", "done"
# what a position allows (``Step.kind``); IMAGE also names image spans in traces
TEXT_NO_IMAGE, VISUAL, FORCED, IMAGE = "text_no_image", "visual", "forced", "image"


@dataclass(frozen=True)
class Emu3Vocab:
    """The token ids the grammar needs, read from the processor's tokenizer and the model."""

    boi: int
    eoi: int
    wrapper: int
    eol: int
    eof: int
    eos: frozenset[int]
    visual: tuple[int, ...]  # sorted ids of <|visual token NNNNNN|>
    banned_in_text: tuple[int, ...]  # structure, placeholder, BOS and pad tokens
    vocab_size: int  # logits width; ids past the tokenizer's length are banned in text too
    tokenizer_size: int

    @classmethod
    def from_model(cls, model: Any, processor: Any) -> Emu3Vocab:
        tok = processor.tokenizer
        mapping = model.vocabulary_mapping

        def tid(token: str | None) -> int | None:
            return None if token is None else tok.convert_tokens_to_ids(token)

        gen_eos = model.generation_config.eos_token_id
        eos = {tok.eos_token_id} | set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        eos.discard(None)
        boi, eoi = tid(processor.image_start_token), tid(processor.image_end_token)
        wrapper, eof = tid(processor.fake_token_around_image), tid(processor.eof_token)
        eol = mapping.eol_token_id
        others = [tid(processor.image_token), tok.bos_token_id, tok.pad_token_id]
        banned = {i for i in [eoi, wrapper, eol, eof, *others] if i is not None} - eos
        if None in (boi, eoi, wrapper, eol, eof):
            raise ValueError("the tokenizer lacks Emu3's image structure tokens")
        return cls(
            boi=boi,
            eoi=eoi,
            wrapper=wrapper,
            eol=eol,
            eof=eof,
            eos=frozenset(eos),
            visual=tuple(mapping.image_tokens),
            banned_in_text=tuple(sorted(banned)),
            vocab_size=model.config.text_config.vocab_size,
            tokenizer_size=len(tok),
        )


@dataclass
class Step:
    """What one position allows: ``forced`` (one token), or a mask ``kind``: ``text`` (image start
    allowed), ``text_no_image`` or ``visual``."""

    forced: int | None = None
    kind: str = TEXT


@dataclass
class ImageGrammar:
    """The interleaving state machine for one answer (see the module docstring).

    ``allowed()`` says what the next position may hold, ``advance(token)`` moves on. The image
    start is allowed in text mode only while fewer than ``max_images`` images were drawn and the
    remaining budget holds a whole image span, so no image is ever cut off.
    """

    vocab: Emu3Vocab
    rows: int
    cols: int
    header: tuple[int, ...]  # the "H*W" tokens
    max_new_tokens: int
    max_images: int
    mode: str = TEXT
    pos: int = 0  # tokens generated so far
    images: int = 0
    _i: int = 0  # index inside the current header / grid / tail
    _masks: dict[tuple[str, torch.device], torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            self.mode = DONE

    @property
    def span_len(self) -> int:
        """Tokens of one image span, image start through image end."""
        return 1 + len(self.header) + 1 + self.rows * (self.cols + 1) + 2

    @property
    def can_start_image(self) -> bool:
        return self.images < self.max_images and self.max_new_tokens - self.pos >= self.span_len

    def allowed(self) -> Step:
        if self.mode == TEXT:
            return Step(kind=TEXT if self.can_start_image else TEXT_NO_IMAGE)
        if self.mode == HEADER:
            return Step(forced=(*self.header, self.vocab.wrapper)[self._i], kind=FORCED)
        if self.mode == GRID:
            last_col = self._i % (self.cols + 1) == self.cols
            return Step(forced=self.vocab.eol, kind=FORCED) if last_col else Step(kind=VISUAL)
        if self.mode == TAIL:
            return Step(forced=(self.vocab.eof, self.vocab.eoi)[self._i], kind=FORCED)
        raise RuntimeError("the answer is complete")

    def advance(self, token: int) -> None:
        self.pos += 1
        if self.mode == TEXT:
            if token == self.vocab.boi:
                self.mode, self._i = HEADER, 0
            elif token in self.vocab.eos:
                self.mode = DONE
        elif self.mode == HEADER:
            self._i += 1
            if self._i == len(self.header) + 1:
                self.mode, self._i = GRID, 0
        elif self.mode == GRID:
            self._i += 1
            if self._i == self.rows * (self.cols + 1):
                self.mode, self._i = TAIL, 0
        elif self.mode == TAIL:
            self._i += 1
            if self._i == 2:
                self.mode, self.images = TEXT, self.images + 1
        if self.pos >= self.max_new_tokens:
            self.mode = DONE

    def resume(self, prompt_ids: list[int]) -> list[int]:
        """Continue an image the prompt opened; return the opening tokens it already holds.

        A prompt built with ``Emu3Processor(..., return_for_image_generation=True)`` (transformers'
        text-to-image recipe) ends with the image start, the "H*W" header and the wrapper: the
        answer then begins with that image's visual tokens. Those opening tokens are prompt, not
        answer, so they cost no budget. A prompt whose last image start is closed (an input
        image) or absent opens nothing and returns ``[]``.
        """
        v = self.vocab
        if self.mode != TEXT or v.boi not in prompt_ids:
            return []
        start = len(prompt_ids) - 1 - prompt_ids[::-1].index(v.boi)
        opening = prompt_ids[start:]
        if v.eoi in opening:
            return []
        expected = [v.boi, *self.header, v.wrapper]
        if opening != expected[: len(opening)]:
            raise ValueError(
                f"the prompt opens an image whose header does not read {self.rows}*{self.cols}; "
                "set image_size to the size the prompt asks for"
            )
        remaining = self.span_len - len(opening)
        if self.max_new_tokens < remaining:
            raise ValueError(
                f"max_new_tokens={self.max_new_tokens} cannot finish the image the prompt opens "
                f"({remaining} tokens)"
            )
        if len(opening) == len(expected):
            self.mode, self._i = GRID, 0
        else:
            self.mode, self._i = HEADER, len(opening) - 1
        return opening

    @property
    def done(self) -> bool:
        return self.mode == DONE

    def replay(self, token_ids: list[int]) -> list[Step]:
        """What each position of a finished answer allowed, for recomputing constrained
        log-probs in a training forward pass (call on a fresh grammar)."""
        steps = []
        for token in token_ids:
            steps.append(self.allowed())
            self.advance(token)
        return steps

    def mask(self, kind: str, device: torch.device) -> torch.Tensor:
        """A boolean vocabulary mask, True where a token is allowed (cached per kind)."""
        key = (kind, device)
        if key not in self._masks:
            v = self.vocab
            m = torch.zeros(v.vocab_size, dtype=torch.bool)
            if kind == VISUAL:
                m[list(v.visual)] = True
            else:
                m[: v.tokenizer_size] = True
                m[list(v.visual) + list(v.banned_in_text)] = False
                m[v.boi] = kind == TEXT
            self._masks[key] = m.to(device)
        return self._masks[key]
