"""Official judge prompts: never copied into this project, always fetched from the pinned source
(or read from a file the user supplies) and checked against the SHA-256 the reference pins.

A mismatch is an error unless the user allows an unofficial prompt; the result then says it is not
comparable with published numbers. Python sources are read with ``ast`` only, never imported.
"""

from __future__ import annotations

import ast
import hashlib
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..benchmarks.base import cache_home

MMIE_COMMIT = "eb0fd6ecf14576760b5c3deb95c47579cf0cc36e"
MMIE_URL = f"https://raw.githubusercontent.com/Lillianwei-h/MMIE/{MMIE_COMMIT}/prompts.py"
MMIE_FILE_SHA256 = "ed1e1a14a4e356755c249eebbab53c6c2ff27850c3a741639eff06c1c57cfb0b"
MMIE_CONSTANTS = {
    "SA_SYSTEM_PROMPT": "9e29bd376367a88051001c1592bd75851fda68326c7ea762bb79170c080331a3",
    "PBL_SYSTEM_PROMPT": "b80214d31c9c25c5ed00d62a990bf422cf2bee304bd6dd29c328692b4b889d49",
    "MSR_PROMPT": "72bc495ec21b8c185bee68c351981dbc9a041aee2ba1c27bd287caa9099a9681",
}

ISG_COMMIT = "de504cdda1cab7bd874c252f670eb1833290db5a"
ISG_URL = (
    f"https://raw.githubusercontent.com/Dongping-Chen/ISG/{ISG_COMMIT}/ISG_eval/get_judge_prompt.py"
)
ISG_FILE_SHA256 = "774b3259115e4b0bd7e75b16f14db9bb78acd10dcb43997ea791c26c092afc48"

OPENING_COMMIT = "56b663bc84ef64960c0253325c4a89cd10ddf7f1"
OPENING_BASE = f"https://raw.githubusercontent.com/LanceZPF/OpenING/{OPENING_COMMIT}/"
OPENING_FILES = {
    "judge_system": (
        "prompts/judge_system.txt",
        "83fd66e80317508d048225eac2b398394e247da1460501142b6810532334d0f4",
    ),
    "detailed_score_system": (
        "prompts/detailed_score_system.txt",
        "5aa8a5ccfab72ce731a8c53c942845569b1cdaa2777b6f6f126bf38cff4d3c13",
    ),
}


class ProtocolError(ValueError):
    """A prompt file is missing, unreadable, malformed, or not the official one."""


@dataclass(frozen=True)
class PinnedFile:
    """One official prompt file: where it is published, its cache name, its pinned SHA-256."""

    url: str
    cache_name: str
    sha256: str

    @property
    def cache_path(self) -> Path:
        return cache_home() / "protocols" / self.cache_name


def pinned_files(protocol: str) -> tuple[PinnedFile, ...]:
    """The official prompt files a built-in protocol reads (none: own rubric or offline)."""
    if protocol == "mmie":
        return (PinnedFile(MMIE_URL, f"mmie-{MMIE_COMMIT[:7]}-prompts.py", MMIE_FILE_SHA256),)
    if protocol == "isg":
        return (PinnedFile(ISG_URL, f"isg-{ISG_COMMIT[:7]}-get_judge_prompt.py", ISG_FILE_SHA256),)
    kind = {"opening_scores": "detailed_score_system", "opening_pairwise": "judge_system"}.get(
        protocol
    )
    if kind is None:
        return ()
    rel, pinned = OPENING_FILES[kind]
    return (
        PinnedFile(OPENING_BASE + rel, f"opening-{OPENING_COMMIT[:7]}-{Path(rel).name}", pinned),
    )


def is_cached(pf: PinnedFile) -> bool:
    """True when the cache holds the file with exactly its pinned SHA-256."""
    try:
        return hashlib.sha256(pf.cache_path.read_bytes()).hexdigest() == pf.sha256
    except OSError:
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or bool(
        os.environ.get("IBENCH_OFFLINE")
    )


def _store(pf: PinnedFile, data: bytes, source: str) -> Path:
    """Write ``data`` into the cache if (and only if) its SHA-256 is the pinned one."""
    got = hashlib.sha256(data).hexdigest()
    if got != pf.sha256:
        raise ProtocolError(
            f"{source}: SHA-256 {got[:12]}... is not the pinned {pf.sha256[:12]}... of {pf.url}; "
            "use the file published at that URL"
        )
    dest = pf.cache_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, dest)  # a reader never sees half a file
    return dest


