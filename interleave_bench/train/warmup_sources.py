"""Warm-up sources in the on-disk formats the paper's Stage I data is published in.

The paper (arXiv 2603.09538) warms VILA-U up on 0.3M interleaved sequences (ActivityNet Captions
with keyframes, GenHowTo state/action/result triplets, OpenStory++ stories), 1M understanding
samples (EMOVA) and 1M text-to-image pairs (JourneyDB). A recipe names such a source in ``data``
as ``{format: NAME, path: FILE_OR_DIR, ...}``; each loader turns the release's own files into
``Example``s, so nobody has to convert 2.3M rows to our JSONL first.

Every loader is strict on purpose: the first bad row stops the load with
``FILE ROW: field FIELD: what is wrong`` before a model is loaded, because a run that dies on
row 900,000 wastes the run. What was verified about each format, and what we had to assume, is
in ``data_cards/warmup_<format>.md``. ``miniset: true`` instead of ``path`` loads the tiny set
written by us in that format (``interleave_bench/train/minisets/``).
"""

from __future__ import annotations

import csv
import json
import re
import tarfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..media import ImageError, ImageStore
from ..types import ImageRef, Interleaved, Sample, SchemaError, Segment
from .warmup_examples import Example, WarmupDataError, _example

MINISETS = Path(__file__).resolve().parent / "minisets"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

#: our own wording; the paper does not publish its warm-up prompts (``instruction:`` replaces it)
INSTRUCTIONS = {
    "activitynet_captions": (
        "Describe what happens in this activity step by step, with a picture of each step."
    ),
    "genhowto": "Here is the starting scene. Show the action and the resulting state.",
    "openstory": "Tell a short visual story, with a picture for each scene.",
}
KIND = {
    "activitynet_captions": "interleaved",
    "genhowto": "interleaved",
    "openstory": "interleaved",
    "emova": "understanding",
    "journeydb": "t2i",
}


@contextmanager
def _row(where: str) -> Iterator[None]:
    """Turn a row's schema problem into the one-line error naming file, row and field."""
    try:
        yield
    except SchemaError as e:
        raise WarmupDataError(f"{where}: field {e.field}: {e.message}") from None


def _text(t: str) -> Segment:
    return Segment.of_text(t)


def _image(path: Path) -> Segment:
    return Segment.of_image(ImageRef(path=str(path), source=str(path)))


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (p := folder / f"{stem}{suffix}").is_file():
            return p
    return None


