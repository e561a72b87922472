"""`ibench judge agreement` and `ibench judge position-bias`: statistics on hand-computed cases,
OpenING's official agreement numbers reproduced from its published files, the official reading
of duplicated and colliding keys, and the HTML page in headless Chromium."""

import gzip
import json
import re
from pathlib import Path

import pytest
from helpers import cli_json, run_cli

from interleave_bench.judges import agreement as ag
from interleave_bench.judges.arena_agreement import position_bias
from interleave_bench.report.judge_page import consistency_page, opening_page
from interleave_bench.types import Judgment

# gzip copies of OpenING's published arena files (tests/data/opening_arena/README.md)
ARENA_GZ = Path(__file__).resolve().parent / "data" / "opening_arena"
EXACT = {"rel": 1e-12, "abs": 1e-12}


# --------------------------------------------------------------------------- statistics


def test_statistics_on_hand_computed_cases():
    # x = 1 2 3 4, y = 1 3 2 4: two exact, |d| = 0 1 1 0, d^2 sum 2, one discordant pair of 6
    t = ag.table_of([(1, 1), (2, 3), (3, 2), (4, 4)])
    assert ag.exact_agreement(t) == 0.5 and ag.mean_abs_diff(t) == 0.5
    assert ag.kappa_quadratic(t) == pytest.approx(0.8, **EXACT)  # 1 - 0.5 / (1.25 + 1.25)
    assert ag.spearman(t) == pytest.approx(0.8, **EXACT)  # 1 - 6 * 2 / (4 * 15)
    assert ag.kendall_tau_b(t) == pytest.approx(4 / 6, **EXACT)  # (5 - 1) / 6
    # ties on both sides: x = 0 0 1 1 1, y = 0 1 1 1 0; mid-ranks 1.5 / 4 on each side,
    # 2 concordant and 1 discordant pair among the 6 not tied in x (6 not tied in y)
    t = ag.table_of([(0, 0), (0, 1), (1, 1), (1, 1), (1, 0)])
    assert ag.exact_agreement(t) == pytest.approx(0.6, **EXACT)
    assert ag.mean_abs_diff(t) == pytest.approx(0.4, **EXACT)
    assert ag.kappa_quadratic(t) == pytest.approx(1 / 6, **EXACT)  # 1 - 0.4 / 0.48
    assert ag.spearman(t) == pytest.approx(1 / 6, **EXACT)  # 1.25 / 7.5
    assert ag.kendall_tau_b(t) == pytest.approx(1 / 6, **EXACT)  # 1 / sqrt(6 * 6)
    # a level nobody used does not shrink a distance: scores 1 and 10 are 9 apart
    far = ag.table_of([(1, 10), (10, 1), (1, 1), (10, 10)])
    assert ag.kappa_quadratic(far) == pytest.approx(0.0, **EXACT)
    # undefined, not a number, when a side is constant
    flat = ag.table_of([(3, 3), (3, 3)])
    assert ag.kappa_quadratic(flat) is None and ag.spearman(flat) is None
    assert ag.kendall_tau_b(flat) is None and ag.exact_agreement(flat) == 1.0


def test_bootstrap_intervals_are_seeded_and_cover_the_value():
    pairs = [(1, 1), (2, 3), (3, 2), (4, 4), (2, 2), (5, 4), (1, 2), (3, 3)]
    a = ag.statistics(pairs, resamples=200, seed=7)
    assert a == ag.statistics(pairs, resamples=200, seed=7)
    assert a != ag.statistics(pairs, resamples=200, seed=8)
    for name, s in a.items():
        lo, hi = s["ci"]
        assert lo <= s["value"] <= hi, name
    same = ag.statistics([(2, 2), (3, 3), (5, 5)], resamples=50, seed=0)
    assert same["exact_agreement"]["ci"] == [1.0, 1.0]
    assert same["mean_abs_diff"]["ci"] == [0.0, 0.0]


# --------------------------------------------------------------------------- judgments


def _j(sid, status="ok", overall=None, **meta):
    return Judgment(
        sid,
        "judge",
        "1",
        status,
        overall=overall,
        reason=None if status == "ok" else f"{status} reply",
        metadata=meta,
    )


def _write(path: Path, judgments) -> Path:
    path.write_text("".join(json.dumps(j.to_dict()) + "\n" for j in judgments))
    return path


