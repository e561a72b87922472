"""The leaderboard file format (documented in ``leaderboards/README.md``) and its strict validator.

Board files and submitted rows are read as untrusted JSON: every key is checked for type, numbers
must be finite and inside the row's scale, URLs must be http(s), and every problem is named with
its path, so a hand-edited file fails loudly instead of putting a wrong number on a page.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
PROVENANCES = ("published", "reading-note", "submission")
RESERVED = frozenset(
    [
        "model",
        "table",
        "overall",
        "ci_overall",
        "n",
        "scale",
        "protocol",
        "judge",
        "source",
        "source_url",
        "date",
        "comparable",
        "note",
        "provenance",
        "subset",
        "report",
        "extra",
        "evidence",
        "scores",
        "status",
        "audit",
        "coverage",
    ]
)
STATUSES = ("verified", "self-reported")
DEFAULT_MIN_COVERAGE = 99.0  # percent of a benchmark's samples validly judged, for comparable
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?$")
_SCALE = re.compile(r"^(-?\d+(?:\.\d+)?)-(-?\d+(?:\.\d+)?)$")
_REPORT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}\.html$")
_ROW_REQUIRED = {
    "model": str,
    "table": str,
    "scores": dict,
    "scale": str,
    "protocol": str,
    "judge": str,
    "source": str,
    "date": str,
    "comparable": bool,
    "provenance": str,
}
_ROW_OPTIONAL = {
    "overall": (int, float),
    "ci": dict,
    "n": int,
    "note": str,
    "source_url": str,
    "subset": str,
    "report": str,
    "extra": dict,
    "evidence": dict,
    "status": str,
    "audit": dict,
    "coverage": (int, float),
}
_BOARD_KEYS = {
    "schema_version",
    "benchmark",
    "title",
    "description",
    "official",
    "columns",
    "overall_label",
    "tables",
    "rows",
}


class BoardError(ValueError):
    """A board or row file breaks the schema; ``problems`` lists every violation found."""

    def __init__(self, where: str, problems: list[str]) -> None:
        super().__init__(f"{where}: " + "; ".join(problems))
        self.where = where
        self.problems = problems


@dataclass(frozen=True)
class Column:
    key: str
    label: str


@dataclass
class Board:
    """One benchmark's leaderboard: published rows plus accepted submissions."""

    benchmark: str
    title: str
    description: str
    official: dict[str, Any]
    columns: list[Column]
    overall_label: str
    tables: dict[str, str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # submission files that were skipped

    @property
    def column_keys(self) -> list[str]:
        return [c.key for c in self.columns]

    @property
    def min_coverage(self) -> float:
        """Percent of samples a submission must judge validly to be comparable
        (``official.min_coverage``, default 99)."""
        return float(self.official.get("min_coverage", DEFAULT_MIN_COVERAGE))


def parse_scale(scale: str) -> tuple[float, float] | None:
    """``"0-100"`` -> (0.0, 100.0); None when the text is not a ``low-high`` range."""
    m = _SCALE.match(scale.strip()) if isinstance(scale, str) else None
    if m is None:
        return None
    lo, hi = float(m.group(1)), float(m.group(2))
    return (lo, hi) if lo < hi else None


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def safe_url(url: Any) -> bool:
    """Only absolute http(s) URLs without whitespace or quotes may become links."""
    return (
        isinstance(url, str)
        and re.match(r"^https?://[^\s\"'<>\\]+$", url) is not None
        and len(url) <= 500
    )


def clean_text(s: str, limit: int) -> str | None:
    """Why a display string is refused (None when it is fine)."""
    if not s.strip():
        return "is empty"
    if len(s) > limit:
        return f"is longer than {limit} characters"
    if any(ord(c) < 32 and c not in "\t" for c in s) or "\x7f" in s:
        return "contains control characters"
    return None


def validate_row(
    row: Any, columns: list[str], tables: Mapping[str, str], where: str = "row"
) -> list[str]:
    """Every schema violation of one row (empty when it is valid)."""
    if not isinstance(row, Mapping):
        return [f"{where}: expected an object, got {type(row).__name__}"]
    out: list[str] = []
    for key in row:
        if key not in _ROW_REQUIRED and key not in _ROW_OPTIONAL:
            out.append(f"{where}.{key}: unknown key")
    for key, t in _ROW_REQUIRED.items():
        if key not in row:
            out.append(f"{where}.{key}: missing required key")
        elif not isinstance(row[key], t) or (isinstance(row[key], bool) and t is not bool):
            out.append(f"{where}.{key}: expected {t.__name__}, got {type(row[key]).__name__}")
    for key, t in _ROW_OPTIONAL.items():
        v = row.get(key)
        if v is not None and (not isinstance(v, t) or (isinstance(v, bool) and t is not bool)):
            out.append(f"{where}.{key}: expected {_tname(t)} or null, got {type(v).__name__}")
    if out:
        return out
    for key, limit in (("model", 300), ("source", 500), ("protocol", 200), ("judge", 200)):
        if (why := clean_text(row[key], limit)) is not None:
            out.append(f"{where}.{key} {why}")
    for key, limit in (("note", 2000), ("subset", 200)):
        if row.get(key) is not None and (why := clean_text(row[key], limit)) is not None:
            out.append(f"{where}.{key} {why}")
    if row["table"] not in tables:
        out.append(f"{where}.table: {row['table']!r} is not one of {sorted(tables)}")
    if row["provenance"] not in PROVENANCES:
        out.append(f"{where}.provenance: expected one of {PROVENANCES}")
    if not _DATE.match(row["date"]):
        out.append(f"{where}.date: expected YYYY-MM or YYYY-MM-DD, got {row['date']!r}")
    if row.get("source_url") is not None and not safe_url(row["source_url"]):
        out.append(f"{where}.source_url: only http(s) URLs are allowed")
    report = row.get("report")
    if report is not None and not (safe_url(report) or _REPORT.match(report)):
        out.append(f"{where}.report: expected an http(s) URL or a plain NAME.html file name")
    if row.get("status") is not None and row["status"] not in STATUSES:
        out.append(f"{where}.status: expected one of {STATUSES}")
    if row.get("status") is not None and row["provenance"] != "submission":
        out.append(f"{where}.status: only a submission has a verification status")
    if row.get("status") == "verified" and not row.get("audit"):
        out.append(f"{where}.status: verified, but no audit is recorded")
    cov = row.get("coverage")
    if cov is not None and not (is_number(cov) and 0 <= cov <= 100):
        out.append(f"{where}.coverage: expected a percent between 0 and 100")
    if row.get("n") is not None and row["n"] < 0:
        out.append(f"{where}.n: must not be negative")
    scale = parse_scale(row["scale"])
    if scale is None:
        out.append(f"{where}.scale: expected LOW-HIGH such as 0-100, got {row['scale']!r}")
    values: list[tuple[str, Any]] = [(f"scores.{k}", v) for k, v in row["scores"].items()]
    if "overall" in row:
        values.append(("overall", row["overall"]))
    for k in row["scores"]:
        if k not in columns:
            out.append(f"{where}.scores.{k}: not a column of this board ({', '.join(columns)})")
    ci = row.get("ci") or {}
    for k, v in ci.items():
        if k != "overall":
            out.append(f"{where}.ci.{k}: only an interval of the overall score is kept")
        elif not (isinstance(v, list) and len(v) == 2 and all(is_number(x) for x in v)):
            out.append(f"{where}.ci.overall: expected [low, high] finite numbers")
        elif v[0] > v[1]:
            out.append(f"{where}.ci.overall: low is above high")
        else:
            values += [("ci.overall[0]", v[0]), ("ci.overall[1]", v[1])]
    for name, v in values:
        if v is None:
            continue
        if not is_number(v):
            out.append(f"{where}.{name}: expected a finite number or null, got {v!r}")
        elif scale is not None and not scale[0] <= v <= scale[1]:
            out.append(f"{where}.{name}: {v} is outside the row's scale {row['scale']}")
    return out


def _tname(t: type | tuple[type, ...]) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(x.__name__ for x in ts)


def reject_constant(name: str) -> Any:
    """``json.loads(parse_constant=...)``: NaN and Infinity are never valid data here."""
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


def read_json(path: Path, max_bytes: int = 16 * 1024**2) -> Any:
    """Strict JSON from a file: size-capped, UTF-8, no NaN/Infinity; ValueError on any defect."""
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{size} bytes is over the {max_bytes}-byte limit")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=reject_constant)
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg}, line {e.lineno})") from None


