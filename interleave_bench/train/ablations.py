"""Training runs next to the paper's ablation rows (``ibench train compare``).

Each run folder of ``ibench train grpo`` holds its config (``config.json``) and its step log.
A run's *setting* is read from its config, the way the paper's table describes a row: which
reward components (r_f, r_t, r_v), process supervision on or off, KL on or off, the group size,
the visual reward model, QLoRA. A run whose setting equals a row of the paper's table
(``train/ablations/paper_ablations.csv``, shipped with the recipes) is shown with that row's
published scores. Final rewards come from the log; evaluation scores from the eval run folders
under ``<run>/eval/`` (``ibench eval ... --out <run>/eval/mmie``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: reward protocols -> the paper's component (a protocol of the older recipes maps too)
COMPONENTS = {
    "format_fidelity": "r_format",
    "structure": "r_format",
    "text_critic": "r_text",
    "interleaved_eval": "r_text",
    "visual_alignment": "r_visual",
    "clip_score": "r_visual",
}
SETTING_KEYS = (
    "r_format",
    "r_text",
    "r_visual",
    "process_reward",
    "kl",
    "group_size",
    "visual_reward_model",
)
FINAL_STEPS = 5  # the final reward: mean reward over the last steps of the log


class CompareError(ValueError):
    """A folder that is not a finished training run, or an unreadable paper table."""


@dataclass(frozen=True)
class PaperRow:
    study: str
    setting: dict[str, str]
    mmie: float | None
    interleavedbench: float | None


@dataclass
class RunSummary:
    run: str
    steps: int
    reward_first: float | None
    reward_last: float | None
    reward_final: float | None  # mean over the last FINAL_STEPS steps
    setting: dict[str, str]
    qlora: bool
    evals: dict[str, float | None] = field(default_factory=dict)  # "benchmark/protocol" -> overall
    paper: PaperRow | None = None


def _num(value: str) -> float | None:
    return float(value) if value.strip() else None


def read_paper(path: Path) -> list[PaperRow]:
    """The paper's ablation rows (``#`` lines are comments)."""
    try:
        lines = [x for x in path.read_text(encoding="utf-8").splitlines() if not x.startswith("#")]
    except OSError as e:
        raise CompareError(f"{path}: cannot read the paper's ablation table ({e})") from None
    rows = []
    for n, rec in enumerate(csv.DictReader(lines), 2):
        try:
            rows.append(
                PaperRow(
                    rec["study"],
                    {k: rec[k] for k in SETTING_KEYS},
                    _num(rec["mmie"]),
                    _num(rec["interleavedbench"]),
                )
            )
        except (KeyError, ValueError) as e:
            raise CompareError(f"{path}, row {n}: {e}") from None
    return rows


def setting_of(config: dict[str, Any]) -> tuple[dict[str, str], bool]:
    """``(setting, qlora)`` of a run config in the paper table's terms."""
    parts: dict[str, dict[str, Any]] = {}
    for spec in config.get("rewards") or []:
        component = COMPONENTS.get(str(spec.get("protocol")))
        if component and float(spec.get("weight", 1.0)) != 0:
            parts[component] = spec
    if not config.get("rewards"):  # the default reward: the structure check only
        parts["r_format"] = {"protocol": "structure"}
    visual = parts.get("r_visual")
    model = ""
    if visual is not None:
        backend = (visual.get("options") or {}).get("backend", "auto")
        model = {"imagereward": "ImageReward", "clip": "CLIP-score"}.get(backend, backend)
        if visual.get("protocol") == "clip_score":
            model = "CLIP-score"
    advantage = config.get("advantage") or (
        "both" if float(config.get("process_weight") or 0) > 0 else "outcome"
    )
    setting = {
        "r_format": "yes" if "r_format" in parts else "no",
        "r_text": "yes" if "r_text" in parts else "no",
        "r_visual": "yes" if visual is not None else "no",
        "process_reward": "yes" if advantage in ("process", "both") else "no",
        "kl": "yes" if float(config.get("beta") or 0) > 0 else "no",
        "group_size": str(config.get("group_size", "")),
        "visual_reward_model": model,
    }
    qlora = bool(config.get("lora")) and bool(config.get("quantization"))
    return setting, qlora


def paper_row(setting: dict[str, str], qlora: bool, rows: list[PaperRow]) -> PaperRow | None:
    """The paper's row with the same setting (the QLoRA row for a quantized run)."""
    for row in rows:
        if (row.study == "qlora") == qlora and row.setting == setting:
            return row
    return None


def read_run(folder: Path, paper: list[PaperRow]) -> RunSummary:
    """One training run folder: its config, rewards over the log, eval scores, paper row."""
    from ..compare import read_rows
    from ..runs import RunFolderError
    from .checkpoints import read_log
    from .output_dir import LOG_NAME

    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CompareError(f"{folder}: no config.json (not a folder of ibench train grpo)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CompareError(f"{cfg_path}: cannot read ({e})") from None
    if not isinstance(config, dict):
        raise CompareError(f"{cfg_path}: expected a JSON object")
    records = [r for r in read_log(folder / LOG_NAME) if "step" in r]
    rewards = [r.get("reward_mean") for r in records]
    tail = [x for x in rewards[-FINAL_STEPS:] if isinstance(x, (int, float))]
    setting, qlora = setting_of(config)
    evals: dict[str, float | None] = {}
    eval_dir = folder / "eval"
    for sub in sorted(eval_dir.iterdir()) if eval_dir.is_dir() else []:
        if (sub / "results.json").is_file():
            try:
                for row in read_rows([sub]):
                    evals[f"{row.benchmark}/{row.protocol}"] = row.overall
            except RunFolderError as e:
                raise CompareError(str(e)) from None
    return RunSummary(
        run=str(folder),
        steps=len(records),
        reward_first=rewards[0] if rewards else None,
        reward_last=rewards[-1] if rewards else None,
        reward_final=sum(tail) / len(tail) if tail else None,
        setting=setting,
        qlora=qlora,
        evals=evals,
        paper=paper_row(setting, qlora, paper),
    )


def describe(summary: RunSummary) -> str:
    """The setting in a few words: ``r_f+r_t+r_v, process, KL, G=4, ImageReward``."""
    s = summary.setting
    names = [
        n for n, k in (("r_f", "r_format"), ("r_t", "r_text"), ("r_v", "r_visual")) if s[k] == "yes"
    ]
    words = ["+".join(names) or "no reward"]
    words.append("process" if s["process_reward"] == "yes" else "outcome")
    words.append("KL" if s["kl"] == "yes" else "no KL")
    words.append(f"G={s['group_size']}")
    if s["visual_reward_model"]:
        words.append(s["visual_reward_model"])
    if summary.qlora:
        words.append("QLoRA")
    return ", ".join(words)


def to_json(summaries: list[RunSummary]) -> list[dict[str, Any]]:
    out = []
    for s in summaries:
        row = asdict(s)
        row["description"] = describe(s)
        out.append(row)
    return out