def test_judgments_agreement_counts_every_item_not_compared(tmp_path):
    ref = _write(
        tmp_path / "ref.jsonl",
        [
            _j("s1", "error"),  # retried below: the later record is the verdict
            _j("s1", overall=1),
            _j("s2", overall=2),
            _j("s3", overall=3),
            _j("s4", overall=4),
            _j("bad-c", overall=5),
            _j("bad-r", "error"),
            _j("bad-both", "invalid"),
            _j("only-r", overall=1),
        ],
    )
    cand = _write(
        tmp_path / "cand.jsonl",
        [
            _j("s1", overall=1),
            _j("s2", overall=3),
            _j("s3", overall=2),
            _j("s4", overall=4),
            _j("bad-c", "invalid"),
            _j("bad-r", overall=2),
            _j("bad-both", "error"),
            _j("only-c", overall=1),
        ],
    )
    code, res = cli_json(
        "judge", "agreement", "--reference", str(ref), "--candidate", str(cand),
        "--format", "judgments", "--resamples", "100", "--html", str(tmp_path / "a.html"),
    )  # fmt: skip
    assert code == 0
    assert res["n"] == 4
    page = (tmp_path / "a.html").read_text()
    assert "kappa_quadratic" in page and "not_ok_both" in page and "<svg" in page
    assert res["excluded"] == {
        "only_reference": 1,
        "only_candidate": 1,
        "not_ok_reference": 1,
        "not_ok_candidate": 1,
        "not_ok_both": 1,
    }
    stats = res["statistics"]
    assert stats["exact_agreement"]["value"] == 0.5
    assert stats["kappa_quadratic"]["value"] == pytest.approx(0.8, **EXACT)
    assert stats["kendall_tau_b"]["value"] == pytest.approx(4 / 6, **EXACT)
    assert res["table"] == [[1.0, 1.0, 1], [2.0, 3.0, 1], [3.0, 2.0, 1], [4.0, 4.0, 1]]


def test_judgments_bad_line_and_nothing_usable_are_one_line_errors(tmp_path):
    good = _write(tmp_path / "good.jsonl", [_j("s1", overall=1)])
    bad = tmp_path / "bad.jsonl"
    rec = _j("s1", overall=1).to_dict()
    del rec["status"]
    bad.write_text(json.dumps(_j("s0", overall=2).to_dict()) + "\n" + json.dumps(rec) + "\n")
    r = run_cli(
        "judge", "agreement", "--reference", str(good), "--candidate", str(bad),
        "--format", "judgments",
    )  # fmt: skip
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "bad.jsonl" in r.stderr and "line 2" in r.stderr and "status" in r.stderr
    other = _write(tmp_path / "other.jsonl", [_j("s9", overall=1)])
    r = run_cli(
        "judge", "agreement", "--reference", str(good), "--candidate", str(other),
        "--format", "judgments",
    )  # fmt: skip
    assert r.exit_code == 1 and "nothing usable" in r.stderr
    r = run_cli("judge", "agreement", "--reference", str(good), "--candidate", str(other),
                "--format", "csv")  # fmt: skip
    assert r.exit_code == 2 and "--format must be one of" in r.stderr


def test_judgments_scorer_is_chosen_only_in_a_file_of_several(tmp_path):
    """A file of two scorers needs --scorer; a file of one is read whatever its scorer's name."""
    two = _write(
        tmp_path / "two.jsonl",
        [_j("s1", overall=1), *[Judgment("s1", "other", "1", "ok", overall=2.0)]],
    )
    r = run_cli("judge", "agreement", "--reference", str(two), "--candidate", str(two),
                "--format", "judgments")  # fmt: skip
    assert r.exit_code == 1 and "several scorers (judge, other)" in r.stderr
    human = _write(
        tmp_path / "human.jsonl",
        [
            Judgment("s1", "human", "1", "ok", overall=2.0),
            Judgment("s2", "human", "1", "ok", overall=1.0),
        ],
    )
    code, res = cli_json(
        "judge",
        "agreement",
        "--reference",
        str(human),
        "--candidate",
        str(two),
        "--format",
        "judgments",
        "--scorer",
        "other",
        "--resamples",
        "10",
    )
    assert code == 0 and res["n"] == 1 and res["excluded"]["only_reference"] == 1


# --------------------------------------------------------------------------- OpenING


