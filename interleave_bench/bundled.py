"""The training recipes and published leaderboards that ship inside the wheel.

Their one source is the repository's top-level ``train/`` and ``leaderboards/`` folders;
``pyproject.toml`` maps them to the packages ``interleave_bench.recipes`` and
``interleave_bench.published`` (data only, no ``__init__.py``). They are looked up through the
import system, so the same call finds them in an installed wheel and in an editable install; a
plain source checkout that was never installed with that mapping falls back to the folders
themselves.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SOURCES = {"recipes": "train", "published": "leaderboards"}
_PACKAGE = Path(__file__).resolve().parent


def bundled_dir(kind: str) -> Path | None:
    """The folder of ``kind`` (``recipes`` or ``published``), or None when this install has none."""
    spec = importlib.util.find_spec(f"{__package__}.{kind}")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    checkout = _PACKAGE.parent
    folder = checkout / SOURCES[kind]
    if (checkout / "pyproject.toml").is_file() and folder.is_dir():
        return folder
    return None


def inside_package(path: Path) -> bool:
    """Whether ``path`` lies in the installed package (site-packages): never written to."""
    return path.resolve().is_relative_to(_PACKAGE)


def recipes() -> dict[str, Path]:
    """Bundled recipe name (the file name without ``.yaml``) -> file, sorted by name; the
    paper's ablation grid (``ablations/``) included."""
    folder = bundled_dir("recipes")
    if folder is None:
        return {}
    files = [*folder.glob("*.yaml"), *(folder / "ablations").glob("*.yaml")]
    return {p.stem: p for p in sorted(files, key=lambda p: p.stem) if p.is_file()}


def paper_ablations() -> Path | None:
    """The paper's ablation table shipped next to the grid's recipes (``ablations/``)."""
    folder = bundled_dir("recipes")
    path = None if folder is None else folder / "ablations" / "paper_ablations.csv"
    return path if path is not None and path.is_file() else None


def recipe_summary(path: Path) -> str:
    """A recipe's first comment line: what it shows (the recipes open with one)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""
