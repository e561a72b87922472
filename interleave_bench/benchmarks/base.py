"""What every benchmark loader shares: locating the data, safe images, problems, filters, limits.

A loader subclass says where its rows are and how one row becomes a ``Sample``; this module turns
that into a deterministic, lazy (no pixel decoded) load that never stops on a bad row: each defect
becomes a ``Problem`` naming the row and field, and every good row is still returned.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..types import ImageRef, Sample
from . import archives
from .archives import SOURCE_FILE
from .paths import DataRoot
from .problems import DataError, Problem, RowError
from .readers import read_json_array

MINISET_DIR = Path(__file__).parent / "minisets"


def cache_home() -> Path:
    """Where downloads and extractions go: ``$IBENCH_HOME`` or ``$XDG_CACHE_HOME/interleave_bench``."""
    if env := os.environ.get("IBENCH_HOME"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "interleave_bench"


# --------------------------------------------------------------------------- row helpers


def req(d: dict[str, Any], key: str, types: type | tuple[type, ...], where: str = "") -> Any:
    """A required key of a given type, or a RowError naming the field."""
    name = f"{where}.{key}" if where else key
    if key not in d:
        raise RowError(name, "missing required key")
    return typed(d[key], types, name)


def opt(d: dict[str, Any], key: str, types: type | tuple[type, ...], where: str = "") -> Any:
    """An optional key (absent or null gives None) of a given type."""
    value = d.get(key)
    return None if value is None else typed(value, types, f"{where}.{key}" if where else key)


def typed(value: Any, types: type | tuple[type, ...], name: str) -> Any:
    ts = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, ts) or (isinstance(value, bool) and bool not in ts):
        want = " or ".join("null" if t is type(None) else t.__name__ for t in ts)
        raise RowError(name, f"expected {want}, got {type(value).__name__}")
    return value


def as_row(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RowError("<row>", f"expected a JSON object, got {type(raw).__name__}")
    return raw


class RowContext:
    """Collects what one row's parse found besides its Sample: soft problems and image sites."""

    def __init__(self, root: DataRoot, index: int) -> None:
        self.root = root
        self.row: str | int = index
        self.problems: list[Problem] = []
        self.sites: list[tuple[str, str]] = []
        self.missing = 0

    def problem(self, field: str, message: str) -> None:
        self.problems.append(Problem(self.row, field, message))

    def image(self, source: Any, field: str) -> ImageRef:
        """Resolve an image path from the row; refused or absent files become ``missing``."""
        typed(source, str, field)
        found = self.root.resolve(source)
        if found.refused is not None:
            self.problem(field, found.refused)
        if found.path is None:
            self.missing += 1
            return ImageRef(source=source, missing=True)
        self.sites.append((field, found.path))
        return ImageRef(path=found.path, source=source)


# --------------------------------------------------------------------------- loaded data


@dataclass
class DatasetInfo:
    benchmark: str
    root: str
    data_file: str
    source: str
    revision: str

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class ImageSite:
    row: str
    field: str
    path: str


@dataclass
class BenchmarkData(Sequence[Sample]):
    """The samples of one load plus everything that was wrong with the data."""

    info: DatasetInfo
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    sites: list[ImageSite] = field(default_factory=list)
    count_by: str = "category"

    def __getitem__(self, i):  # type: ignore[override]
        return self.samples[i]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def missing_images(self) -> int:
        return sum(s.metadata.get("missing_images", 0) for s in self.samples)

    def by_category(self) -> dict[str, int]:
        counts = Counter(getattr(s, self.count_by) or "(none)" for s in self.samples)
        return dict(sorted(counts.items()))

    def to_hf(self) -> Any:
        """These samples as a ``datasets.Dataset`` (see ``interleave_bench.hf``)."""
        from ..hf import to_hf

        return to_hf(self.samples)

    def summary(self) -> dict[str, Any]:
        return {
            "benchmark": self.info.benchmark,
            "total": len(self.samples),
            "by_category": self.by_category(),
            "missing_images": self.missing_images,
            "images": len(self.sites),
            "problems": [p.to_dict() for p in self.problems],
            "source": self.info.to_dict(),
        }


# --------------------------------------------------------------------------- the base class


@dataclass(frozen=True)
class HubSpec:
    repo_id: str
    repo_type: str
    allow_patterns: tuple[str, ...]


