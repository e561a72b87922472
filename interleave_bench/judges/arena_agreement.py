"""Pairwise judges against a reference: OpenING's arena agreement and position bias.

``opening_agreement`` reproduces OpenING's ``calculate_agreement.py`` (commit 56b663b) on its
published arena files, by our own code: each file becomes a dict keyed by the string
``f"{data_id}_{model_A.name}_{model_B.name}"`` (a later row with the same key replaces the
earlier one), the reference file's keys are walked and those the candidate also holds are
compared; the unseen/seen split reads the two model names back as the key's last two
``_``-separated fields. Beside that official table comes the honest count: comparisons keyed by
the (data_id, A, B) triple itself, duplicates and string-key collisions counted instead of
overwritten, and the same table over the comparisons that survive.

``position_bias`` reads a ``--swap`` run: each pair judged in both orders, verdicts stored in
the original orientation, so a judge without position bias gives the same verdict twice.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..benchmarks.problems import DataError
from ..benchmarks.readers import read_json_array
from .agreement import percentile_interval

# the official script's list; "GPT-4+DALL-E3" matches no row (the files say "GPT-4o+DALL-E3")
OFFICIAL_UNSEEN = ("anole", "GPT-4+DALL-E3", "SEED-LLaMA", "NExT-GPT")
WINNERS = ("A", "B", "Tie(A)", "Tie(B)", "Tie")
WAYS = ("force_divide_tie", "with_tie", "without_tie")


class ArenaRow(NamedTuple):
    """One published verdict: which item, which two models (by name), who won."""

    data_id: str
    a: str
    b: str
    winner: str


def _name(row: Mapping[str, Any], side: str, where: str) -> str:
    model = row.get(side)
    name = model.get("name") if isinstance(model, Mapping) else None
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}, field {side}.name: expected the model's name (a string)")
    return name


def read_arena(path: Path) -> list[ArenaRow]:
    """The rows of an OpenING arena file; a row without a usable field is a ``DataError``
    naming the file, row and field (the numbers would be wrong without it)."""
    rows = []
    for i, row in enumerate(read_json_array(path)):
        where = f"{path}: row {i}"
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: expected an object, got {type(row).__name__}")
        data_id = row.get("data_id")
        if isinstance(data_id, bool) or not isinstance(data_id, (str, int)):
            raise DataError(f"{where}, field data_id: expected a string or an integer")
        winner = row.get("winner")
        if winner not in WINNERS:
            raise DataError(
                f"{where}, field winner: expected one of {', '.join(WINNERS)}, got {winner!r}"
            )
        a, b = _name(row, "model_A", where), _name(row, "model_B", where)
        rows.append(ArenaRow(str(data_id), a, b, winner))
    return rows


def simplify(winner: str) -> str:
    """Tie(A), Tie(B) and Tie all become Tie (the "with tie" reading)."""
    return "Tie" if "tie" in winner.lower() else winner


def force_side(winner: str) -> str:
    """Ties forced to a side: Tie(A) to A, Tie(B) to B, a plain Tie to A (the official rule)."""
    return {"Tie(A)": "A", "Tie(B)": "B", "Tie": "A"}.get(winner, winner)


Compared = Mapping[Hashable, tuple[str, str, str]]  # key -> (model A, model B, winner)


def _ratio(agree: int, n: int) -> dict[str, Any]:
    return {"agreement": 100.0 * agree / n if n else 0.0, "n": n}


def _ways(pairs: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """The three agreement readings over (reference winner, candidate winner) pairs."""
    forced = sum(force_side(r) == force_side(c) for r, c in pairs)
    tied = sum(simplify(r) == simplify(c) for r, c in pairs)
    decisive = [(r, c) for r, c in pairs if simplify(r) != "Tie" and simplify(c) != "Tie"]
    return {
        "force_divide_tie": _ratio(forced, len(pairs)),
        "with_tie": _ratio(tied, len(pairs)),
        "without_tie": _ratio(sum(r == c for r, c in decisive), len(decisive)),
    }


def harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b else 0.0


def agreement_table(ref: Compared, cand: Compared, unseen: Sequence[str]) -> dict[str, Any]:
    """The official table: the three readings overall, split by whether either model of the
    comparison is in ``unseen``, and the harmonic means of the two splits."""
    both = [(ref[k], cand[k][2]) for k in ref if k in cand]
    pairs = [(r[2], c) for r, c in both]
    split: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for (a, b, r), c in both:
        split[a in unseen or b in unseen].append((r, c))
    table: dict[str, Any] = _ways(pairs)
    table["unseen"], table["seen"] = _ways(split[True]), _ways(split[False])
    table["harmonic_mean"] = {
        w: harmonic(table["unseen"][w]["agreement"], table["seen"][w]["agreement"]) for w in WAYS
    }
    return table


def official_keys(rows: Sequence[ArenaRow]) -> dict[str, tuple[str, str, str]]:
    """The official reader: a string key per row, the last row of a key kept; the model names
    are read back from the key as its last two ``_`` fields, as the official split does."""
    winners = {f"{d}_{a}_{b}": w for d, a, b, w in rows}
    out = {}
    for key, w in winners.items():
        parts = key.split("_")
        out[key] = (parts[-2], parts[-1], w)
    return out


def honest_keys(rows: Sequence[ArenaRow]) -> tuple[dict[tuple[str, str, str], tuple], Counter]:
    """Comparisons keyed by the triple itself; a triple given twice with the same verdict
    counts once, with different verdicts it is dropped as conflicting (and counted)."""
    seen: dict[tuple[str, str, str], set[str]] = {}
    for d, a, b, w in rows:
        seen.setdefault((d, a, b), set()).add(w)
    keys = {k: (k[1], k[2], next(iter(v))) for k, v in seen.items() if len(v) == 1}
    counts = Counter(
        duplicate_rows=len(rows) - len(seen),
        conflicting=sum(len(v) > 1 for v in seen.values()),
        key_collisions=len(seen) - len({f"{d}_{a}_{b}" for d, a, b in seen}),
    )
    return keys, counts


def opening_agreement(
    reference: Sequence[ArenaRow],
    candidate: Sequence[ArenaRow],
    unseen: Sequence[str] = OFFICIAL_UNSEEN,
) -> dict[str, Any]:
    """The official agreement table plus an ``honest`` block: counts of what the official
    reading overwrote or missed and the table over the comparisons that survive it."""
    table = agreement_table(official_keys(reference), official_keys(candidate), unseen)
    ref, ref_counts = honest_keys(reference)
    cand, cand_counts = honest_keys(candidate)
    ref_all = {(d, a, b) for d, a, b, _ in reference}
    cand_all = {(d, a, b) for d, a, b, _ in candidate}
    swapped = {(d, b, a) for d, a, b in cand_all}
    table["honest"] = {
        "reference_rows": len(reference),
        "candidate_rows": len(candidate),
        "reference": dict(ref_counts),
        "candidate": dict(cand_counts),
        "matched": sum(k in cand for k in ref),
        "in_both_but_conflicting": len(ref_all & cand_all) - sum(k in cand for k in ref),
        "reference_only": len(ref_all - cand_all),
        "candidate_only": len(cand_all - ref_all),
        "reference_only_in_swapped_order": len((ref_all - cand_all) & swapped),
        "unseen_models_present": sorted(
            {m for _, a, b, _ in (*reference, *candidate) for m in (a, b) if m in unseen}
        ),
        "table": agreement_table(ref, cand, unseen),
    }
    table["unseen_list"] = list(unseen)
    return table


# --------------------------------------------------------------------------- position bias


def position_bias(
    judgments: Sequence[Any], *, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """From the judgments of a ``--swap`` run: the share of pairs whose verdict changes with the
    order (all four verdicts, and ties forced to a side), and the share of verdicts won by the
    answer shown first (0.5 for a judge without a preference), each with a bootstrap interval.
    Pairs with an invalid or failed verdict in either order are counted, not compared."""
    orders: dict[tuple[str, str], dict[bool, Any]] = {}
    for j in judgments:
        if "swapped" not in j.metadata:
            continue
        orders.setdefault((j.scorer, j.sample_id), {})[bool(j.metadata["swapped"])] = j
    if not orders:
        raise DataError("no judgment of a --swap run (metadata.swapped); run ibench score --swap")
    pairs: list[tuple[str, str]] = []
    counts = Counter[str]()
    for both in orders.values():
        if len(both) < 2:
            counts["one_order_only"] += 1
        elif all(j.status == "ok" and "winner" in j.metadata for j in both.values()):
            pairs.append((both[False].metadata["winner"], both[True].metadata["winner"]))
        else:
            counts["not_ok"] += 1
    stats: dict[str, Callable[[Sequence[tuple[str, str]]], float]] = {
        "flip_with_tie": lambda ps: sum(a != b for a, b in ps) / len(ps),
        "flip_force_divide_tie": lambda ps: (
            sum(force_side(a) != force_side(b) for a, b in ps) / len(ps)
        ),
        # shown first: A in the first order; in the swapped one B (verdicts are stored unswapped)
        "first_position_wins": lambda ps: (
            sum((force_side(a) == "A") + (force_side(b) == "B") for a, b in ps) / (2 * len(ps))
        ),
    }
    rng = random.Random(seed)
    boot = [rng.choices(pairs, k=len(pairs)) for _ in range(resamples)] if len(pairs) > 1 else []
    return {
        "n": len(pairs),
        "excluded": {k: counts.get(k, 0) for k in ("one_order_only", "not_ok")},
        "statistics": {
            name: {
                "value": fn(pairs) if pairs else None,
                "ci": percentile_interval([fn(b) for b in boot]),
            }
            for name, fn in stats.items()
        },
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
    }
