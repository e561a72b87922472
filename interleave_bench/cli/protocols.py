"""``ibench protocols``: list the scoring protocols, and fetch official judge prompts into the
cache ahead of time so that a later ``score`` or ``eval`` runs offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from .errors import fail
from .options import JsonOpt
from .output import out, print_json

protocols_app = typer.Typer(
    help="Scoring protocols: what each is, and its official prompt files (fetch them once).",
    no_args_is_help=True,
)


def protocol_rows() -> list[dict[str, Any]]:
    """One row per registered protocol: kind, scale, benchmarks, prompt files and their cache
    state, and whether its results can be leaderboard-comparable."""
    from ..protocols import get_protocol, protocol_names
    from ..scorers.protocol_files import is_cached, pinned_files

    rows = []
    for name in protocol_names():
        spec = get_protocol(name)
        files = pinned_files(name)
        rows.append(
            {
                "name": name,
                "kind": spec.kind,
                "scale": spec.scale,
                "benchmarks": list(spec.benchmarks),
                "description": spec.description,
                # comparable needs the official prompt, verified against its pinned SHA-256
                "comparable": bool(spec.prompt_sha256),
                "prompt_files": [
                    {
                        "url": f.url,
                        "sha256": f.sha256,
                        "cached": is_cached(f),
                        "path": str(f.cache_path),
                    }
                    for f in files
                ],
                "prompt": _prompt_state(spec.kind, bool(spec.prompt_sha256), files, is_cached),
            }
        )
    return rows


def _prompt_state(kind: str, pinned: bool, files: tuple, is_cached: Any) -> str:
    if kind == "offline":
        return "-"
    if not files:
        return "pinned" if pinned else "own rubric"
    return "cached" if all(is_cached(f) for f in files) else "missing"


@protocols_app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """Every registered protocol: kind, scale, benchmarks, official prompt (cached or not) and
    whether its results can be compared with published leaderboard rows."""
    rows = protocol_rows()
    if as_json:
        print_json(rows)
        return
    table = Table(
        title="scoring protocols", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0)
    )
    for col in ("name", "kind", "scale", "benchmarks", "prompt sha256", "comparable"):
        table.add_column(col, no_wrap=col != "benchmarks")
    for r in rows:
        sha = " ".join(f["sha256"][:8] for f in r["prompt_files"])
        table.add_row(
            escape(r["name"]),
            r["kind"],
            escape(r["scale"]),
            escape(", ".join(r["benchmarks"]) or "any"),
            f"{r['prompt']} {sha}".strip(),
            "yes" if r["comparable"] else "no",
        )
    out.print(table)
    out.print("Fetch official prompts once for offline use: ibench protocols fetch NAME")


@protocols_app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="A protocol with official prompts: see `list`.")],
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            exists=True,
            dir_okay=False,
            help="Use this copy of the official file (checked against the pinned SHA-256).",
        ),
    ] = None,
) -> None:
    """Download the official prompt files of NAME from their pinned source into the cache
    ($IBENCH_HOME/protocols), SHA-256 checked, so that later runs need no network."""
    from ..protocols import get_protocol
    from ..scorers.protocol_files import fetch_pinned, pinned_files

    spec = get_protocol(name)  # an unknown name: exit 2 with a did-you-mean
    files = pinned_files(spec.name)
    if not files:
        with_files = [r["name"] for r in protocol_rows() if r["prompt_files"]]
        raise fail(
            f"protocol {spec.name!r} has no official prompt file to fetch "
            f"(those that do: {', '.join(with_files)})",
            2,
        )
    if from_file is not None and len(files) > 1:
        raise fail(f"protocol {spec.name!r} has {len(files)} files; --from takes one", 2)
    for f in files:
        path, was_cached = fetch_pinned(f, from_file)
        state = "already cached" if was_cached else "cached"
        out.print(f"{spec.name}: {state} {path} (sha256 {f.sha256[:12]}...)", markup=False)
