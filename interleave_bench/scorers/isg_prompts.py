"""ISG-Bench's judge prompts: the official ``ISG_eval/get_judge_prompt.py`` at the pinned commit
(downloaded or supplied by the user, whole-file SHA-256 checked, read with ``ast`` and never run), or
our own wording, which is never comparable with published numbers.

Names used here: ``Text-Text``, ``Text-Image``, ``Image-Image`` (block level, formatted with the
requirement), ``DSG`` (image level), ``W_GT`` (holistic, four pieces sent around the query, the
answer and the golden answer), ``Score`` and ``Yes_No`` (the two block requirements).
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from pathlib import Path

from .protocol_files import (
    ISG_FILE_SHA256,
    ISG_URL,
    ProtocolError,
    _fetch,
    pinned_files,
    sha256_text,
)

__all__ = ["ISG_FILE_SHA256", "ISG_URL", "ISGPrompts", "load_isg_prompts", "own_prompts"]

#: module-level names in the official file -> our names
STRINGS = {
    "_TEXT_TEXT_JUDGE_PROMPT": "Text-Text",
    "_TEXT_IMAGE_JUDGE_PROMPT": "Text-Image",
    "_IMAGE_IMAGE_JUDGE_PROMPT": "Image-Image",
    "_DSG_PROMPT": "DSG",
}
HOLISTIC = "_EVALUATE_WHOLE_W_GT_PROMPT"
REQUIREMENTS = "VQA_dict"

# Our own wording (not ISG's): same placeholders, so the protocol runs without the official file.
OWN = {
    "Text-Text": (
        "Two texts and a statement about them follow.\nCriterion: {requirement}\n"
        'Reply with a JSON object: "Judge" holds your verdict, "Reason" one sentence.\n'
        "Text 1: {text1}\nText 2: {text2}\nStatement: {question}\n"
    ),
    "Text-Image": (
        "A text, an image and a statement about them follow.\nCriterion: {requirement}\n"
        'Reply with a JSON object: "Judge" holds your verdict, "Reason" one sentence.\n'
        "Text: {text}\nThe image is attached.\nStatement: {question}\n"
    ),
    "Image-Image": (
        "Two images and a statement about them follow.\nCriterion: {requirement}\n"
        'Reply with a JSON object: "Judge" holds your verdict, "Reason" one sentence.\n'
        "Statement: {question}\n"
    ),
    "DSG": (
        "Look at the attached image and answer the question about it with Yes or No.\n"
        'Reply with a JSON object: "Judge" is "Yes" or "No", "Reason" one sentence.\n'
        "Question: {question}\n"
    ),
    "Score": "Give a whole number from 1 (not at all) to 10 (fully) for how true the statement is.",
    "Yes_No": "Answer 'Yes' when the statement is true of the inputs, otherwise 'No'.",
}
OWN_HOLISTIC = (
    "Rate how well a model answered a request that mixes text and images. Reply with a JSON "
    'object whose key "overall_score" is a whole number from 1 to 10. The request:',
    "The model's answer:",
    "A reference answer:",
    'Now reply with the JSON object holding "overall_score".',
)


@dataclass(frozen=True)
class ISGPrompts:
    """The prompt texts by our names, the four holistic pieces, and where they came from."""

    texts: dict[str, str]
    holistic: tuple[str, str, str, str]
    source: str
    official: bool
    sha256: str

    @property
    def template_sha256(self) -> str:
        """Part of every judgment cache key: a change of wording never reuses an old verdict."""
        return self.sha256


def _literal(node: ast.AST, name: str, path: str) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ProtocolError(f"{path}: {name} is not a plain literal") from None


def parse_prompt_file(source: str, path: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Read the prompt constants of a ``get_judge_prompt.py`` with ``ast`` (the file never runs)."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ProtocolError(f"{path}: not valid Python ({e.msg}, line {e.lineno})") from None
    values: dict[str, object] = {}
    wanted = {*STRINGS, HOLISTIC, REQUIREMENTS}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name) and target.id in wanted:
                    values[target.id] = _literal(stmt.value, target.id, path)
    missing = sorted(wanted - set(values))
    if missing:
        raise ProtocolError(f"{path}: missing {', '.join(missing)}")
    texts: dict[str, str] = {}
    for const, ours in STRINGS.items():
        if not isinstance(values[const], str):
            raise ProtocolError(f"{path}: {const} is not a string")
        texts[ours] = values[const]  # type: ignore[assignment]
    reqs = values[REQUIREMENTS]
    if not isinstance(reqs, dict) or not all(
        isinstance(reqs.get(k), str) for k in ("Score", "Yes_No")
    ):
        raise ProtocolError(f"{path}: {REQUIREMENTS} needs string entries Score and Yes_No")
    texts["Score"], texts["Yes_No"] = reqs["Score"], reqs["Yes_No"]
    pieces = values[HOLISTIC]
    if not (
        isinstance(pieces, list) and len(pieces) == 4 and all(isinstance(p, str) for p in pieces)
    ):
        raise ProtocolError(f"{path}: {HOLISTIC} is not a list of four strings")
    return texts, tuple(pieces)


def own_prompts() -> ISGPrompts:
    """Our wording: usable anywhere, never comparable."""
    blob = "\n".join(f"{k}={v}" for k, v in sorted(OWN.items())) + "\n".join(OWN_HOLISTIC)
    return ISGPrompts(dict(OWN), OWN_HOLISTIC, "own wording", False, sha256_text(blob))


def load_isg_prompts(
    protocol_file: str | Path | None = None, *, allow_unofficial: bool = False
) -> ISGPrompts:
    """The official prompts (the pinned download, cached, or ``protocol_file``), SHA-256 checked.

    A file that is not the pinned one is refused unless ``allow_unofficial``; without any file and
    without network, ``allow_unofficial`` falls back to our own wording (not comparable).
    """
    [pinned] = pinned_files("isg")
    if protocol_file is not None:
        path = Path(protocol_file)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ProtocolError(f"{path}: cannot read ({e.strerror or e})") from None
        where = str(path)
    else:
        try:
            data = _fetch(pinned.url, pinned.cache_path, pinned.sha256)
        except ProtocolError:
            if allow_unofficial:
                return own_prompts()
            raise
        where = pinned.url
    digest = hashlib.sha256(data).hexdigest()
    official = digest == pinned.sha256
    if not official and not allow_unofficial:
        raise ProtocolError(
            f"{where}: SHA-256 {digest[:12]}... is not the pinned {pinned.sha256[:12]}... of "
            f"{pinned.url}; pass --allow-unofficial to use it anyway (not comparable)"
        )
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{where}: not UTF-8 text") from None
    texts, pieces = parse_prompt_file(source, where)
    return ISGPrompts(texts, pieces, where, official, digest)  # type: ignore[arg-type]
