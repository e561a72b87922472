"""One warm-up example and its checks, shared by the JSONL/HF readers (``warmup_data``) and the
published-format loaders (``warmup_sources``) without either importing the other."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..media import check_image_file
from ..types import Interleaved, Sample, SchemaError, Segment

KINDS: tuple[str, ...] = ("interleaved", "understanding", "t2i")


class WarmupDataError(ValueError):
    """Unusable warm-up data; the message names the source, row and field."""


@dataclass(frozen=True)
class Example:
    """One warm-up example: a sample (gold = the answer) and its kind."""

    kind: str
    sample: Sample
    where: str  # "file.jsonl line 3" / "dataset row 3", for errors raised later


def derive_kind(gold: Interleaved, inp: Interleaved) -> str:
    """gold text + images -> interleaved; text only (with an input image) -> understanding;
    a single image -> t2i; several images and no text -> interleaved."""
    n_img, n_txt = len(gold.images), len(gold.texts)
    if n_img and n_txt:
        return "interleaved"
    if n_img == 1:
        return "t2i"
    if n_img:
        return "interleaved"
    if inp.images:
        return "understanding"
    raise ValueError("gold is text only and the input has no image: declare the source's kind")


def _check_kind(kind: str, gold: Interleaved) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "t2i" and (gold.texts or len(gold.images) != 1):
        raise ValueError(f"a t2i answer is exactly one image, got structure {gold.structure()}")
    if kind == "understanding" and gold.images:
        raise ValueError("an understanding answer is text only, but gold holds images")


def _resolve_images(items: Interleaved, root: Path, field: str) -> Interleaved:
    """Image paths relative to ``root``; each must be a readable image (``missing`` input images
    are kept, ``build_prompt`` leaves them out as eval does)."""
    out = []
    for i, seg in enumerate(items):
        ref = seg.image
        if ref is None or (ref.missing and field == "input"):
            out.append(seg)
            continue
        where = f"{field}[{i}].image"
        if ref.path is None or ref.missing:
            raise SchemaError(f"{where}.path", "a warm-up image needs a path to a file")
        path = Path(ref.path)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise SchemaError(f"{where}.path", f"no such file {path}")
        if (reason := check_image_file(path)) is not None:
            raise SchemaError(f"{where}.path", reason)
        out.append(Segment.of_image(replace(ref, path=str(path), source=ref.source or ref.path)))
    return Interleaved(out)


def _example(sample: Sample, kind: str | None, root: Path, where: str) -> Example:
    if sample.gold is None or not len(sample.gold):
        raise SchemaError("gold", "a warm-up example needs a non-empty gold answer")
    gold = _resolve_images(sample.gold, root, "gold")
    inp = _resolve_images(sample.input, root, "input")
    try:
        kind = kind or derive_kind(gold, inp)
        _check_kind(kind, gold)
    except ValueError as e:
        raise SchemaError("gold", str(e)) from None
    return Example(kind, replace(sample, input=inp, gold=gold), where)
