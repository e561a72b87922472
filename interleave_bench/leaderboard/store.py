"""Where leaderboard files live and how they are read and written.

Published rows sit in ``<dir>/<bench>.json``; each accepted submission is its own file under
``<dir>/submissions/<bench>/`` so that a pull request adds one file and never edits another. A
broken published file is fatal (it is ours); a broken submission file is skipped and named.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..bundled import bundled_dir, inside_package
from .schema import SCHEMA_VERSION, Board, BoardError, parse_board, read_json, validate_row

ENV = "IBENCH_LEADERBOARDS"
MAX_ROW_FILE = 1024**2


def leaderboards_dir(explicit: Path | None = None) -> Path:
    """``--dir``, else ``$IBENCH_LEADERBOARDS``, else ``./leaderboards`` when it holds boards,
    else the published boards that ship with the package (the checkout's ``leaderboards/`` in a
    source tree), else ``./leaderboards``."""
    if explicit is not None:
        return Path(explicit)
    if env := os.environ.get(ENV):
        return Path(env)
    here = Path.cwd() / "leaderboards"
    if any(here.glob("*.json")):
        return here
    return bundled_dir("published") or here


def submissions_dir(root: Path) -> Path:
    """Where the submissions of the boards in ``root`` live: ``<root>/submissions``, except for
    the boards installed with the package, whose submissions go to ``./leaderboards/submissions``
    (nothing is ever written into site-packages)."""
    if inside_package(root):
        return Path.cwd() / "leaderboards" / "submissions"
    return root / "submissions"


def board_names(root: Path) -> list[str]:
    return sorted(p.stem for p in root.glob("*.json") if re.match(r"^[a-z][a-z0-9_]*$", p.stem))


def load_board(bench: str, root: Path, *, submissions: bool = True) -> Board:
    """The published board for ``bench`` plus every valid submission row (invalid ones are listed
    in ``board.problems``)."""
    path = root / f"{bench}.json"
    if not path.is_file():
        known = ", ".join(board_names(root)) or "none"
        raise BoardError(str(path), [f"no leaderboard for {bench!r} (known: {known})"])
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:
        raise BoardError(str(path), [str(e)]) from None
    board = parse_board(data, str(path))
    if board.benchmark != bench:
        raise BoardError(str(path), [f"benchmark: expected {bench!r}, got {board.benchmark!r}"])
    if submissions:
        for sub in sorted((submissions_dir(root) / bench).glob("*.json")):
            try:
                board.rows.append(read_submission(sub, board))
            except BoardError as e:
                board.problems.append(str(e))
    return board


def read_submission(path: Path, board: Board) -> dict[str, Any]:
    """One submitted row file, validated against its board."""
    if path.is_symlink():
        raise BoardError(str(path), ["symbolic links are not read"])
    try:
        data = read_json(path, MAX_ROW_FILE)
    except (OSError, ValueError) as e:
        raise BoardError(str(path), [str(e)]) from None
    if not isinstance(data, dict) or set(data) != {"schema_version", "benchmark", "row"}:
        raise BoardError(str(path), ["expected {schema_version, benchmark, row}"])
    if data["schema_version"] != SCHEMA_VERSION or data["benchmark"] != board.benchmark:
        raise BoardError(str(path), [f"not a schema-{SCHEMA_VERSION} row of {board.benchmark}"])
    row = data["row"]
    problems = validate_row(row, board.column_keys, board.tables, "row")
    if not problems and row["provenance"] != "submission":
        problems.append("row.provenance: a submission file holds a submission")
    if problems:
        raise BoardError(str(path), problems)
    return {**row, "_file": path.name}


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:60]
    return s or "model"


def write_submission(
    root: Path, bench: str, row: dict[str, Any], report_html: str | None = None
) -> list[Path]:
    """Write the row (and its regenerated report) under ``submissions/<bench>/``; the file name
    carries a digest of the evidence, so the same run submitted twice gives the same file."""
    digest = hashlib.sha256(
        json.dumps(row.get("evidence", {}), sort_keys=True).encode("utf-8")
    ).hexdigest()[:10]
    base = f"{slug(row['model'])}-{digest}"
    folder = submissions_dir(root) / bench
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if report_html is not None:
        report = folder / f"{base}.report.html"
        _atomic(report, report_html)
        row = {**row, "report": report.name}
        written.append(report)
    path = folder / f"{base}.json"
    doc = {"schema_version": SCHEMA_VERSION, "benchmark": bench, "row": row}
    _atomic(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return [path, *written]


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
