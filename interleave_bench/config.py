"""Typed configuration: the judge spec shared by eval, score, audits and training rewards, and one
loader (``from_yaml(path, overrides)``) for every config class, so the Python API and the CLI
take the same, validated settings.

Field checking is written once here: an unknown key is named with its dotted path and a "did
you mean"; a bad value is named with its path and what was expected (pydantic does the typed
validation and gives the locations).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override with an unknown key or a bad value; the message names the
    file, the dotted key and how to fix it."""


class JudgeSpec(BaseModel):
    """Which judge answers and under which limits; one definition for ``ibench eval``,
    ``ibench score`` (their judge options are generated from these fields), leaderboard audits
    and recipe rewards. Field names are the CLI's option names (``--judge-model`` is
    ``judge_model``; ``--rpm``/``--tpm`` are ``requests_per_minute``/``tokens_per_minute``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_key_env: str = "OPENAI_API_KEY"  # the variable's name: a key is never written
    judge_transport: Literal["sdk", "aiohttp"] = "sdk"
    judge_local: Path | None = None  # a local VLM judge instead of an endpoint
    trust_remote_code: bool = False
    # auto: InternVL's own chat() when the checkpoint's config names InternVLChatModel
    judge_local_backend: Literal["auto", "generic", "internvl"] = "auto"
    # None: the protocol's default (MMIE: InternVL's template message); "none": no system message
    judge_system_prompt: str | None = None
    concurrency: int = Field(16, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_retries: int = Field(6, ge=0)
    deadline: float | None = Field(None, gt=0)  # seconds for all judge calls
    max_retry_wait: float = Field(60.0, ge=0)  # seconds: the longest one wait between attempts
    judge_timeout: float = Field(120.0, gt=0)  # seconds: one request, before it is retried
    price_table: Path | None = None
    max_cost: float | None = Field(None, ge=0)  # USD: no request may take the cost past it
    preflight: bool = True  # probe the judge once before any work

    def identity(self) -> dict[str, Any]:
        """What makes two runs' judges the same judge (limits and budgets do not)."""
        return {
            "judge_model": self.judge_model,
            "judge_base_url": self.judge_base_url,
            "judge_local": None if self.judge_local is None else str(self.judge_local),
            # only when set: older run folders keep their identity
            **(
                {}
                if self.judge_system_prompt is None
                else {"judge_system_prompt": self.judge_system_prompt}
            ),
            **(
                {}
                if self.judge_local_backend == "auto"
                else {"judge_local_backend": self.judge_local_backend}
            ),
        }

    def describe(self) -> dict[str, Any]:
        """The manifest's ``judge`` entry (the key's variable name only, never the key)."""
        return {
            "model": self.judge_model or (str(self.judge_local) if self.judge_local else None),
            "base_url": self.judge_base_url,
            "api_key_env": self.judge_key_env,
            "transport": self.judge_transport,
            "temperature": 0.0,
            "seed": 0,
        }


class PipelineSpec(BaseModel):
    """The chat endpoint and image generator of a ``pipeline`` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chat_base_url: str | None = None
    image_generator: str | None = None  # openai:MODEL or diffusers:PATH
    image_base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"


# ------------------------------------------------------------------------- field checking


def _fields(tp: Any) -> dict[str, Any] | None:
    """Field name -> type of a dataclass or pydantic model type; ``None`` for anything else."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {k: f.annotation for k, f in tp.model_fields.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(tp) if f.init}
    return None


def _nested(tp: Any) -> Any:
    """The config class inside ``X | None``, if any."""
    if _fields(tp) is not None:
        return tp
    for arg in typing.get_args(tp):
        if _fields(arg) is not None:
            return arg
    return None


def check_keys(data: Mapping[str, Any], cls: Any, where: str, prefix: str = "") -> None:
    """Refuse a key ``cls`` does not have, at any depth, naming it and the closest known key."""
    fields = _fields(cls) or {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(fields)}"
            raise ConfigError(f"{where}: {path}: unknown key{hint}")
        # a mapping-valued key may name the settings class its inner keys belong to
        inner = _nested(fields[key]) or getattr(cls, "__config_keys__", {}).get(key)
        if inner is not None and isinstance(value, Mapping):
            check_keys(value, inner, where, f"{path}.")


def _error_text(e: ValidationError, where: str) -> str:
    first = e.errors()[0]
    loc = ".".join(str(x) for x in first["loc"] if not str(x).startswith("function-"))
    if not loc and first["type"] == "value_error":  # a __post_init__ check names its own key
        return f"{where}: {first['msg'].removeprefix('Value error, ')}"
    return f"{where}: {loc or '(top)'}: {first['msg']} (got {first.get('input')!r})"


def build(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """``cls`` from plain data, keys checked, values validated; ``ConfigError`` naming the key."""
    check_keys(data, cls, where)
    try:
        return TypeAdapter(cls).validate_python(dict(data))
    except ValidationError as e:
        raise ConfigError(_error_text(e, where)) from None


def _parse_override(item: str) -> tuple[list[str], Any]:
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. judge.concurrency=4)")
    return key.strip().split("."), yaml.safe_load(raw)


def merge_overrides(
    data: dict[str, Any], overrides: Mapping[str, Any] | Iterable[str] | None
) -> dict[str, Any]:
    """``data`` with dotted ``overrides`` (``{"judge.concurrency": 4}`` or ``["a.b=1"]``) set."""
    items: list[tuple[list[str], Any]] = []
    if isinstance(overrides, Mapping):
        items = [(str(k).split("."), v) for k, v in overrides.items()]
    elif overrides is not None:
        items = [_parse_override(x) for x in overrides]
    out = dict(data)
    for keys, value in items:
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            node[k] = dict(child) if isinstance(child, Mapping) else {}
            node = node[k]
        node[keys[-1]] = value
    return out


def from_yaml(
    cls: type[T], path: Path, overrides: Mapping[str, Any] | Iterable[str] | None = None
) -> T:
    """``cls`` from a YAML (or JSON) mapping at ``path`` with dotted overrides applied."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top")
    return build(cls, merge_overrides(data, overrides), str(path))