@pytest.mark.parametrize(
    "candidate, published",
    [
        (
            "intjudge_rag-judge_modelAB_results.json",
            # (all %, n) per reading, then unseen / seen / harmonic
            {
                "force_divide_tie": (82.42, 4301, 80.75, 84.05, 82.37),
                "with_tie": (66.45, 4301, 63.80, 69.02, 66.31),
                "without_tie": (91.11, 2362, 89.55, 92.38, 90.94),
            },
        ),
        (
            "gpt-judge_modelAB_results.json",
            {
                "force_divide_tie": (71.08, 4302, 68.77, 73.33, 70.98),
                "with_tie": (51.93, 4302, 48.82, 54.95, 51.70),
                "without_tie": (74.58, 2958, 72.43, 76.54, 74.43),
            },
        ),
    ],
)
def test_opening_published_agreement_is_reproduced(candidate, published, tmp_path):
    ARENA = tmp_path  # noqa: N806 - the unpacked copies, as a user has them
    for gz in ARENA_GZ.glob("*.json.gz"):
        (ARENA / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    code, res = cli_json(
        "judge", "agreement", "--reference", str(ARENA / "judge_modelAB_results.json"),
        "--candidate", str(ARENA / candidate), "--format", "opening-pairwise",
    )  # fmt: skip
    assert code == 0
    assert set(res) >= {"force_divide_tie", "with_tie", "without_tie", "unseen", "seen",
                        "harmonic_mean"}  # fmt: skip
    for way, (pct, n, unseen, seen, harmonic) in published.items():
        assert set(res[way]) == {"agreement", "n"} and res[way]["n"] == n
        assert round(res[way]["agreement"], 2) == pct
        assert round(res["unseen"][way]["agreement"], 2) == unseen
        assert round(res["seen"][way]["agreement"], 2) == seen
        assert round(res["harmonic_mean"][way], 2) == harmonic
    honest = res["honest"]
    assert honest["reference_rows"] == 4302
    assert honest["matched"] == res["with_tie"]["n"]  # no duplicate or collision in these files
    assert honest["reference"] == honest["candidate"] == {
        "duplicate_rows": 0, "conflicting": 0, "key_collisions": 0,
    }  # fmt: skip


def _row(data_id, a, b, winner):
    return {"data_id": data_id, "model_A": {"id": "1", "name": a},
            "model_B": {"id": "2", "name": b}, "winner": winner}  # fmt: skip


def test_opening_reading_of_duplicates_collisions_and_ties(tmp_path):
    human = [
        _row("1", "m", "anole", "A"),
        _row("1", "m", "anole", "B"),  # same key later: the official reader keeps this one
        _row("2", "m", "n", "Tie(B)"),
        _row("3", "m", "n", "Tie"),  # a plain Tie is forced to A
        _row("4_x", "y", "n", "A"),  # key 4_x_y_n ...
        _row("4", "x_y", "n", "B"),  # ... the same key: collides, and overwrites
        _row("5", "m", "n", "A"),  # the candidate lacks it
    ]
    judge = [
        _row("1", "m", "anole", "B"),
        _row("2", "m", "n", "Tie(A)"),
        _row("3", "m", "n", "A"),
        _row("4", "x_y", "n", "B"),
        _row("9", "m", "n", "A"),  # not in the reference: ignored
    ]
    ref, cand = tmp_path / "human.json", tmp_path / "judge.json"
    ref.write_text(json.dumps(human))
    cand.write_text(json.dumps(judge))
    code, res = cli_json("judge", "agreement", "--reference", str(ref), "--candidate", str(cand),
                         "--format", "opening-pairwise", "--unseen", "anole")  # fmt: skip
    assert code == 0
    # official keys compared: 1 (B/B), 2 (Tie(B)/Tie(A)), 3 (Tie/A), 4_x_y_n (B/B)
    assert res["force_divide_tie"] == {"agreement": 75.0, "n": 4}  # 2 -> B vs A differs
    assert res["with_tie"] == {"agreement": 75.0, "n": 4}  # 3: Tie vs A differs
    assert res["without_tie"] == {"agreement": 100.0, "n": 2}  # keys 1 and 4
    assert res["unseen"]["with_tie"] == {"agreement": 100.0, "n": 1}  # key 1 has anole
    assert res["seen"]["with_tie"] == {"agreement": 100 * 2 / 3, "n": 3}
    assert res["harmonic_mean"]["with_tie"] == pytest.approx(2 * 100 * 200 / 3 / (100 + 200 / 3))
    honest = res["honest"]
    assert honest["reference"] == {"duplicate_rows": 1, "conflicting": 1, "key_collisions": 1}
    # by identity: 1 (conflicting in the reference: dropped), 2, 3, (4, x_y, n) in both;
    # (4_x, y, n) and 5 in the reference only; 9 in the candidate only
    assert honest["matched"] == 3 and honest["in_both_but_conflicting"] == 1
    assert honest["reference_only"] == 2 and honest["candidate_only"] == 1
    assert honest["table"]["with_tie"] == {"agreement": 100 * 2 / 3, "n": 3}


def test_opening_bad_row_names_file_row_and_field(tmp_path):
    ref = tmp_path / "human.json"
    ref.write_text(json.dumps([_row("1", "m", "n", "A"), _row("2", "m", "n", "C")]))
    r = run_cli("judge", "agreement", "--reference", str(ref), "--candidate", str(ref),
                "--format", "opening-pairwise")  # fmt: skip
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "human.json: row 1, field winner" in r.stderr and "'C'" in r.stderr


# --------------------------------------------------------------------------- position bias


def test_position_bias_from_a_swap_run(tmp_path):
    def pair(sid, first, second):
        return [
            _j(sid, overall=0.5, model_A="a", model_B="b", swapped=False, winner=first),
            _j(sid, overall=0.5, model_A="a", model_B="b", swapped=True, winner=second),
        ]

    # verdicts in the original orientation; s2's judge picked the first slot both times
    js = [
        *pair("s1", "A", "A"),
        *pair("s2", "A", "B"),
        *pair("s3", "Tie(A)", "A"),
        *pair("s4", "B", "B"),
        _j("s5", "invalid", model_A="a", model_B="b", swapped=False),
        _j("s5", overall=1.0, model_A="a", model_B="b", swapped=True, winner="A"),
        _j("s6", overall=1.0, model_A="a", model_B="b", swapped=False, winner="A"),
    ]
    res = position_bias(js, resamples=100, seed=0)
    assert res["n"] == 4 and res["excluded"] == {"one_order_only": 1, "not_ok": 1}
    stats = res["statistics"]
    assert stats["flip_with_tie"]["value"] == 0.5  # s2, s3
    assert stats["flip_force_divide_tie"]["value"] == 0.25  # s2 only
    # shown first and won: s1 1/2, s2 2/2, s3 1/2, s4 1/2 -> 5 of 8
    assert stats["first_position_wins"]["value"] == 5 / 8
    lo, hi = stats["flip_with_tie"]["ci"]
    assert 0 <= lo <= 0.5 <= hi <= 1
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "judgments.jsonl", js)
    html = tmp_path / "bias.html"
    code, out = cli_json(
        "judge", "position-bias", str(run), "--resamples", "100", "--html", str(html)
    )
    assert code == 0 and out == res
    assert "first_position_wins" in html.read_text() and "one_order_only" in html.read_text()


