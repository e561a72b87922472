"""Reading a submitted run folder strictly: every file through the record schemas of ``types``,
numbers finite (``NaN``/``Infinity`` are refused at parse time, ``1e999`` after it), each defect a
problem naming the file and line. Unlike the report's tolerant reader, nothing is skipped quietly.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..types import Judgment, Prediction, Result, RunResults, SchemaError
from .intake import Limits
from .schema import read_json, reject_constant

REQUIRED = ("manifest.json", "results.json", "judgments.jsonl")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
DECLARATION = "submission.json"
_DECL_KEYS = {
    "model": str,
    "protocol": str,
    "judge": str,
    "prompt_sha256": dict,
    "comparable": bool,
    "source": str,
    "source_url": str,
    "date": str,
    "note": str,
}


@dataclass
class RunFiles:
    """What a submission holds, as parsed records with their line numbers."""

    manifest: dict[str, Any] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    judgments: list[tuple[int, Judgment]] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    declaration: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    fatal: bool = False  # a required file is missing or unreadable: later checks cannot run


def non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first infinite or NaN float inside ``value`` (None when all are finite)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "<value>"
    if isinstance(value, dict):
        for k, v in value.items():
            if (p := non_finite(v, f"{path}.{k}" if path else str(k))) is not None:
                return p
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if (p := non_finite(v, f"{path}[{i}]")) is not None:
                return p
    return None


def _json_lines(path: Path, limit: int, problems: list[str]) -> list[tuple[int, Any]]:
    size = path.stat().st_size
    if size > limit:
        problems.append(f"{path.name}: {size} bytes is over the {limit}-byte limit")
        return []
    out: list[tuple[int, Any]] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"), parse_constant=reject_constant)
            except UnicodeDecodeError:
                problems.append(f"{path.name} line {n}: not UTF-8")
                continue
            except RecursionError:
                problems.append(f"{path.name} line {n}: nested too deeply")
                continue
            except ValueError as e:
                msg = str(e) if "not allowed" in str(e) else f"invalid JSON ({e})"
                problems.append(f"{path.name} line {n}: {msg}")
                continue
            if (where := non_finite(value)) is not None:
                problems.append(f"{path.name} line {n}: {where} is not a finite number")
                continue
            out.append((n, value))
    return out


def _json_file(path: Path, limits: Limits, problems: list[str]) -> Any:
    try:
        value = read_json(path, limits.max_json)
    except (OSError, ValueError) as e:
        problems.append(f"{path.name}: {e}")
        return None
    if (where := non_finite(value)) is not None:
        problems.append(f"{path.name}: {where} is not a finite number")
        return None
    return value


def _declaration(value: Any, problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        problems.append(f"{DECLARATION}: expected a JSON object")
        return {}
    out: dict[str, Any] = {}
    for k, v in value.items():
        t = _DECL_KEYS.get(k)
        if t is None:
            problems.append(f"{DECLARATION}.{k}: unknown key (allowed: {', '.join(_DECL_KEYS)})")
        elif v is not None and (not isinstance(v, t) or isinstance(v, bool) != (t is bool)):
            problems.append(f"{DECLARATION}.{k}: expected {t.__name__}")
        else:
            out[k] = v
    hashes = out.get("prompt_sha256")
    if hashes is not None and not all(
        isinstance(k, str) and isinstance(v, str) and _HEX64.match(v) for k, v in hashes.items()
    ):
        problems.append(f"{DECLARATION}.prompt_sha256: expected {{name: 64 lowercase hex}}")
        out.pop("prompt_sha256")
    return out


def read_run(root: Path, limits: Limits) -> RunFiles:
    """Parse the run folder's files; schema defects become problems."""
    run = RunFiles()
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        run.problems.append(
            f"missing {', '.join(missing)}: a submission needs manifest.json, results.json and "
            "judgments.jsonl (the run folder written by `ibench eval` or `ibench score`)"
        )
        run.fatal = True
    if (root / "manifest.json").is_file():
        manifest = _json_file(root / "manifest.json", limits, run.problems)
        if isinstance(manifest, dict):
            run.manifest = manifest
        elif manifest is not None:
            run.problems.append("manifest.json: expected a JSON object")
        if not run.manifest:
            run.fatal = True
    if (root / "results.json").is_file():
        doc = _json_file(root / "results.json", limits, run.problems)
        if doc is None:
            run.fatal = True
        else:
            try:
                run.results.extend(RunResults.from_dict(doc).results)
            except (SchemaError, TypeError, ValueError) as e:
                run.problems.append(f"results.json: {e}")
                run.fatal = True
    if (root / "judgments.jsonl").is_file():
        for n, value in _json_lines(root / "judgments.jsonl", limits.max_jsonl, run.problems):
            try:
                run.judgments.append((n, Judgment.from_dict(value)))
            except (SchemaError, TypeError, ValueError) as e:
                run.problems.append(f"judgments.jsonl line {n}: {e}")
    if (root / "predictions.jsonl").is_file():
        for n, value in _json_lines(root / "predictions.jsonl", limits.max_jsonl, run.problems):
            try:
                run.predictions.append(Prediction.from_dict(value))
            except (SchemaError, TypeError, ValueError) as e:
                run.problems.append(f"predictions.jsonl line {n}: {e}")
    if (root / DECLARATION).is_file():
        value = _json_file(root / DECLARATION, limits, run.problems)
        if value is not None:
            run.declaration = _declaration(value, run.problems)
    return run


def run_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """Bench variant, limit and dataset revision from an ``eval`` or a ``score`` manifest."""
    identity = manifest.get("identity") if isinstance(manifest.get("identity"), dict) else {}
    bench = identity.get("bench", manifest.get("bench"))
    revision = identity.get("dataset_revision", manifest.get("dataset_revision"))
    limit = identity.get("limit")
    return {
        "command": manifest.get("command"),
        "bench": bench if isinstance(bench, str) else None,
        "limit": limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        "dataset_revision": revision if isinstance(revision, str) else None,
        "model": identity.get("model") if isinstance(identity.get("model"), str) else None,
        "identity_sha256": manifest.get("identity_sha256"),
        "version": manifest.get("interleave_bench"),
    }
