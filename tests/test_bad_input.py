"""Every kind of bad input is a clear error or a per-row problem naming row and field."""

import json
import os
import zipfile

import pytest
from helpers import bomb_png, cli_json, jpeg_bytes, run_cli


@pytest.fixture
def mmie(copy_miniset):
    root = copy_miniset("mmie")
    rows = json.loads((root / "data.json").read_text())
    return root, rows


def write(root, rows):
    (root / "data.json").write_text(json.dumps(rows))


def problems_of(root, bench="mmie"):
    code, report = cli_json("data", "inspect", bench, "--path", str(root))
    return code, report, {(p["row"], p["field"]) for p in report["problems"]}, report["problems"]


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda b: b[: len(b) // 2], "truncated JSON"),
        (lambda b: b.replace(b'"question"', b'"question" "', 1), "invalid JSON at line"),
        (lambda b: b.replace(b"Continue", b"Contin\xff\xfeue", 1), "not valid UTF-8"),
        (lambda b: b'{"id": "SA-1"}', "expected a JSON array"),
    ],
)
def test_file_level_errors_name_the_file(mmie, damage, needle):
    root, _ = mmie
    f = root / "data.json"
    f.write_bytes(damage(f.read_bytes()))
    result = run_cli("data", "inspect", "mmie", "--path", str(root))
    assert result.exit_code == 1
    assert needle in result.stderr and "data.json" in result.stderr
    assert "Traceback" not in result.output
    code, report = cli_json("data", "inspect", "mmie", "--path", str(root))
    assert code == 1 and report["problems"][0]["field"] == "<file>"
    assert needle in report["problems"][0]["message"]


@pytest.mark.parametrize(
    "mutate, row, field",
    [
        (lambda r: r[0].update(question="a string"), "SA-1000", "question"),
        (lambda r: r[0]["question"][1].update(text=5), "SA-1000", "question[1].text"),
        (lambda r: r[0]["question"][1].pop("image"), "SA-1000", "question[1].image"),
        (lambda r: r[0].pop("gt_answer"), "SA-1000", "gt_answer"),
        (lambda r: r[0].pop("model"), "SA-1000", "model"),
        (lambda r: r[0].update(gt_answer=[]), "SA-1000", "gt_answer"),
        (lambda r: r[0].update(answer=7), "SA-1000", "answer"),
        (lambda r: r[0].pop("id"), 0, "id"),
        (lambda r: r.__setitem__(0, ["not", "a", "row"]), 0, "<row>"),
    ],
)
def test_bad_rows_become_problems_and_good_rows_survive(mmie, mutate, row, field):
    root, rows = mmie
    mutate(rows)
    write(root, rows)
    code, report, keys, _ = problems_of(root)
    assert code == 0
    assert (row, field) in keys
    assert report["total"] == 14  # the bad row is dropped, every other row is kept


def test_unknown_prefix_is_a_problem_but_counts(mmie):
    root, rows = mmie
    rows[0]["id"] = "XYZ-1"
    write(root, rows)
    _, report, keys, _ = problems_of(root)
    assert ("XYZ-1", "id") in keys and report["total"] == 15
    assert report["by_category"]["(none)"] == 1


def test_duplicate_ids(mmie):
    root, rows = mmie
    rows.append(dict(rows[0]))
    write(root, rows)
    _, report, keys, problems = problems_of(root)
    assert ("SA-1000", "id") in keys and report["total"] == 15
    assert "duplicate" in problems[0]["message"]


def test_escaping_image_paths(mmie, tmp_path):
    root, rows = mmie
    run_cli("data", "inspect", "mmie", "--path", str(root))  # extract images.tar.gz first
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg_bytes())
    os.symlink(secret, root / "images" / "sneaky.jpg")
    rows[0]["question"][1]["image"] = "../secret.jpg"
    rows[1]["question"][1]["image"] = str(secret)
    rows[2]["question"][1]["image"] = "./images/sneaky.jpg"
    write(root, rows)
    _, report, keys, problems = problems_of(root)
    for rid in ("SA-1000", "SA-1001", "SA-1002"):
        assert (rid, "question[1].image") in keys
    messages = " ".join(p["message"] for p in problems)
    assert "escapes" in messages and "absolute" in messages and "symlink" in messages
    assert report["missing_images"] == 4  # three refused + the one the set leaves out


@pytest.mark.parametrize(
    "content, needle",
    [
        (lambda: jpeg_bytes()[:40], "corrupt"),
        (lambda: jpeg_bytes()[:-200], "truncated"),
        (lambda: b"definitely not an image", "not a recognisable image"),
        (lambda: bomb_png(), "bomb"),
    ],
)
def test_bad_image_files(mmie, content, needle):
    root, rows = mmie
    run_cli("data", "inspect", "mmie", "--path", str(root))
    target = rows[0]["question"][1]["image"]
    (root / target).write_bytes(content())
    code, report, keys, problems = problems_of(root)
    assert code == 0
    assert ("SA-1000", "question[1].image") in keys
    hit = next(p for p in problems if p["row"] == "SA-1000")
    assert needle in hit["message"] or "corrupt" in hit["message"]
    result = run_cli("data", "validate", "mmie", "--path", str(root))
    assert result.exit_code == 1


def test_zip_slip_in_interleavedbench(copy_miniset, tmp_path):
    root = copy_miniset("interleavedbench")
    with zipfile.ZipFile(root / "zipped_images" / "evil.zip", "w") as zf:
        zf.writestr("../../escaped.png", b"x")
    _, report, keys, _ = problems_of(root, "interleavedbench")
    assert ("evil.zip", "../../escaped.png") in keys
    assert not (tmp_path / "escaped.png").exists() and not (root.parent / "escaped.png").exists()
    assert report["total"] == 12


def test_jsonl_bad_lines_are_per_row(copy_miniset):
    root = copy_miniset("opening") / "OpenING-benchmark"
    f = root / "test_data.jsonl"
    lines = f.read_bytes().split(b"\n")
    lines[0] = lines[0][:30]
    lines[1] = lines[1].replace(b"Here", b"H\xffere")
    f.write_bytes(b"\n".join(lines))
    code, report, keys, problems = problems_of(root, "opening")
    assert code == 0 and report["total"] == 10
    assert (0, "<line>") in keys and (1, "<line>") in keys
    assert "UTF-8" in problems[1]["message"]


def test_isg_wrong_block_type(copy_miniset):
    root = copy_miniset("isg")
    f = root / "ISG-Bench.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    rows[0]["Golden"][0]["type"] = "video"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    _, report, keys, _ = problems_of(root, "isg")
    assert ("0000_Art Style Transfer", "Golden[0].type") in keys and report["total"] == 11


def test_validate_clean_set_passes_and_strict_counts_missing(copy_miniset):
    root = copy_miniset("isg")
    assert run_cli("data", "validate", "isg", "--path", str(root)).exit_code == 0
    mmie = copy_miniset("mmie")
    assert run_cli("data", "validate", "mmie", "--path", str(mmie)).exit_code == 0
    assert run_cli("data", "validate", "mmie", "--path", str(mmie), "--strict").exit_code == 1