# --------------------------------------------------------------------------- HTML page


PAYLOAD = '<img src="/pwned" onerror="document.title=1">'


def test_judge_page_in_chromium_escapes_and_draws(tmp_path):
    from test_report import _chromium, _dump, _Site

    exe = _chromium()
    human = [_row("1", PAYLOAD, "anole", "A"), _row("2", "m", "n", "Tie(B)")]
    rows = [_row("1", PAYLOAD, "anole", "A"), _row("2", "m", "n", "B")]
    from interleave_bench.judges.arena_agreement import opening_agreement, read_arena

    (tmp_path / "h.json").write_text(json.dumps(human))
    (tmp_path / "c.json").write_text(json.dumps(rows))
    res = opening_agreement(read_arena(tmp_path / "h.json"), read_arena(tmp_path / "c.json"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "agree.html").write_text(opening_page(res, PAYLOAD, "c.json"), encoding="utf-8")
    consistency = {
        "items": [{"sample_id": PAYLOAD, "scores": [3.0, 4.0], "original": 4.0,
                   "variance": 0.25, "changed": True}],
        "repeats": 2, "seeds": [1, 2], "n": 1, "share_changed": 1.0, "mean_variance": 0.25,
        "counts": {"ok": 2, "invalid": 0, "error": 0}, "run": "r", "judge": "j",
    }  # fmt: skip
    cons = consistency_page(consistency)  # the same page builder: checked as source
    with _Site(site) as srv:
        agree = _dump(exe, tmp_path / "p1", srv.url("agree.html"))
        assert srv.hits == ["/agree.html"]  # the payload fetched nothing
    for dom in (agree, cons):
        assert "&lt;img" in dom and not re.search(r"<img[^>]*pwned", dom)
        assert "<svg" in dom and dom.count('class="bar"') >= 1
    # the official table: 1 agrees, 2 Tie(B) vs B -> forced 100, with ties 50, without 100
    assert re.search(r"force_divide_tie</td><td class=\"num\">100</td>", agree)
    assert re.search(r"with_tie</td><td class=\"num\">50</td>", agree)
    assert "0.25" in cons