class Benchmark:
    """Subclasses set the class attributes and implement ``parse_row``."""

    name: ClassVar[str]
    title: ClassVar[str]
    data_file_name: ClassVar[str]
    count_by: ClassVar[str] = "category"
    hub: ClassVar[HubSpec | None] = None
    hosting: ClassVar[str] = ""
    licence: ClassVar[str] = ""
    size: ClassVar[str] = ""

    # -- layout hooks ------------------------------------------------------------------------
    def locate(self, path: Path) -> Path:
        """The data root given what the user pointed at (the root itself by default)."""
        return path

    def data_file(self, root: Path) -> Path:
        return root / self.data_file_name

    def archive_targets(self, root: Path) -> list[tuple[Path, str]]:
        """(archive, destination sub-folder) pairs to extract before images are looked up."""
        return []

    def image_subdirs(self) -> list[str]:
        """Sub-folders of the root (and of the extraction folder) where image paths are resolved."""
        return [""]

    def rows(self, data_file: Path) -> Iterator[tuple[int, Any, Problem | None]]:
        for i, row in enumerate(read_json_array(data_file)):
            yield i, row, None

    def parse_row(self, raw: Any, ctx: RowContext) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- loading -------------------------------------------------------------------------------
    def load(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        limit: int | None = None,
        categories: Iterable[str] | None = None,
        tasks: Iterable[str] | None = None,
        ids: Iterable[str] | None = None,
        bundled: bool = False,
        download: bool = True,
    ) -> BenchmarkData:
        if path is not None and Path(path).is_file():  # a single data file: its folder is the root
            data_file = Path(path)
            root = data_file.parent
        else:
            root = self.resolve_root(path, bundled=bundled, download=download)
            data_file = self.data_file(root)
        if not data_file.is_file():
            raise DataError(f"{data_file}: file not found (is {root} a {self.title} folder?)")
        extract_base, extract_problems = self._extract(root, bundled)
        bases = [root / d for d in self.image_subdirs()]
        if extract_base != root:
            bases += [extract_base / d for d in self.image_subdirs()]
        data_root = DataRoot(bases, allowed=[root, extract_base])
        info = DatasetInfo(
            self.name, str(root), str(data_file), *self._provenance(root, bundled, data_file)
        )
        data = BenchmarkData(info, problems=list(extract_problems), count_by=self.count_by)
        cats, tks, wanted = _set(categories), _set(tasks), _set(ids)
        seen: set[str] = set()
        for index, raw, problem in self.rows(data_file):
            if problem is not None:
                data.problems.append(problem)
                continue
            ctx = RowContext(data_root, index)
            try:
                sample = self.parse_row(raw, ctx)
            except RowError as e:
                data.problems.extend(ctx.problems)
                data.problems.append(Problem(ctx.row, e.field, e.message))
                continue
            data.problems.extend(ctx.problems)
            if sample.id in seen:
                data.problems.append(
                    Problem(
                        sample.id, "id", f"duplicate id (row {index}); the first occurrence is kept"
                    )
                )
                continue
            seen.add(sample.id)
            if cats and sample.category not in cats and sample.task not in cats:
                continue
            if tks and sample.task not in tks:
                continue
            if wanted and sample.id not in wanted:
                continue
            sample.metadata["missing_images"] = ctx.missing
            data.samples.append(sample)
            data.sites.extend(ImageSite(sample.id, f, p) for f, p in ctx.sites)
            if limit is not None and len(data.samples) >= limit:
                break
        return data

    def resolve_root(
        self, path: str | os.PathLike[str] | None, *, bundled: bool = False, download: bool = True
    ) -> Path:
        if bundled:
            return self.locate(MINISET_DIR / self.name)
        if path is not None:
            p = Path(path)
            if not p.exists():
                raise DataError(f"{p}: no such folder")
            return self.locate(p)
        default = cache_home() / "data" / self.name
        if self.data_file(self.locate(default)).is_file():
            return self.locate(default)
        if not download:
            raise DataError(
                f"no local copy of {self.title}: pass --path DIR or run "
                f"`ibench data download {self.name}`"
            )
        return self.locate(self.download(default))

    def _extract(self, root: Path, bundled: bool) -> tuple[Path, list[Problem]]:
        targets = self.archive_targets(root)
        if not targets:
            return root, []
        base = root
        if bundled or not os.access(root, os.W_OK):
            digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
            base = cache_home() / "extracted" / f"{self.name}-{digest}"
        problems: list[Problem] = []
        for archive, sub in targets:
            # image archives may only add images: never the data or provenance files
            report = archives.extract(archive, base / sub if sub else base, images_only=True)
            problems.extend(report.problems)
        return base, problems

    def _provenance(self, root: Path, bundled: bool, data_file: Path) -> tuple[str, str]:
        # the marker sits where the download or archive landed: the root, or just above it when
        # ``locate`` stepped into a sub-folder (OpenING's ``OpenING-benchmark/``)
        for marker in (root / SOURCE_FILE, root.parent / SOURCE_FILE):
            if marker.is_file():
                try:
                    meta = json.loads(marker.read_text())
                    if meta.get("benchmark", self.name) == self.name:
                        return str(meta["source"]), str(meta["revision"])
                except (OSError, ValueError, KeyError, TypeError):
                    pass
        digest = hashlib.sha256(data_file.read_bytes()).hexdigest()
        return ("bundled mini set" if bundled else "local folder"), f"sha256:{digest}"

    # -- download ----------------------------------------------------------------------------
    def download(
        self, to: str | os.PathLike[str] | None = None, revision: str | None = None
    ) -> Path:
        """Fetch the release from the Hugging Face Hub into ``to`` and extract its archives."""
        from .hub import download_snapshot

        if self.hub is None:
            raise DataError(f"{self.title} is not on the Hugging Face Hub; see its data card")
        dest = Path(to) if to is not None else cache_home() / "data" / self.name
        download_snapshot(self.hub, dest, revision, benchmark=self.name)
        root = self.locate(dest)
        self._extract(root, bundled=False)
        return dest


def _set(values: Iterable[str] | None) -> set[str] | None:
    return set(values) if values else None


def import_archive(
    bench: Benchmark, archive: Path, to: Path | None = None
) -> tuple[Path, list[Problem]]:
    """Unpack a release archive the user downloaded by hand (e.g. OpenING's zip) into ``to``."""
    if not archive.is_file():
        raise DataError(f"{archive}: file not found")
    dest = to if to is not None else cache_home() / "data" / bench.name
    report = archives.extract(archive, dest)
    digest = hashlib.sha256()
    with open(archive, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    meta = {"source": f"archive {archive.name}", "revision": f"sha256:{digest.hexdigest()}"}
    archives.write_file(dest, SOURCE_FILE, json.dumps(meta).encode())
    return dest, report.problems
