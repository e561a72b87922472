"""Readers for the two file shapes benchmarks ship: one JSON array, or JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .problems import DataError, Problem

MAX_JSON_DEPTH = 100
"""Deeper nesting than this in a user's JSON is refused: no benchmark or prediction comes close,
and a fixed cap keeps every later step (recursive checks, re-encoding) clear of RecursionError."""


def _within_depth(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:  # iterative: a recursive walk would hit the very limit it guards against
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        kids = node.values() if isinstance(node, dict) else node
        stack.extend((k, depth + 1) for k in kids if isinstance(k, (dict, list)))
    return True


def load_json(text: str, name: str) -> Any:
    """``json.loads`` for untrusted text: too deep nesting is a DataError naming ``name`` (never a
    RecursionError, which would depend on how deep the caller's stack already is); a syntax error
    is left as ``json.JSONDecodeError`` for the caller to place."""
    try:
        value = json.loads(text)
    except RecursionError:
        value, ok = None, False
    else:
        ok = not isinstance(value, (dict, list)) or _within_depth(value)
    if not ok:
        raise DataError(f"{name}: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return value


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{name}: not valid UTF-8 (byte {e.start}, line {line})") from None


def read_json_array(path: Path) -> list[Any]:
    """Read a file holding one JSON array; any defect is a DataError naming the file and place."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    text = _decode(data, str(path))
    try:
        value = load_json(text, str(path))
    except json.JSONDecodeError as e:
        stripped = text.rstrip()
        truncated = e.pos >= len(stripped) or (
            stripped.startswith("[") and not stripped.endswith("]")
        )
        what = "truncated JSON (the file ends early)" if truncated else "invalid JSON"
        raise DataError(f"{path}: {what} at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON array of rows, got {type(value).__name__}")
    return value


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any, Problem | None]]:
    """Yield ``(index, row, problem)`` per non-blank line; a bad line is a problem, not a stop."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    index = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield (
                index,
                None,
                Problem(index, "<line>", f"line {lineno}: not valid UTF-8 (byte {e.start})"),
            )
        else:
            try:
                yield index, load_json(text, f"line {lineno}"), None
            except json.JSONDecodeError as e:
                yield (
                    index,
                    None,
                    Problem(
                        index, "<line>", f"line {lineno}: invalid JSON at column {e.colno}: {e.msg}"
                    ),
                )
            except DataError as e:
                yield index, None, Problem(index, "<line>", str(e))
        index += 1