def _str(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SchemaError(key, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise WarmupDataError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise WarmupDataError(f"{path}: not JSON (line {e.lineno}: {e.msg})") from None


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WarmupDataError(f"{path}: cannot read ({e})") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield f"{path} line {n}", json.loads(line)
            except json.JSONDecodeError as e:
                raise WarmupDataError(f"{path} line {n}: not JSON ({e.msg})") from None


def _sample(fmt: str, sid: str, inp: list[Segment], gold: list[Segment]) -> Sample:
    return Sample(
        id=f"{fmt}:{sid}",
        benchmark="warmup",
        category=fmt,
        input=Interleaved(inp),
        gold=Interleaved(gold),
    )


class _Ctx:
    """One source's options: the path, image folders, instruction, ``missing`` policy."""

    def __init__(self, fmt: str, spec: Mapping[str, Any], workdir: Path) -> None:
        self.fmt, self.spec, self.workdir = fmt, spec, workdir
        if spec.get("miniset"):
            self.base = MINISETS / fmt
            self.path = self.base / MINISET_FILES[fmt]
        elif spec.get("path"):
            self.path = Path(str(spec["path"])).expanduser().absolute()
            self.base = self.path.parent
        else:
            raise WarmupDataError(f"data source {fmt}: give path: FILE_OR_DIR (or miniset: true)")
        if not self.path.exists():
            raise WarmupDataError(f"data source {fmt}: no such file or folder {self.path}")
        self.instruction = str(spec.get("instruction") or INSTRUCTIONS.get(fmt, ""))
        self.missing = str(spec.get("missing", "error"))
        if self.missing not in ("error", "skip"):
            raise WarmupDataError(f"data source {fmt}: missing must be error or skip")
        self.limit = None if spec.get("limit") is None else int(spec["limit"])

    def folder(self, key: str, default: Path | None) -> Path:
        """An image folder option (relative to the annotation file's folder), which must exist."""
        value = self.spec.get(key)
        folder = default if value is None else Path(str(value)).expanduser()
        if folder is None:
            raise WarmupDataError(f"data source {self.fmt}: give {key}: FOLDER (see its data card)")
        folder = folder if folder.is_absolute() else self.base / folder
        if not folder.is_dir():
            raise WarmupDataError(f"data source {self.fmt}: {key}: no such folder {folder}")
        return folder

    def absent(self, field: str, message: str) -> None:
        """An image the row needs is not there: an error, or (``missing: skip``) skip the row."""
        if self.missing == "error":
            raise SchemaError(field, message + " (or set missing: skip for this source)")


class _Skip(Exception):
    """The current row is left out (``missing: skip``)."""


def _need_image(ctx: _Ctx, folder: Path, stem: str, field: str) -> Path:
    found = _find_image(folder, stem)
    if found is None:
        ctx.absent(field, f"no image {folder / stem}.jpg (or .jpeg/.png/.webp)")
        raise _Skip
    return found


# --------------------------------------------------------------------------- interleaved


def load_activitynet(ctx: _Ctx) -> Iterator[tuple[str, Sample]]:
    """ActivityNet Captions ``train.json``/``val_1.json``: ``{video_id: {duration, timestamps,
    sentences}}``; keyframe ``k`` of a video (one per caption segment, extracted by the user)
    at ``<keyframes>/<video_id>/<k>.jpg``. Gold: sentence, keyframe, sentence, keyframe, ..."""
    data = _read_json(ctx.path)
    if not isinstance(data, dict):
        raise WarmupDataError(
            f"{ctx.path}: expected an object {{video_id: {{duration, timestamps, sentences}}}}"
        )
    frames = ctx.folder("keyframes", Path("keyframes"))
    for vid, row in data.items():
        where = f"{ctx.path} video {vid}"
        with _row(where):
            if not isinstance(row, dict):
                raise SchemaError(vid, "expected {duration, timestamps, sentences}")
            sentences, stamps = row.get("sentences"), row.get("timestamps")
            if not isinstance(sentences, list) or not sentences:
                raise SchemaError("sentences", "expected a non-empty list of strings")
            if not isinstance(stamps, list) or len(stamps) != len(sentences):
                n = len(stamps) if isinstance(stamps, list) else stamps
                raise SchemaError("timestamps", f"expected {len(sentences)} [start, end], got {n}")
            gold: list[Segment] = []
            try:
                for k, (sentence, span) in enumerate(zip(sentences, stamps, strict=True)):
                    ok = isinstance(span, list) and len(span) == 2
                    if not ok or not all(isinstance(t, (int, float)) for t in span):
                        raise SchemaError(f"timestamps[{k}]", f"expected [start, end], got {span}")
                    if not isinstance(sentence, str) or not sentence.strip():
                        raise SchemaError(f"sentences[{k}]", "expected a non-empty string")
                    img = _need_image(ctx, frames / vid, str(k), f"timestamps[{k}] keyframe")
                    gold += [_text(sentence.strip()), _image(img)]
            except _Skip:
                continue
            yield where, _sample(ctx.fmt, vid, [_text(ctx.instruction)], gold)


def load_genhowto(ctx: _Ctx) -> Iterator[tuple[str, Sample]]:
    """GenHowTo's released CSVs (``states.*.txt`` / ``actions.*.txt``): ``VID_ID, FRAME_S1,
    FRAME_S2, FRAME_AC`` (seconds into the video) and ``FRAME_S2_PROMPT`` or ``FRAME_AC_PROMPT``;
    frames at ``<frames>/<VID_ID>/<second>.jpg``. Input: the initial state; gold: the action
    frame and the result frame, the row's prompt before the frame it describes."""
    frames = ctx.folder("frames", Path("frames"))
    try:
        with ctx.path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = [(reader.line_num, r) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise WarmupDataError(f"{ctx.path}: cannot read ({e})") from None
    prompt_col = next((c for c in ("FRAME_AC_PROMPT", "FRAME_S2_PROMPT") if c in header), None)
    need = ["VID_ID", "FRAME_S1", "FRAME_S2", "FRAME_AC"]
    if prompt_col is None or any(c not in header for c in need):
        raise WarmupDataError(
            f"{ctx.path} line 1: field header: expected {', '.join(need)} and FRAME_AC_PROMPT "
            f"or FRAME_S2_PROMPT, got {', '.join(header)}"
        )
    for line, row in rows:
        where = f"{ctx.path} line {line}"
        with _row(where):
            vid, prompt = _str(row, "VID_ID"), _str(row, prompt_col)
            images = {}
            try:
                for col in ("FRAME_S1", "FRAME_AC", "FRAME_S2"):
                    value = row.get(col) or ""
                    if not value.strip().isdigit():
                        raise SchemaError(col, f"expected whole seconds, got {value!r}")
                    images[col] = _image(_need_image(ctx, frames / vid, value.strip(), col))
            except _Skip:
                continue
            if prompt_col == "FRAME_AC_PROMPT":
                gold = [_text(prompt), images["FRAME_AC"], images["FRAME_S2"]]
            else:
                gold = [images["FRAME_AC"], _text(prompt), images["FRAME_S2"]]
            inp = [_text(ctx.instruction), images["FRAME_S1"]]
            yield where, _sample(ctx.fmt, f"{vid}:{line}", inp, gold)


_KEY = re.compile(r"^(?P<video>.+)_keyframe_(?P<t>\d+-\d+-\d+-\d+)$")


def _tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A webdataset shard's samples in file order: key (the member name up to its first dot)
    -> {extension: bytes}."""
    try:
        with tarfile.open(path) as tar:
            current: tuple[str, dict[str, bytes]] | None = None
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                key, _, ext = name.partition(".")
                if current is None or current[0] != key:
                    if current is not None:
                        yield current
                    current = (key, {})
                data = tar.extractfile(member)
                current[1][ext] = data.read() if data is not None else b""
            if current is not None:
                yield current
    except (OSError, tarfile.TarError) as e:
        raise WarmupDataError(f"{path}: cannot read the tar shard ({e})") from None


def load_openstory(ctx: _Ctx) -> Iterator[tuple[str, Sample]]:
    """OpenStory++ webdataset shards (a ``.tar`` or a folder of them): per keyframe
    ``<youtube id>_keyframe_<HH-MM-SS-mmm>`` a ``.json`` with ``caption`` and a ``.jpg`` (or,
    for the story subset shipped without frames, ``<frames>/<youtube id>/<key>.jpg``).
    ``..._override_...`` keys repeat the previous frame and are left out. A story: up to
    ``max_frames`` (5) consecutive keyframes of one video, at least ``min_frames`` (2)."""
    shards = sorted(ctx.path.glob("*.tar")) if ctx.path.is_dir() else [ctx.path]
    if not shards:
        raise WarmupDataError(f"{ctx.path}: no .tar shards")
    frames = ctx.folder("frames", None) if ctx.spec.get("frames") else None
    store = ImageStore(ctx.workdir / "data" / "images")
    max_frames, min_frames = int(ctx.spec.get("max_frames", 5)), int(ctx.spec.get("min_frames", 2))
    videos: dict[str, list[tuple[tuple[int, ...], str, str, ImageRef]]] = {}
    for shard in shards:
        for key, parts in _tar_samples(shard):
            where = f"{shard} member {key}"
            if "_override_" in key:
                continue
            with _row(where):
                m = _KEY.match(key)
                if m is None:
                    raise SchemaError("__key__", "expected <video id>_keyframe_<HH-MM-SS-mmm>")
                if "json" not in parts:
                    raise SchemaError("json", "the keyframe has no .json member")
                try:
                    meta = json.loads(parts["json"].decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise SchemaError("json", f"not JSON ({e})") from None
                if not isinstance(meta, dict):
                    raise SchemaError("json", "expected an object with caption")
                caption = _str(meta, "caption")
                try:
                    ref = _openstory_image(ctx, store, parts, frames, m["video"], key)
                except _Skip:
                    continue
                t = tuple(int(x) for x in m["t"].split("-"))
                videos.setdefault(m["video"], []).append((t, key, caption, ref))
    for keyframes in videos.values():
        keyframes.sort()
        for start in range(0, len(keyframes), max_frames):
            story = keyframes[start : start + max_frames]
            if len(story) < min_frames:
                continue
            gold = [s for _, _, cap, ref in story for s in (_text(cap), Segment.of_image(ref))]
            where = f"{ctx.path} story {story[0][1]}"
            yield where, _sample(ctx.fmt, story[0][1], [_text(ctx.instruction)], gold)


def _openstory_image(
    ctx: _Ctx, store: ImageStore, parts: dict[str, bytes], frames: Path | None, video: str, key: str
) -> ImageRef:
    data = parts.get("jpg")  # the .png member is the instance mask, not the frame
    if data is None:
        if frames is None:
            ctx.absent("jpg", "no .jpg member; give frames: FOLDER for the story subset")
            raise _Skip
        path = _need_image(ctx, frames / video, key, "jpg")
        data = path.read_bytes()
    try:
        return store.put_bytes(data)
    except ImageError as e:
        raise SchemaError("jpg", str(e)) from None


# --------------------------------------------------------------------------- understanding


def load_emova(ctx: _Ctx) -> Iterator[tuple[str, Sample]]:
    """EMOVA SFT annotations in the LLaVA format (a JSON list, or JSONL): ``{id, image,
    conversations: [{from: human|gpt, value}]}``; ``<image>`` marks where each image goes (none:
    the images precede the first question). Image paths are relative to ``images`` (default:
    the folder above ``annotations/``). One example per human/gpt round, earlier rounds as
    context. Rows without an image (text-only, speech) are not understanding samples: left out."""
    if ctx.path.suffix == ".jsonl":
        rows = list(_jsonl(ctx.path))
    else:
        data = _read_json(ctx.path)
        if not isinstance(data, list):
            raise WarmupDataError(
                f"{ctx.path}: expected a JSON list of {{id, image, conversations}}"
            )
        rows = [(f"{ctx.path} row {i}", r) for i, r in enumerate(data)]
    root = ctx.folder("images", ctx.base.parent if ctx.base.name == "annotations" else ctx.base)
    for where, row in rows:
        with _row(where):
            if not isinstance(row, dict):
                raise SchemaError("row", "expected {id, image, conversations}")
            image = row.get("image")
            paths = [image] if isinstance(image, str) else image
            if not paths:
                continue
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise SchemaError("image", f"expected a path or a list of paths, got {image!r}")
            absent = next((root / p for p in paths if not (root / p).is_file()), None)
            if absent is not None:
                ctx.absent("image", f"no file {absent}")
                continue
            found = [root / p for p in paths]
            yield from _emova_rounds(ctx, where, str(row.get("id", where)), row, found)


def _emova_rounds(
    ctx: _Ctx, where: str, rid: str, row: Mapping[str, Any], images: list[Any]
) -> Iterator[tuple[str, Sample]]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2:
        raise SchemaError("conversations", "expected a list of {from, value} turns")
    marks = sum(str(t.get("value", "")).count("<image>") for t in turns if isinstance(t, dict))
    if marks not in (0, len(images)):
        raise SchemaError("conversations", f"{marks} <image> marks for {len(images)} images")
    pending = [_image(p) for p in images]
    context: list[Segment] = [] if marks else list(pending)
    for k in range(0, len(turns) - 1, 2):
        ask, answer = turns[k], turns[k + 1]
        for j, (turn, role) in enumerate(((ask, "human"), (answer, "gpt"))):
            if not isinstance(turn, dict) or turn.get("from") != role:
                raise SchemaError(f"conversations[{k + j}].from", f"expected {role}")
            if not isinstance(turn.get("value"), str):
                raise SchemaError(f"conversations[{k + j}].value", "expected a string")
        for n, piece in enumerate(ask["value"].split("<image>")):
            if n:
                context.append(pending.pop(0))
            if piece.strip():
                context.append(_text(piece.strip()))
        reply = answer["value"].strip()
        if not reply:
            raise SchemaError(f"conversations[{k + 1}].value", "an empty answer")
        yield (
            f"{where} round {k // 2}",
            _sample(ctx.fmt, f"{rid}:{k // 2}", context, [_text(reply)]),
        )
        context = [*context, _text(reply)]


# --------------------------------------------------------------------------- text-to-image


def load_journeydb(ctx: _Ctx) -> Iterator[tuple[str, Sample]]:
    """JourneyDB ``data/train/train_anno_realease_repath.jsonl``: one object per line with
    ``img_path`` (``./000/<name>.jpg``, relative to ``images``, default ``imgs`` next to the file)
    and ``Task2.Caption``; ``text: prompt`` uses the row's Midjourney ``prompt`` instead."""
    images = ctx.folder("images", Path("imgs"))
    which = str(ctx.spec.get("text", "caption"))
    if which not in ("caption", "prompt"):
        raise WarmupDataError("data source journeydb: text must be caption or prompt")
    for where, row in _jsonl(ctx.path):
        with _row(where):
            if not isinstance(row, dict):
                raise SchemaError("row", "expected an object with img_path and Task2")
            if which == "caption":
                task2 = row.get("Task2")
                if not isinstance(task2, dict):
                    raise SchemaError("Task2", f"expected an object with Caption, got {task2!r}")
                try:
                    text = _str(task2, "Caption")
                except SchemaError as e:
                    raise SchemaError("Task2.Caption", e.message) from None
            else:
                text = _str(row, "prompt")
            rel = _str(row, "img_path")
            path = images / rel
            if not path.is_file():
                ctx.absent("img_path", f"no file {path}")
                continue
            yield where, _sample(ctx.fmt, rel, [_text(text)], [_image(path)])


LOADERS: dict[str, Callable[[_Ctx], Iterator[tuple[str, Sample]]]] = {
    "activitynet_captions": load_activitynet,
    "genhowto": load_genhowto,
    "openstory": load_openstory,
    "emova": load_emova,
    "journeydb": load_journeydb,
}
MINISET_FILES = {
    "activitynet_captions": "train.json",
    "genhowto": "states.train.txt",
    "openstory": "shards",
    "emova": "annotations/emova-mini.json",
    "journeydb": "train_anno_realease_repath.jsonl",
}


def load_source(spec: Mapping[str, Any], workdir: Path) -> list[Example]:
    """The examples of one ``{format: NAME, path | miniset, ...}`` source (``limit`` caps them)."""
    fmt = str(spec.get("format"))
    if fmt not in LOADERS:
        raise WarmupDataError(f"data source format {fmt!r}: expected one of {', '.join(LOADERS)}")
    ctx = _Ctx(fmt, spec, workdir)
    out: list[Example] = []
    for where, sample in LOADERS[fmt](ctx):
        if ctx.limit is not None and len(out) >= ctx.limit:
            break
        with _row(where):
            out.append(_example(sample, KIND[fmt], ctx.base, where))
    if not out:
        raise WarmupDataError(f"{ctx.path}: no usable {fmt} examples")
    return out
