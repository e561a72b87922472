"""Benchmarks and predictions as Hugging Face ``datasets``, both ways.

A loaded benchmark becomes a ``datasets.Dataset`` with one row per sample; interleaved fields are
lists of ``{type, text, image, source}`` with images as the ``datasets.Image`` feature (the file's
own bytes, decoded only when a row is read), so it is ready for ``save_to_disk`` /
``push_to_hub``. The reverse readers turn such rows (and a predictions dataset with ``sample_id``
and ``output`` columns) back into our records, writing each image into an ``ImageStore`` the
caller names, because a ``Sample`` or ``Prediction`` refers to images by file, never by pixels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .media import DEFAULT_LIMITS, ImageStore, _read_limited, ref_path
from .types import ImageRef, Interleaved, Prediction, Sample, SchemaError, Segment

EXTRA = "hf"  # the pyproject extra that holds datasets and evaluate


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message is the one line that says how."""


def need(module: str) -> Any:
    """Import ``module`` (``datasets``, ``evaluate``) or raise a one-line ``MissingExtra``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{module} is not installed: pip install 'interleave-bench[{EXTRA}]'"
        ) from None


# --------------------------------------------------------------------------- features


def _segment_feature(datasets: Any, decode: bool = True) -> dict[str, Any]:
    return {
        "type": datasets.Value("string"),
        "text": datasets.Value("string"),
        "image": datasets.Image(decode=decode),
        "source": datasets.Value("string"),
    }


def sample_features(decode: bool = True) -> Any:
    """The ``datasets.Features`` of ``to_hf()``: ``metadata`` is a JSON string, because its keys
    differ between benchmarks (and a fixed struct would drop the ones it does not name)."""
    datasets = need("datasets")
    seg = datasets.List(_segment_feature(datasets, decode))
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "benchmark": datasets.Value("string"),
            "category": datasets.Value("string"),
            "task": datasets.Value("string"),
            "input": seg,
            "gold": seg,
            "metadata": datasets.Value("string"),
        }
    )


def _segment_row(seg: Segment) -> dict[str, Any]:
    if seg.image is None:
        return {"type": "text", "text": seg.text, "image": None, "source": None}
    ref = seg.image
    if ref.missing:
        return {"type": "image", "text": None, "image": None, "source": ref.source}
    data = _read_limited(ref_path(ref), DEFAULT_LIMITS)
    return {
        "type": "image",
        "text": None,
        "image": {"bytes": data, "path": None},
        "source": ref.source,
    }


def segments_row(items: Interleaved | None) -> list[dict[str, Any]] | None:
    """An interleaved field as a list of segment rows (image bytes read from their files)."""
    return None if items is None else [_segment_row(s) for s in items]


def sample_row(s: Sample) -> dict[str, Any]:
    return {
        "id": s.id,
        "benchmark": s.benchmark,
        "category": s.category,
        "task": s.task,
        "input": segments_row(s.input),
        "gold": segments_row(s.gold),
        "metadata": json.dumps(s.metadata, ensure_ascii=False, sort_keys=True),
    }


def to_hf(samples: Iterable[Sample]) -> Any:
    """The samples as a ``datasets.Dataset`` (one row per sample, images as ``Image``)."""
    datasets = need("datasets")
    rows = [sample_row(s) for s in samples]
    return datasets.Dataset.from_list(rows, features=sample_features())


# --------------------------------------------------------------------------- reverse


def _image_bytes(value: Any, where: str) -> bytes | None:
    """The encoded bytes of an image cell: ``{bytes, path}`` (undecoded), PIL, or raw bytes."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        raise SchemaError(where, "an image cell without bytes (a path alone is not read)")
    if hasattr(value, "save"):  # a decoded PIL image: re-encode losslessly
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    raise SchemaError(where, f"expected an image, got {type(value).__name__}")