def parse_board(data: Any, where: str) -> Board:
    """A validated Board from a board file's JSON, or BoardError listing every problem."""
    if not isinstance(data, Mapping):
        raise BoardError(where, ["expected a JSON object"])
    out: list[str] = [f"{k}: unknown key" for k in data if k not in _BOARD_KEYS]
    if data.get("schema_version") != SCHEMA_VERSION:
        out.append(f"schema_version: expected {SCHEMA_VERSION}")
    for key in ("benchmark", "title", "description", "overall_label"):
        if not isinstance(data.get(key), str) or not data[key]:
            out.append(f"{key}: expected a non-empty string")
    official = data.get("official")
    if not isinstance(official, Mapping) or not isinstance(official.get("protocol"), str):
        out.append("official: expected an object with protocol, judge, scale")
    elif "min_coverage" in official and not (
        is_number(official["min_coverage"]) and 0 <= official["min_coverage"] <= 100
    ):
        out.append("official.min_coverage: expected a percent between 0 and 100")
    columns: list[Column] = []
    cols = data.get("columns")
    if not isinstance(cols, list) or not cols:
        out.append("columns: expected a non-empty list")
        cols = []
    for i, c in enumerate(cols):
        key = c.get("key") if isinstance(c, Mapping) else None
        label = c.get("label") if isinstance(c, Mapping) else None
        if not isinstance(key, str) or not _KEY.match(key) or key in RESERVED:
            out.append(f"columns[{i}].key: expected a lower_snake name that is not reserved")
        elif not isinstance(label, str) or not label:
            out.append(f"columns[{i}].label: expected a non-empty string")
        elif key in (x.key for x in columns):
            out.append(f"columns[{i}].key: {key!r} appears twice")
        else:
            columns.append(Column(key, label))
    tables = data.get("tables")
    if not isinstance(tables, Mapping) or not tables:
        out.append("tables: expected an object of {key: label}")
        tables = {}
    elif not all(
        isinstance(k, str) and _KEY.match(k) and isinstance(v, str) for k, v in tables.items()
    ):
        out.append("tables: keys must be lower_snake names and labels strings")
    rows = data.get("rows")
    if not isinstance(rows, list):
        out.append("rows: expected a list")
        rows = []
    keys = [c.key for c in columns]
    for i, row in enumerate(rows):
        out += validate_row(row, keys, tables, f"rows[{i}]")
    if out:
        raise BoardError(where, out)
    return Board(
        benchmark=data["benchmark"],
        title=data["title"],
        description=data["description"],
        official=dict(official),  # type: ignore[arg-type]
        columns=columns,
        overall_label=data["overall_label"],
        tables=dict(tables),
        rows=[dict(r) for r in rows],
    )