def fetch_pinned(pf: PinnedFile, from_file: str | Path | None = None) -> tuple[Path, bool]:
    """Put the official file into the cache for later offline use: from ``from_file`` or by
    downloading the pinned URL, SHA-256 checked either way. Returns (path, already cached)."""
    if from_file is None and is_cached(pf):
        return pf.cache_path, True
    if from_file is not None:
        path = Path(from_file)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ProtocolError(f"{path}: cannot read ({e.strerror or e})") from None
        return _store(pf, data, str(path)), False
    fix = "download it on a machine with network and pass --from FILE"
    if _offline():
        raise ProtocolError(f"offline: cannot download {pf.url}; {fix}")
    try:
        with urllib.request.urlopen(pf.url, timeout=30) as resp:  # noqa: S310 - pinned URL
            data = resp.read(1_000_000)
    except OSError as e:
        raise ProtocolError(f"cannot download {pf.url} ({e}); {fix}") from None
    return _store(pf, data, pf.url), False


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PromptSet:
    """Prompt texts by name, where they came from, and whether each matched its pinned hash."""

    texts: dict[str, str]
    source: str
    official: bool
    mismatched: tuple[str, ...] = ()
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def template_sha256(self) -> str:
        """One hash over all templates: part of every judgment cache key."""
        return sha256_text("\n".join(f"{k}={self.hashes[k]}" for k in sorted(self.hashes)))


def _fetch(url: str, dest: Path, expected_sha256: str | None) -> bytes:
    """Download once into the cache; refuse to cache a file whose hash is not the pinned one."""
    if dest.is_file():
        return dest.read_bytes()
    fix = "pass --protocol-file PATH, or run `ibench protocols fetch` once with network"
    if _offline():
        raise ProtocolError(f"offline: cannot download {url}; {fix}")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - pinned https URL
            data = resp.read(1_000_000)
    except OSError as e:
        raise ProtocolError(f"cannot download {url} ({e}); {fix}") from None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ProtocolError(f"{url}: downloaded file does not match the pinned SHA-256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return data


def _string_value(node: ast.AST, name: str, path: str) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _string_value(node.left, name, path) + _string_value(node.right, name, path)
    raise ProtocolError(f"{path}: {name} is not a plain string constant")


def read_python_constants(source: str, names: list[str], path: str) -> dict[str, str]:
    """String constants assigned at module level, read with ``ast`` (the file is never run)."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ProtocolError(f"{path}: not valid Python ({e.msg}, line {e.lineno})") from None
    found: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name) and target.id in names:
                    found[target.id] = _string_value(stmt.value, target.id, path)
    missing = [n for n in names if n not in found]
    if missing:
        raise ProtocolError(f"{path}: missing {', '.join(missing)}")
    return found


def _check(
    texts: dict[str, str], pinned: dict[str, str], source: str, allow_unofficial: bool
) -> PromptSet:
    hashes = {k: sha256_text(v) for k, v in texts.items()}
    mismatched = tuple(k for k in texts if hashes[k] != pinned.get(k))
    if mismatched and not allow_unofficial:
        raise ProtocolError(
            f"{source}: {', '.join(mismatched)} do not match the official SHA-256; "
            "pass --allow-unofficial to use them anyway (results will be marked not comparable)"
        )
    return PromptSet(texts, source, official=not mismatched, mismatched=mismatched, hashes=hashes)


def _source(protocol_file: str | Path | None, pf: PinnedFile) -> tuple[str, str]:
    """(text, where it came from): the user's file, or the pinned download (cached)."""
    if protocol_file is not None:
        path = Path(protocol_file)
        try:
            return path.read_bytes().decode("utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as e:
            raise ProtocolError(f"{path}: cannot read ({e})") from None
    return _fetch(pf.url, pf.cache_path, pf.sha256).decode("utf-8"), pf.url


def load_mmie_prompts(
    protocol_file: str | Path | None = None, *, allow_unofficial: bool = False
) -> PromptSet:
    """SA/PBL/MSR system prompts from MMIE's pinned ``prompts.py`` (or a file you supply)."""
    source_text, where = _source(protocol_file, pinned_files("mmie")[0])
    texts = read_python_constants(source_text, list(MMIE_CONSTANTS), where)
    return _check(texts, MMIE_CONSTANTS, where, allow_unofficial)


def load_opening_prompt(
    kind: str, protocol_file: str | Path | None = None, *, allow_unofficial: bool = False
) -> PromptSet:
    """OpenING's ``judge_system`` (pairwise) or ``detailed_score_system`` (7 criteria) prompt."""
    pinned = OPENING_FILES[kind][1]
    protocol = "opening_scores" if kind == "detailed_score_system" else "opening_pairwise"
    text, where = _source(protocol_file, pinned_files(protocol)[0])
    return _check({kind: text}, {kind: pinned}, where, allow_unofficial)


def load_text_prompt(name: str, text: str, source: str) -> PromptSet:
    """Our own rubric (or any unpinned prompt): usable, never comparable."""
    return PromptSet(
        {name: text}, source, official=False, mismatched=(name,), hashes={name: sha256_text(text)}
    )


def user_prompt_file(path: Path | None, name: str, protocol: str) -> PromptSet | None:
    """The prompt file a user passed as ``protocol_file`` for an unpinned protocol, as prompt
    ``name`` (never comparable); ``None`` when none was given. An unreadable file is a
    ``ValueError`` naming it."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the {protocol} prompt ({e})") from None
    return load_text_prompt(name, text, str(path))
