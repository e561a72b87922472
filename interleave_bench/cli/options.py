"""Options shared by several commands: numeric parsers, ``--json``, the benchmark argument and
the judge options of ``eval`` and ``score`` (one per ``JudgeSpec`` field)."""

from __future__ import annotations

import functools
import inspect
import json
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import fail


def number(
    low: float | None = None, *, above: bool = False, high: float | None = None
) -> Callable[[str], float]:
    """A typer ``parser`` for a finite float in a range (``above``: strictly greater than
    ``low``); typer's ``min=`` lets ``nan`` through and cannot exclude its bound."""

    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number") from None
        if not math.isfinite(x):
            raise typer.BadParameter(f"{value} is not a finite number")
        if low is not None and (x <= low if above else x < low):
            raise typer.BadParameter(f"{value} must be {'>' if above else '>='} {low:g}")
        if high is not None and x > high:
            raise typer.BadParameter(f"{value} must be <= {high:g}")
        return x

    return parse


BenchArg = Annotated[
    str, typer.Argument(help="Benchmark name, or NAME:sample for the bundled mini set.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]

# options shared by `score` and `eval`
ProtocolFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--protocol-file", exists=True, dir_okay=False, help="Official prompt file you supply."
    ),
]
AllowUnofficialOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unofficial",
        help="Use prompts that fail the SHA-256 check (results marked not comparable).",
    ),
]
# The judge options of `eval` and `score`, one per ``JudgeSpec`` field (a field without an option,
# or an option without a field, fails at import): ``judge_options`` adds them all to a command.
JudgeBaseUrlOpt = Annotated[
    str | None, typer.Option("--judge-base-url", help="OpenAI-compatible endpoint.")
]
JudgeModelOpt = Annotated[
    str | None,
    typer.Option(
        "--judge-model",
        help="Judge model at the endpoint, e.g. gpt-4o (needed unless --judge-local).",
    ),
]
JudgeKeyEnvOpt = Annotated[
    str, typer.Option("--judge-key-env", help="Environment variable holding the API key.")
]
JudgeTransportOpt = Annotated[
    str,
    typer.Option(
        "--judge-transport",
        help="sdk (openai.AsyncOpenAI) or aiohttp (lean POST, for fast local servers).",
    ),
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", min=1, help="Judge calls in flight.")]
MaxCostOpt = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        parser=number(0.0),
        help="USD budget (>= 0): no judge request is sent that could take the cost past it; the "
        "rest are errors that a rerun with a larger budget completes.",
    ),
]
RpmOpt = Annotated[
    float | None,
    typer.Option("--rpm", parser=number(0.0, above=True), help="Requests-per-minute limit (> 0)."),
]
TpmOpt = Annotated[
    float | None,
    typer.Option("--tpm", parser=number(0.0, above=True), help="Tokens-per-minute limit (> 0)."),
]
MaxRetriesOpt = Annotated[
    int, typer.Option("--max-retries", min=0, help="Retries of a failed judge request.")
]
DeadlineOpt = Annotated[
    float | None,
    typer.Option(
        "--deadline", parser=number(0.0, above=True), help="Seconds for all judge calls (> 0)."
    ),
]
MaxRetryWaitOpt = Annotated[
    float,
    typer.Option(
        "--max-retry-wait",
        parser=number(0.0),
        help="Longest wait in seconds between judge attempts, whatever Retry-After asks (>= 0).",
    ),
]
JudgeTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--judge-timeout",
        parser=number(0.0, above=True),
        help="Seconds one judge request may take before it is retried (> 0).",
    ),
]
PriceTableOpt = Annotated[
    Path | None,
    typer.Option(
        "--price-table",
        exists=True,
        dir_okay=False,
        help='JSON {"model": [usd_in_per_1M, usd_out_per_1M]}.',
    ),
]
JUDGE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "judge_base_url": (JudgeBaseUrlOpt, None),
    "judge_model": (JudgeModelOpt, None),
    "judge_key_env": (JudgeKeyEnvOpt, "OPENAI_API_KEY"),
    "judge_transport": (JudgeTransportOpt, "sdk"),
    "judge_local": (
        Annotated[
            Path | None,
            typer.Option("--judge-local", help="Run a local VLM judge from this path instead."),
        ],
        None,
    ),
    "trust_remote_code": (
        Annotated[
            bool,
            typer.Option(
                "--trust-remote-code", help="Let --judge-local run the model folder's own code."
            ),
        ],
        False,
    ),
    "judge_local_backend": (
        Annotated[
            str,
            typer.Option(
                "--judge-local-backend",
                help="auto (InternVL's own chat() for an InternVLChatModel checkpoint), "
                "generic or internvl.",
            ),
        ],
        "auto",
    ),
    "judge_system_prompt": (
        Annotated[
            str | None,
            typer.Option(
                "--judge-system-prompt",
                help="System message sent to the judge (none: no system message). MMIE's "
                "default is the one InternVL's chat template inserts.",
            ),
        ],
        None,
    ),
    "concurrency": (ConcurrencyOpt, 16),
    "requests_per_minute": (RpmOpt, None),
    "tokens_per_minute": (TpmOpt, None),
    "max_retries": (MaxRetriesOpt, 6),
    "deadline": (DeadlineOpt, None),
    "max_retry_wait": (MaxRetryWaitOpt, 60.0),
    "judge_timeout": (JudgeTimeoutOpt, 120.0),
    "price_table": (PriceTableOpt, None),
    "max_cost": (MaxCostOpt, None),
    "preflight": (
        Annotated[
            bool,
            typer.Option("--preflight/--no-preflight", help="Probe the judge once before work."),
        ],
        True,
    ),
}


