"""The one vocabulary of interleave_bench: segments, samples, predictions, judgments, results.

Every record has a stable JSON form carrying ``schema_version``; ``from_dict`` validates strictly and
names the offending field, so a hand-edited or foreign file fails loudly instead of half-loading.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1

SegmentKind = Literal["text", "image"]
JudgmentStatus = Literal["ok", "invalid", "error"]
_STATUSES = ("ok", "invalid", "error")


class SchemaError(ValueError):
    """A JSON record does not match the schema; ``field`` names where (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- helpers


def _get(
    d: Mapping[str, Any],
    key: str,
    types: type | tuple[type, ...],
    where: str,
    *,
    required: bool = True,
    default: Any = None,
) -> Any:
    path = f"{where}.{key}" if where else key
    if key not in d:
        if required:
            raise SchemaError(path, "missing required key")
        return default
    value = d[key]
    if value is None and not required:
        return default
    if isinstance(value, bool) and bool not in _as_tuple(types):
        raise SchemaError(path, f"expected {_names(types)}, got bool")
    if not isinstance(value, types):
        raise SchemaError(path, f"expected {_names(types)}, got {type(value).__name__}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


def _check_mapping(d: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise SchemaError(where or "<root>", f"expected an object, got {type(d).__name__}")
    return d


def _check_version(d: Mapping[str, Any], where: str) -> None:
    version = d.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{where}.schema_version" if where else "schema_version",
            f"unsupported schema version {version!r} (this build reads {SCHEMA_VERSION})",
        )


def _number_map(d: Mapping[str, Any], where: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, v in d.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise SchemaError(f"{where}.{k}", f"expected a number or null, got {type(v).__name__}")
        out[str(k)] = None if v is None else float(v)
    return out


# --------------------------------------------------------------------------- segments


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where an image lives: a content address in an ImageStore and/or a file on disk.

    ``source`` keeps the string exactly as the benchmark row wrote it (provenance); ``missing`` marks
    an image the row refers to but that is absent or was refused (escaping path, unreadable).
    """

    sha256: str | None = None
    path: str | None = None
    source: str | None = None
    missing: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.sha256 is not None:
            d["sha256"] = self.sha256
        if self.path is not None:
            d["path"] = self.path
        if self.source is not None:
            d["source"] = self.source
        if self.missing:
            d["missing"] = True
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "image") -> ImageRef:
        d = _check_mapping(d, where)
        sha = _get(d, "sha256", str, where, required=False)
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            raise SchemaError(f"{where}.sha256", "expected 64 lowercase hex characters")
        ref = cls(
            sha256=sha,
            path=_get(d, "path", str, where, required=False),
            source=_get(d, "source", str, where, required=False),
            missing=_get(d, "missing", bool, where, required=False, default=False),
        )
        if ref.sha256 is None and ref.path is None and not ref.missing:
            raise SchemaError(where, "an image needs sha256 or path (or missing: true)")
        return ref


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of an interleaved sequence: text, or a reference to an image."""

    kind: SegmentKind
    text: str | None = None
    image: ImageRef | None = None

    def __post_init__(self) -> None:
        if self.kind == "text":
            if not isinstance(self.text, str) or self.image is not None:
                raise ValueError("a text segment holds a str and no image")
        elif self.kind == "image":
            if not isinstance(self.image, ImageRef) or self.text is not None:
                raise ValueError("an image segment holds an ImageRef and no text")
        else:
            raise ValueError(f"unknown segment kind {self.kind!r}")

    @classmethod
    def of_text(cls, text: str) -> Segment:
        return cls("text", text=text)

    @classmethod
    def of_image(cls, image: ImageRef) -> Segment:
        return cls("image", image=image)

    @property
    def is_text(self) -> bool:
        return self.kind == "text"

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "text":
            return {"type": "text", "text": self.text}
        assert self.image is not None
        return {"type": "image", "image": self.image.to_dict()}

    @classmethod
    def from_dict(cls, d: Any, where: str = "segment") -> Segment:
        d = _check_mapping(d, where)
        kind = _get(d, "type", str, where)
        if kind == "text":
            return cls.of_text(_get(d, "text", str, where))
        if kind == "image":
            return cls.of_image(ImageRef.from_dict(_get(d, "image", dict, where), f"{where}.image"))
        raise SchemaError(f"{where}.type", f"expected 'text' or 'image', got {kind!r}")


@dataclass(frozen=True, slots=True)
class Interleaved(Sequence[Segment]):
    """An ordered sequence of text and image segments: inputs, outputs and gold answers alike."""

    segments: tuple[Segment, ...] = ()

    def __init__(self, segments: Iterable[Segment] = ()) -> None:
        object.__setattr__(self, "segments", tuple(segments))

    def __getitem__(self, i):  # type: ignore[override]
        return self.segments[i]

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    @property
    def images(self) -> list[ImageRef]:
        return [s.image for s in self.segments if s.image is not None]

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.segments if s.text is not None]

    @property
    def text(self) -> str:
        """All text joined by newlines (images left out)."""
        return "\n".join(self.texts)

    def structure(self) -> str:
        """The type sequence, one letter per segment: ``"TIT"`` for text, image, text."""
        return "".join("T" if s.is_text else "I" for s in self.segments)

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.segments]

    @classmethod
    def from_list(cls, items: Any, where: str = "segments") -> Interleaved:
        if not isinstance(items, list):
            raise SchemaError(where, f"expected a list, got {type(items).__name__}")
        return cls(Segment.from_dict(x, f"{where}[{i}]") for i, x in enumerate(items))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Sample:
    """One benchmark item as a loader produced it."""

    id: str
    benchmark: str
    input: Interleaved
    gold: Interleaved | None = None
    category: str | None = None
    task: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "id": self.id,
            "benchmark": self.benchmark,
            "category": self.category,
            "task": self.task,
            "input": self.input.to_list(),
            "gold": None if self.gold is None else self.gold.to_list(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> Sample:
        d = _check_mapping(d, where)
        _check_version(d, where)
        w = where or ""
        gold = _get(d, "gold", list, w, required=False)
        return cls(
            id=_get(d, "id", str, w),
            benchmark=_get(d, "benchmark", str, w),
            category=_get(d, "category", str, w, required=False),
            task=_get(d, "task", str, w, required=False),
            input=Interleaved.from_list(_get(d, "input", list, w), _join(w, "input")),
            gold=None if gold is None else Interleaved.from_list(gold, _join(w, "gold")),
            metadata=dict(_get(d, "metadata", dict, w, required=False, default={})),
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """A model's interleaved answer to one sample, with the settings that produced it."""

    sample_id: str
    model: str
    output: Interleaved
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "sample_id": self.sample_id,
            "model": self.model,
            "output": self.output.to_list(),
            "settings": self.settings,
            "timing": self.timing,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> Prediction:
        d = _check_mapping(d, where)
        _check_version(d, where)
        timing = _get(d, "timing", dict, where, required=False, default={})
        return cls(
            sample_id=_get(d, "sample_id", str, where),
            model=_get(d, "model", str, where),
            output=Interleaved.from_list(_get(d, "output", list, where), _join(where, "output")),
            settings=dict(_get(d, "settings", dict, where, required=False, default={})),
            timing={
                k: v
                for k, v in _number_map(timing, _join(where, "timing")).items()
                if v is not None
            },
            error=_get(d, "error", str, where, required=False),
        )


@dataclass(frozen=True, slots=True)
class Judgment:
    """A scorer's verdict on one prediction.

    A judge failure is ``status="error"`` and an unusable reply ``status="invalid"``, each with a
    ``reason``; neither ever carries a score, so aggregates can count them instead of averaging them.
    """

    sample_id: str
    scorer: str
    protocol_version: str
    status: JudgmentStatus
    scores: dict[str, float | None] = field(default_factory=dict)
    overall: float | None = None
    reason: str | None = None
    raw: str | None = None
    cost: float | None = None
    usage: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {self.status!r}")
        if self.status != "ok" and self.overall is not None:
            raise ValueError("a judgment that is not ok carries no overall score")
        if self.status != "ok" and not self.reason:
            raise ValueError("a judgment that is not ok needs a reason")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "sample_id": self.sample_id,
            "scorer": self.scorer,
            "protocol_version": self.protocol_version,
            "status": self.status,
            "scores": self.scores,
            "overall": self.overall,
            "reason": self.reason,
            "raw": self.raw,
            "cost": self.cost,
            "usage": self.usage,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> Judgment:
        d = _check_mapping(d, where)
        _check_version(d, where)
        status = _get(d, "status", str, where)
        if status not in _STATUSES:
            raise SchemaError(
                _join(where, "status"), f"expected one of {_STATUSES}, got {status!r}"
            )
        overall = _get(d, "overall", (int, float), where, required=False)
        cost = _get(d, "cost", (int, float), where, required=False)
        usage = _get(d, "usage", dict, where, required=False, default={})
        try:
            return cls(
                sample_id=_get(d, "sample_id", str, where),
                scorer=_get(d, "scorer", str, where),
                protocol_version=_get(d, "protocol_version", str, where),
                status=status,  # type: ignore[arg-type]
                scores=_number_map(
                    _get(d, "scores", dict, where, required=False, default={}),
                    _join(where, "scores"),
                ),
                overall=None if overall is None else float(overall),
                reason=_get(d, "reason", str, where, required=False),
                raw=_get(d, "raw", str, where, required=False),
                cost=None if cost is None else float(cost),
                usage={
                    k: int(v)
                    for k, v in _number_map(usage, _join(where, "usage")).items()
                    if v is not None
                },
                metadata=dict(_get(d, "metadata", dict, where, required=False, default={})),
            )
        except ValueError as e:
            if isinstance(e, SchemaError):
                raise
            raise SchemaError(where or "<root>", str(e)) from None


@dataclass(frozen=True, slots=True)
class Result:
    """An aggregate over judgments: the overall score, per-category ``{mean, n}``, how many
    judgments were valid, invalid or errors and why, and whether it may sit beside published
    numbers (``comparable``)."""

    benchmark: str
    scorer: str
    protocol: str
    overall: float | None
    judge: str | None = None
    by_category: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    scale: str = ""
    comparable: bool = False
    intervals: dict[str, list[float]] = field(default_factory=dict)
    overall_percent: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema_version": SCHEMA_VERSION,
            "benchmark": self.benchmark,
            "scorer": self.scorer,
            "protocol": self.protocol,
            "judge": self.judge,
            "comparable": self.comparable,
            "overall": self.overall,
            "by_category": self.by_category,
            "counts": self.counts,
            "invalid_reasons": self.invalid_reasons,
            "scale": self.scale,
            "intervals": self.intervals,
            "metadata": self.metadata,
        }
        if self.overall_percent is not None:
            d["overall_percent"] = self.overall_percent
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> Result:
        d = _check_mapping(d, where)
        _check_version(d, where)
        overall = _get(d, "overall", (int, float), where, required=False)
        percent = _get(d, "overall_percent", (int, float), where, required=False)
        intervals = _get(d, "intervals", dict, where, required=False, default={})
        for k, v in intervals.items():
            if not (
                isinstance(v, list)
                and len(v) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            ):
                raise SchemaError(f"{_join(where, 'intervals')}.{k}", "expected [low, high]")
        cats = _get(d, "by_category", dict, where, required=False, default={})
        for k, v in cats.items():
            w = f"{_join(where, 'by_category')}.{k}"
            v = _check_mapping(v, w)
            _get(v, "mean", (int, float), w, required=False)
            _get(v, "n", int, w)
        return cls(
            benchmark=_get(d, "benchmark", str, where),
            scorer=_get(d, "scorer", str, where),
            protocol=_get(d, "protocol", str, where),
            judge=_get(d, "judge", str, where, required=False),
            overall=None if overall is None else float(overall),
            by_category={k: dict(v) for k, v in cats.items()},
            counts=_int_map(
                _get(d, "counts", dict, where, required=False, default={}), _join(where, "counts")
            ),
            invalid_reasons=_int_map(
                _get(d, "invalid_reasons", dict, where, required=False, default={}),
                _join(where, "invalid_reasons"),
            ),
            scale=_get(d, "scale", str, where, required=False, default=""),
            comparable=_get(d, "comparable", bool, where, required=False, default=False),
            intervals={k: [float(v[0]), float(v[1])] for k, v in intervals.items()},
            overall_percent=None if percent is None else float(percent),
            metadata=dict(_get(d, "metadata", dict, where, required=False, default={})),
        )


def _int_map(d: Mapping[str, Any], where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise SchemaError(f"{where}.{k}", f"expected an integer, got {type(v).__name__}")
        out[str(k)] = v
    return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@dataclass
class PairwiseResult:
    """A pairwise protocol's arena between two models: win rates as the protocol counts them,
    with valid, invalid and error verdicts counted (never scored)."""

    protocol: str
    judge: str | None
    models: list[str]
    win_rates: dict[str, dict[str, float | None]]
    counts: dict[str, int] = field(default_factory=dict)
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    comparable: bool = False
    swap: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "protocol": self.protocol,
            "judge": self.judge,
            "comparable": self.comparable,
            "models": self.models,
            "win_rates": self.win_rates,
            "counts": self.counts,
            "invalid_reasons": self.invalid_reasons,
            "swap": self.swap,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> PairwiseResult:
        d = _check_mapping(d, where)
        _check_version(d, where)
        models = _get(d, "models", list, where)
        if not all(isinstance(m, str) for m in models):
            raise SchemaError(_join(where, "models"), "expected a list of model names")
        rates = _get(d, "win_rates", dict, where)
        for k, v in rates.items():
            _check_mapping(v, f"{_join(where, 'win_rates')}.{k}")
        return cls(
            protocol=_get(d, "protocol", str, where),
            judge=_get(d, "judge", str, where, required=False),
            models=list(models),
            win_rates={k: dict(v) for k, v in rates.items()},
            counts=_int_map(
                _get(d, "counts", dict, where, required=False, default={}), _join(where, "counts")
            ),
            invalid_reasons=_int_map(
                _get(d, "invalid_reasons", dict, where, required=False, default={}),
                _join(where, "invalid_reasons"),
            ),
            comparable=_get(d, "comparable", bool, where, required=False, default=False),
            swap=_get(d, "swap", bool, where, required=False, default=False),
            metadata=dict(_get(d, "metadata", dict, where, required=False, default={})),
        )


@dataclass
class RunResults:
    """``results.json`` of every run folder, written by ``eval`` and ``score`` alike: one Result
    per protocol, the pairwise arenas, and how many generations failed."""

    results: list[Result] = field(default_factory=list)
    pairwise: list[PairwiseResult] = field(default_factory=list)
    generation_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "results": [r.to_dict() for r in self.results],
            "pairwise": [p.to_dict() for p in self.pairwise],
            "generation_errors": self.generation_errors,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> RunResults:
        """Also reads the shapes written before this schema (a bare Result; a bare pairwise
        dict), so older run folders stay readable; readers never branch on shape."""
        d = _check_mapping(d, where)
        if "results" not in d and "pairwise" not in d:
            if "win_rates" in d:
                return cls(pairwise=[PairwiseResult.from_dict(d, where)])
            return cls(results=[Result.from_dict(d, where)])
        _check_version(d, where)
        items = _get(d, "results", list, where, required=False, default=[])
        arenas = _get(d, "pairwise", list, where, required=False, default=[])
        errors = _get(d, "generation_errors", int, where, required=False, default=0)
        return cls(
            results=[
                Result.from_dict(x, f"{_join(where, 'results')}[{i}]") for i, x in enumerate(items)
            ],
            pairwise=[
                PairwiseResult.from_dict(x, f"{_join(where, 'pairwise')}[{i}]")
                for i, x in enumerate(arenas)
            ],
            generation_errors=errors,
        )
