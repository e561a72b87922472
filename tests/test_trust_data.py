"""Untrusted data folders and archives: nothing written outside the root, nothing replaced that is
not an image, no half-extracted folder taken for a finished one, no folder symlink leading out."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile

import huggingface_hub.constants
from fake_hub import COMMIT, FakeHub
from helpers import cli_json, png_bytes, run_cli

from interleave_bench.benchmarks import archives
from interleave_bench.benchmarks.base import MINISET_DIR


def _rezip(path, extra: dict[str, bytes], corrupt_last: bool = False) -> None:
    """Rewrite the zip at ``path`` with its own entries plus ``extra``; optionally break the CRC
    of the last entry so reading it fails half-way through the archive."""
    with zipfile.ZipFile(path) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    entries.update(extra)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    if corrupt_last:
        last = list(entries.values())[-1]
        blob = path.read_bytes()
        at = blob.rindex(last)
        path.write_bytes(blob[:at] + bytes([last[0] ^ 0xFF]) + blob[at + 1 :])


def _retar(path, extra: dict[str, bytes]) -> None:
    with tarfile.open(path) as tf:
        entries = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
    entries.update(extra)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _validate(bench: str, root):
    return cli_json("data", "validate", bench, "--path", str(root))


# --------------------------------------------------------------------------- item 1


def test_planted_part_symlink_is_not_written_through(copy_miniset, tmp_path):
    root = copy_miniset("interleavedbench")
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"do not touch")
    folder = root / "zipped_images" / "wiki_images_test"
    folder.mkdir()
    os.symlink(victim, folder / ".480000_0_0.png.part")  # the old extractor's temp name
    code, report = _validate("interleavedbench", root)
    assert victim.read_bytes() == b"do not touch"
    extracted = folder / "480000_0_0.png"
    assert extracted.is_file() and not extracted.is_symlink()
    assert code == 0 and report["problems"] == [] and report["missing_images"] == 0


def test_imported_archive_replaces_a_planted_provenance_symlink(copy_miniset, tmp_path):
    source = copy_miniset("opening")
    release = tmp_path / "OpenING.zip"
    with zipfile.ZipFile(release, "w") as zf:
        for p in sorted(source.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(source).as_posix())
    dest = tmp_path / "dest"
    dest.mkdir()
    victim = tmp_path / "victim.json"
    victim.write_text("do not touch")
    os.symlink(victim, dest / ".ibench-source.json")
    code, report = cli_json(
        "data", "download", "opening", "--archive", str(release), "--to", str(dest)
    )
    assert code == 0 and report["total"] == 12
    assert victim.read_text() == "do not touch"
    assert not (dest / ".ibench-source.json").is_symlink()
    assert report["source"]["source"] == "archive OpenING.zip"


def test_hub_download_replaces_a_planted_provenance_symlink(tmp_path, monkeypatch):
    base = MINISET_DIR / "isg"
    files = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    dest = tmp_path / "isg"
    dest.mkdir()
    victim = tmp_path / "victim.json"
    victim.write_text("do not touch")
    os.symlink(victim, dest / ".ibench-source.json")
    with FakeHub({("dataset", "shuaishuaicdp/ISG-Bench"): files}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        code, report = cli_json("data", "download", "isg", "--to", str(dest))
    assert code == 0 and report["source"]["revision"] == COMMIT
    assert victim.read_text() == "do not touch"
    assert not (dest / ".ibench-source.json").is_symlink()


# --------------------------------------------------------------------------- item 3


def test_image_zip_cannot_overwrite_the_data_or_provenance_file(copy_miniset):
    root = copy_miniset("isg")
    data_before = (root / "ISG-Bench.jsonl").read_bytes()
    _rezip(
        root / "images.zip",
        {
            "ISG-Bench.jsonl": b'{"id": "evil"}\n',
            ".ibench-source.json": b'{"source": "forged", "revision": "x"}',
            "images/readme.txt": b"hello",
        },
    )
    code, report = _validate("isg", root)
    assert code == 1
    refused = {(p["row"], p["field"]) for p in report["problems"]}
    assert refused == {
        ("images.zip", "ISG-Bench.jsonl"),
        ("images.zip", ".ibench-source.json"),
        ("images.zip", "images/readme.txt"),
    }
    assert (root / "ISG-Bench.jsonl").read_bytes() == data_before
    assert not (root / ".ibench-source.json").exists()
    assert not (root / "images" / "readme.txt").exists()
    assert report["source"]["source"] == "local folder" and report["total"] == 12


def test_image_tar_cannot_overwrite_the_data_file(copy_miniset):
    root = copy_miniset("mmie")
    data_before = (root / "data.json").read_bytes()
    _retar(root / "images.tar.gz", {"data.json": b"[]", "./images/../overview.json": b"[]"})
    result = run_cli("data", "validate", "mmie", "--path", str(root))
    assert result.exit_code == 1
    assert "data.json" in result.output and "not an image file" in result.output
    assert (root / "data.json").read_bytes() == data_before
    assert json.loads((root / "overview.json").read_text()) != []


# --------------------------------------------------------------------------- item 4


def test_failed_extraction_leaves_no_folder_and_is_redone(copy_miniset):
    root = copy_miniset("isg")
    good = (root / "images.zip").read_bytes()
    _rezip(root / "images.zip", {"images/zz_last.png": png_bytes()}, corrupt_last=True)
    for _ in range(2):  # the second run must not take a half-made folder for a finished one
        result = run_cli("data", "validate", "isg", "--path", str(root))
        assert result.exit_code == 1 and "images.zip" in result.output
        assert not (root / "images").exists()
    (root / "images.zip").write_bytes(good)
    code, report = _validate("isg", root)
    assert code == 0 and report["missing_images"] == 0 and report["problems"] == []


def test_bomb_refusal_leaves_no_folder_and_is_refused_again(copy_miniset, monkeypatch):
    root = copy_miniset("mmie")
    with tarfile.open(root / "images.tar.gz") as tf:
        sizes = [m.size for m in tf if m.isfile()]
    limit = max(sizes) - 1
    assert sizes[0] <= limit  # some entries fit, so the old extractor left a partial folder
    monkeypatch.setattr(archives, "MAX_ENTRY_BYTES", limit)
    for _ in range(2):
        result = run_cli("data", "validate", "mmie", "--path", str(root))
        assert result.exit_code == 1 and "archive bomb" in result.output
        assert not (root / "images").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_folder_without_marker_is_extracted_again(copy_miniset):
    root = copy_miniset("interleavedbench")
    folder = root / "zipped_images" / "wiki_images_test"
    folder.mkdir()
    (folder / "480000_0_0.png").write_bytes(b"half")  # an earlier run stopped here
    code, report = _validate("interleavedbench", root)
    assert code == 0 and report["problems"] == [] and report["missing_images"] == 0
    assert (folder / "480000_0_0.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list(folder.iterdir())) == 6


# --------------------------------------------------------------------------- item 5


def test_folder_symlink_leading_outside_is_a_row_problem(copy_miniset, tmp_path):
    root = copy_miniset("isg")
    assert _validate("isg", root)[0] == 0  # extracts images/
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "0000_q1.png").write_bytes(png_bytes())
    os.symlink(outside, root / "images" / "linkdir")
    os.symlink(root / "images", root / "images" / "inside")  # a link within the root is fine
    lines = (root / "ISG-Bench.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    rows[0]["Query"][1]["content"] = "images/linkdir/0000_q1.png"
    rows[1]["Query"][1]["content"] = "images/inside/0001_q1.png"
    (root / "ISG-Bench.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, report = _validate("isg", root)
    assert code == 1
    [problem] = report["problems"]
    assert problem["row"].startswith("0000_") and problem["field"] == "Query[1].content"
    assert "symlink leading outside the data root" in problem["message"]
    assert report["missing_images"] == 1
