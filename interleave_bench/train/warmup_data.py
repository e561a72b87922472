"""Warm-up (SFT) data: three example kinds, JSONL or Hugging Face sources, the answer layout, a mixer.

Kinds (the hybrid mix of the unified interleaved GRPO recipe): ``interleaved`` (prompt -> text and
images), ``understanding`` (image(s) + question -> text) and ``t2i`` (caption -> one image). Each
example is a ``Sample`` whose ``gold`` is the answer to teach; a source may declare its kind, or
it is derived from the gold (see ``derive_kind``).

Bad input fails at load time, before any model work, with the file, the line (or dataset row)
and the field, because a training run that dies at step 500 on row 9000 wastes the run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..media import ImageStore
from ..types import ImageRef, Interleaved, Sample, SchemaError, Segment
from .warmup_examples import KINDS, Example, WarmupDataError, _example, derive_kind  # noqa: F401

TINY = "tiny"
#: the paper's Stage I proportions (0.3M interleaved : 1M understanding : 1M text-to-image);
#: ``MixSampler`` normalises, so a recipe may write ratios or counts
PAPER_MIX: dict[str, float] = {"interleaved": 0.3, "understanding": 1.0, "t2i": 1.0}


def load_jsonl(path: str | Path, kind: str | None = None) -> list[Example]:
    """One ``Sample.to_dict()`` per line (blank lines skipped); image paths relative to the file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WarmupDataError(f"{path}: cannot read ({e})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise WarmupDataError(f"{where}: not JSON ({e.msg})") from None
        try:
            out.append(_example(Sample.from_dict(row), kind, path.parent, where))
        except SchemaError as e:
            raise WarmupDataError(f"{where}: field {e.field}: {e.message}") from None
    if not out:
        raise WarmupDataError(f"{path}: no examples")
    return out


# --------------------------------------------------------------------------- Hugging Face


def _hf_images(value: Any, store: ImageStore, root: Path | None) -> list[Segment]:
    """A dataset cell holding an image, a list of them, a path, or ``{bytes, path}``."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _hf_images(v, store, root)]
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return [Segment.of_image(store.put_bytes(value["bytes"]))]
        value = value.get("path")
    if isinstance(value, str):
        path = Path(value)
        if not path.is_absolute() and root is not None:
            path = root / path
        return [Segment.of_image(store.put_file(path))]
    if hasattr(value, "save"):  # a PIL image (the datasets Image feature decodes to one)
        return [Segment.of_image(store.put_image(value.convert("RGB")))]
    raise ValueError(f"expected an image, a path or a list of them, got {type(value).__name__}")


def _hf_segments(value: Any, field: str) -> list[Segment]:
    """A text cell, or a list of segments in our schema (also as a JSON string)."""
    if value is None:
        return []
    if isinstance(value, str) and value.lstrip().startswith("["):
        value = json.loads(value)
    if isinstance(value, str):
        return [Segment.of_text(value)] if value else []
    return list(Interleaved.from_list(value, field))


def load_hf(spec: Mapping[str, Any], store: ImageStore) -> list[Example]:
    """``datasets.load_dataset(spec["hf"], split=...)`` with a column mapping ``columns``:
    ``input`` (text or segment list), ``images`` (prompt images, placed before the input),
    ``gold`` (text or segment list), ``gold_images`` (placed after the gold), ``id``.
    Decoded images go into ``store`` (content-addressed PNG files)."""
    import datasets

    name = str(spec["hf"])
    cols = {"input": "input", "gold": "gold", **dict(spec.get("columns") or {})}
    local = Path(name).expanduser()
    root = local if local.is_dir() else None
    try:
        if root is not None and (root / "state.json").is_file():
            ds = datasets.load_from_disk(str(root))
            ds = ds[spec.get("split", "train")] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(name, spec.get("subset"), split=spec.get("split", "train"))
    except Exception as e:  # noqa: BLE001 - any datasets failure becomes one clear message
        raise WarmupDataError(f"{name}: cannot load ({type(e).__name__}: {e})") from None
    missing = sorted({c for c in cols.values() if c} - set(ds.column_names))
    if missing:
        raise WarmupDataError(
            f"{name}: no column(s) {', '.join(missing)} (has: {', '.join(ds.column_names)})"
        )
    limit = spec.get("limit")
    out = []
    for i, row in enumerate(ds):
        if limit is not None and i >= int(limit):
            break
        where, field = f"{name} row {i}", ""
        try:
            field = cols.get("images") or ""
            inp = _hf_images(row[field], store, root) if field else []
            field = cols["input"]
            inp += _hf_segments(row[field], "input")
            field = cols["gold"]
            gold = _hf_segments(row[field], "gold")
            field = cols.get("gold_images") or ""
            gold += _hf_images(row[field], store, root) if field else []
            field = "gold"
            sample = Sample(
                id=str(row[cols["id"]]) if cols.get("id") else f"{name}#{i}",
                benchmark=str(spec.get("benchmark", "warmup")),
                category=spec.get("category"),
                input=Interleaved(inp),
                gold=Interleaved(gold),
            )
            out.append(_example(sample, spec.get("kind"), root or Path("."), where))
        except SchemaError as e:
            raise WarmupDataError(f"{where}: field {e.field}: {e.message}") from None
        except (ValueError, OSError) as e:
            raise WarmupDataError(f"{where}: field {field}: {e}") from None
    return out


def load_sources(sources: Iterable[Any], workdir: Path) -> list[Example]:
    """Every source of a recipe's ``data``: ``"tiny"``, a JSONL path, ``{jsonl: PATH, kind: K}``,
    ``{hf: NAME_OR_PATH, split, subset, kind, columns, benchmark, category, limit}`` or a
    published format ``{format: activitynet_captions|genhowto|openstory|emova|journeydb, path,
    ...}`` (``train.warmup_sources``)."""
    examples: list[Example] = []
    for src in sources:
        if src == TINY or (isinstance(src, Mapping) and src.get("tiny")):
            for kind, path in write_tiny_dataset(workdir / "data" / TINY).items():
                examples += load_jsonl(path, kind)
        elif isinstance(src, (str, Path)):
            examples += load_jsonl(src)
        elif isinstance(src, Mapping) and "jsonl" in src:
            examples += load_jsonl(src["jsonl"], src.get("kind"))
        elif isinstance(src, Mapping) and "hf" in src:
            examples += load_hf(src, ImageStore(workdir / "data" / "images"))
        elif isinstance(src, Mapping) and "format" in src:
            from .warmup_sources import load_source  # the published formats (paper's Stage I)

            examples += load_source(src, workdir)
        else:
            raise WarmupDataError(
                f"data source {src!r}: expected tiny, a path, {{jsonl}}, {{hf}} or {{format}}"
            )
    return examples


# --------------------------------------------------------------------------- answer layout

Token = tuple[int, bool, bool]  # (token id, is an image token, in the loss)


def layout(
    gold: Interleaved,
    text: Callable[[str], list[int]],
    image_span: Callable[[ImageRef], list[Token]],
    eos: int,
) -> list[list[Token]]:
    """An answer as the decode loop would emit it, one span per segment plus EOS. The first text
    follows the "Assistant:" cue, so it gets a leading space; the loop strips text when decoding."""
    spans = []
    for k, seg in enumerate(gold):
        if seg.text is not None:
            body = (" " if k == 0 else "") + seg.text.strip()
            spans.append([(t, False, True) for t in text(body)])
        elif seg.image is not None:
            spans.append(image_span(seg.image))
    return [*spans, [(eos, False, True)]]


@dataclass
class Forced:
    """A teacher-forced answer: ``image`` marks image tokens, ``target`` the positions in the loss."""

    prompt_inputs: Any
    tokens: list[int]
    image: list[bool]
    target: list[bool]
    truncated: bool = False

    @classmethod
    def cut(cls, prompt_inputs: Any, spans: list[list[Token]], max_tokens: int) -> Forced:
        """Join ``spans``, keeping whole text tokens up to ``max_tokens`` but never part of an
        image: an image span that does not fit is dropped with everything after it."""
        toks: list[Token] = []
        for span in spans:
            room = max_tokens - len(toks)
            if len(span) > room and any(img for _, img, _ in span):
                break
            toks += span[:room]
        full = sum(len(s) for s in spans)
        return cls(
            prompt_inputs,
            [t for t, _, _ in toks],
            [i for _, i, _ in toks],
            [g for _, _, g in toks],
            truncated=len(toks) < full,
        )

    @property
    def n_text(self) -> int:
        return sum(t and not i for t, i in zip(self.target, self.image, strict=True))

    @property
    def n_image(self) -> int:
        return sum(t and i for t, i in zip(self.target, self.image, strict=True))


# --------------------------------------------------------------------------- mixing


class MixSampler:
    """Draws (kind, index) pairs: the kind from the normalised ``mix``, then an example of that
    kind uniformly. A step's draw depends only on (seed, step), so a resumed run repeats it."""

    def __init__(self, sizes: Mapping[str, int], mix: Mapping[str, float], seed: int) -> None:
        unknown = sorted(set(mix) - set(KINDS))
        if unknown:
            raise ValueError(f"mix: unknown kind(s) {', '.join(unknown)} (kinds: {KINDS})")
        if any(float(w) < 0 for w in mix.values()):
            raise ValueError("mix: ratios must be >= 0")
        active = {k: float(w) for k, w in mix.items() if float(w) > 0}
        empty = [k for k in active if not sizes.get(k)]
        if empty:
            raise ValueError(f"mix asks for {', '.join(empty)} but the data has no such examples")
        if not active:
            raise ValueError("mix: at least one ratio must be > 0")
        total = sum(active.values())
        self.kinds = list(active)
        self.weights = [active[k] / total for k in self.kinds]
        self.sizes, self.seed = dict(sizes), seed

    def draw(self, step: int, n: int) -> list[tuple[str, int]]:
        rng = random.Random(f"warmup:{self.seed}:{step}")
        kinds = rng.choices(self.kinds, weights=self.weights, k=n)
        return [(k, rng.randrange(self.sizes[k])) for k in kinds]


# --------------------------------------------------------------------------- tiny bundled data

_COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}
_SHAPES = ("square", "stripe")