def segments_from_rows(items: Any, store: ImageStore, where: str) -> Interleaved:
    """Segment rows back to ``Interleaved``, each image written into ``store``. Our own JSON form
    (``{"type": "image", "image": {"sha256"|"path": ...}}``) is read as it is."""
    if not isinstance(items, list):
        raise SchemaError(where, f"expected a list of segments, got {type(items).__name__}")
    out: list[Segment] = []
    for k, item in enumerate(items):
        w = f"{where}[{k}]"
        if not isinstance(item, Mapping):
            raise SchemaError(w, f"expected an object, got {type(item).__name__}")
        kind = item.get("type")
        if kind == "text":
            if not isinstance(item.get("text"), str):
                raise SchemaError(f"{w}.text", "a text segment needs a string")
            out.append(Segment.of_text(item["text"]))
        elif kind == "image":
            image = item.get("image")
            if isinstance(image, Mapping) and ("sha256" in image or "missing" in image):
                out.append(Segment.of_image(ImageRef.from_dict(image, f"{w}.image")))
                continue
            if isinstance(image, Mapping) and image.get("bytes") is None and "path" in image:
                out.append(Segment.of_image(ImageRef.from_dict(image, f"{w}.image")))
                continue
            data = _image_bytes(image, f"{w}.image")
            source = item.get("source")
            if data is None:
                out.append(Segment.of_image(ImageRef(source=source, missing=True)))
                continue
            ref = store.put_bytes(data)
            out.append(Segment.of_image(ImageRef(sha256=ref.sha256, path=ref.path, source=source)))
        else:
            raise SchemaError(f"{w}.type", f"expected 'text' or 'image', got {kind!r}")
    return Interleaved(out)


def sample_from_row(row: Mapping[str, Any], store: ImageStore, where: str = "") -> Sample:
    """A ``to_hf()`` row (decoded or not) back to a ``Sample``."""
    meta = row.get("metadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            raise SchemaError(_at(where, "metadata"), "not a JSON object") from None
    if not isinstance(row.get("id"), str):
        raise SchemaError(_at(where, "id"), "missing or not a string")
    gold = row.get("gold")
    return Sample(
        id=row["id"],
        benchmark=str(row.get("benchmark") or ""),
        category=row.get("category"),
        task=row.get("task"),
        input=segments_from_rows(row.get("input"), store, _at(where, "input")),
        gold=None if gold is None else segments_from_rows(gold, store, _at(where, "gold")),
        metadata=dict(meta or {}),
    )


def prediction_from_row(row: Mapping[str, Any], store: ImageStore, where: str = "") -> Prediction:
    """A predictions-dataset row (``sample_id``, ``output``; optional ``model``, ``error``)."""
    sid = row.get("sample_id")
    if not isinstance(sid, str):
        raise SchemaError(_at(where, "sample_id"), "missing or not a string")
    output = row.get("output")
    if isinstance(output, str):  # a plain text answer
        output = [{"type": "text", "text": output}]
    return Prediction(
        sample_id=sid,
        model=str(row.get("model") or "unknown"),
        output=segments_from_rows(output, store, _at(where, "output")),
        error=row.get("error") or None,
    )


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def undecoded(ds: Any) -> Any:
    """``ds`` with every ``Image`` feature left as bytes (nothing decoded while reading back)."""
    datasets = need("datasets")

    def walk(f: Any) -> Any:
        if isinstance(f, datasets.Image):
            return datasets.Image(decode=False)
        if isinstance(f, dict):
            return {k: walk(v) for k, v in f.items()}
        if isinstance(f, datasets.List):
            return datasets.List(walk(f.feature), length=f.length)
        return f

    return ds.cast(datasets.Features({k: walk(v) for k, v in ds.features.items()}))


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and (
        (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
    )


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts)


def open_dataset(where: str | Path, split: str = "train") -> Any:
    """A ``save_to_disk`` folder or a Hub dataset id (``HF_HUB_OFFLINE`` is respected)."""
    datasets = need("datasets")
    path = Path(where)
    if is_saved_dataset(path):
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(str(where), split=split)
    if isinstance(ds, datasets.DatasetDict):
        if split in ds:
            ds = ds[split]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise SchemaError(str(where), f"no {split!r} split (splits: {', '.join(ds)})")
    return undecoded(ds)