def _check_judge_table() -> None:
    from ..config import JudgeSpec

    fields = set(JudgeSpec.model_fields)
    if set(JUDGE_OPTIONS) != fields:
        raise RuntimeError(f"JUDGE_OPTIONS and JudgeSpec differ: {set(JUDGE_OPTIONS) ^ fields}")
    for name, (_, default) in JUDGE_OPTIONS.items():
        if JudgeSpec.model_fields[name].default != default:
            raise RuntimeError(f"JUDGE_OPTIONS[{name!r}] default differs from JudgeSpec's")


_check_judge_table()


def judge_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command every judge option (from ``JUDGE_OPTIONS``) and pass them to it as one
    validated ``judge: JudgeSpec``; the checks typer cannot do (transport, price table, a
    missing ``--judge-local`` folder unless ``--estimate``) exit 2 or 1 here, for both commands."""
    hints = typing.get_type_hints(fn, include_extras=True)
    sig = inspect.signature(fn)
    kept = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in sig.parameters.values()
        if p.name != "judge"
    ]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
        for name, (ann, default) in JUDGE_OPTIONS.items()
    ]
    kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        from ..config import JudgeSpec

        values = {k: kwargs.pop(k) for k in JUDGE_OPTIONS}
        if values["judge_transport"] not in ("sdk", "aiohttp"):
            raise fail("--judge-transport must be sdk or aiohttp", 2)
        if values["judge_local_backend"] not in ("auto", "generic", "internvl"):
            raise fail("--judge-local-backend must be auto, generic or internvl", 2)
        check_price_table(values["price_table"])
        local = values["judge_local"]
        if local is not None and not kwargs.get("estimate") and not local.exists():
            raise fail(f"--judge-local {local}: no such model folder", 2)
        return fn(**kwargs, judge=JudgeSpec(**values))

    del command.__wrapped__  # typer reads the signature below, not the function's own
    command.__signature__ = sig.replace(parameters=kept + added)  # type: ignore[attr-defined]
    command.__annotations__ = {
        **{p.name: p.annotation for p in kept + added},
        "return": hints.get("return"),
    }
    return command


DataOpt = Annotated[
    Path | None, typer.Option("--data", exists=True, help="Local copy of the benchmark.")
]


def check_price_table(path: Path | None) -> None:
    """Read a ``--price-table`` before anything runs: invalid JSON or a price that is not two
    numbers >= 0 is exit 1 naming the file and the model (typer checked that it is a file)."""
    if path is None:
        return
    shape = 'expected {"model": [usd_in_per_1M, usd_out_per_1M], ...}'
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise fail(f"--price-table {path}: invalid JSON ({e}); {shape}") from None
    if not isinstance(table, dict):
        raise fail(f"--price-table {path}: {shape}")
    for model, price in table.items():
        ok = (
            isinstance(price, list)
            and len(price) == 2
            and all(
                isinstance(x, int | float)
                and not isinstance(x, bool)
                and math.isfinite(x)
                and x >= 0
                for x in price
            )
        )
        if not ok:
            raise fail(f"--price-table {path}: {model!r} is {price!r}; {shape} with numbers >= 0")