def _tiny_png(path: Path, color: str, shape: str) -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (32, 32), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    box = (8, 8, 23, 23) if shape == "square" else (0, 12, 31, 19)
    draw.rectangle(box, fill=_COLORS[color])
    img.save(path, format="PNG")
    return path.name


def write_tiny_dataset(dest: Path) -> dict[str, Path]:
    """A few rows of each kind with 32x32 PNGs (a coloured square or stripe), rewritten
    identically each time, so tiny recipes and tests need no download. Returns kind -> file."""
    dest.mkdir(parents=True, exist_ok=True)
    images = {(c, s): _tiny_png(dest / f"{c}-{s}.png", c, s) for c in _COLORS for s in _SHAPES}

    def seg_t(text: str) -> dict[str, Any]:
        return {"type": "text", "text": text}

    def seg_i(color: str, shape: str) -> dict[str, Any]:
        return {"type": "image", "image": {"path": images[(color, shape)]}}

    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for n, color in enumerate(_COLORS):
        other = list(_COLORS)[(n + 1) % len(_COLORS)]
        rows["interleaved"].append(
            {
                "input": [seg_t(f"The painter draws a {color} house.")],
                "gold": [
                    seg_t(f"First the {color} square."),
                    seg_i(color, "square"),
                    seg_t(f"Then the {other} stripe."),
                    seg_i(other, "stripe"),
                ],
                "benchmark": "mmie",
                "category": "situational_analysis",
            }
        )
        rows["understanding"].append(
            {
                "input": [seg_i(color, "stripe"), seg_t("What does the image show?")],
                "gold": [seg_t(f"It shows a {color} stripe.")],
            }
        )
        rows["t2i"].append(
            {"input": [seg_t(f"A {color} square.")], "gold": [seg_i(color, "square")]}
        )
    files = {}
    for kind, items in rows.items():
        path = dest / f"{kind}.jsonl"
        lines = [
            json.dumps(
                {
                    "schema_version": 1,
                    "id": f"tiny-{kind}-{i}",
                    "benchmark": "warmup",
                    "metadata": {},
                    **row,
                }
            )
            for i, row in enumerate(items)
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[kind] = path
    return files


def counts(draws: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Examples per kind in a draw (every kind present, zeros included)."""
    out = dict.fromkeys(KINDS, 0)
    for kind, _ in draws:
        out[kind] += 1
    return out
