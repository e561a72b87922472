import io
import os
import tarfile
import zipfile

import pytest

from interleave_bench.benchmarks.archives import extract
from interleave_bench.benchmarks.paths import DataRoot
from interleave_bench.benchmarks.problems import DataError


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "images" / "sub").mkdir(parents=True)
    (r / "images" / "a.jpg").write_bytes(b"x")
    (r / "images" / "sub" / "B.PNG").write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, r / "images" / "link-out.jpg")
    os.symlink(r / "images" / "a.jpg", r / "images" / "link-in.jpg")
    os.symlink(tmp_path, r / "images" / "dir-out")
    return r


@pytest.mark.parametrize(
    "source",
    [
        "./images/a.jpg",
        "images/a.jpg",
        "images/sub/../a.jpg",
        "images/link-in.jpg",
        "images/sub/b.png",
    ],
)
def test_resolves_inside(root, source):
    found = DataRoot([root]).resolve(source)
    assert found.refused is None and found.path is not None
    assert os.path.realpath(found.path).startswith(str(root.resolve()))


@pytest.mark.parametrize(
    "source, why",
    [
        ("../secret.txt", "escapes"),
        ("images/../../secret.txt", "escapes"),
        ("/etc/passwd", "absolute"),
        ("C:\\Windows\\win.ini", "absolute"),
        ("images/link-out.jpg", "symlink"),
        ("", "empty"),
    ],
)
def test_refuses_escapes(root, source, why):
    found = DataRoot([root]).resolve(source)
    assert found.path is None and why in found.refused


def test_directory_symlink_out_is_not_followed(root):
    found = DataRoot([root]).resolve("images/dir-out/secret.txt")
    assert found.path is None


def test_missing_is_not_refused(root):
    found = DataRoot([root]).resolve("images/nope.jpg")
    assert found.missing and found.refused is None


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def test_zip_slip_refused_and_good_entries_kept(tmp_path):
    z = tmp_path / "imgs.zip"
    _zip(z, {"ok/a.png": b"1", "../evil.png": b"2", "/abs.png": b"3", "ok/../../evil2": b"4"})
    link = zipfile.ZipInfo("ok/link")
    link.external_attr = 0o120777 << 16
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(link, "/etc/passwd")
    dest = tmp_path / "out"
    report = extract(z, dest)
    assert (dest / "ok" / "a.png").read_bytes() == b"1"
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "evil2").exists()
    refused = {p.field for p in report.problems}
    assert refused == {"../evil.png", "/abs.png", "ok/../../evil2", "ok/link"}
    assert all(p.row == "imgs.zip" for p in report.problems)
    assert not (dest / "ok" / "link").exists()


def test_tar_slip_links_and_devices_refused(tmp_path):
    t = tmp_path / "imgs.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        for name, data in {"images/a.jpg": b"1", "../evil.jpg": b"2"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        sym = tarfile.TarInfo("images/sym.jpg")
        sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(sym)
        hard = tarfile.TarInfo("images/hard.jpg")
        hard.type, hard.linkname = tarfile.LNKTYPE, "../../etc/passwd"
        tf.addfile(hard)
    dest = tmp_path / "out"
    report = extract(t, dest)
    assert (dest / "images" / "a.jpg").exists()
    assert {p.field for p in report.problems} == {
        "../evil.jpg",
        "images/sym.jpg",
        "images/hard.jpg",
    }
    assert not (tmp_path / "evil.jpg").exists()


def test_extraction_does_not_write_through_existing_symlink(tmp_path):
    z = tmp_path / "x.zip"
    _zip(z, {"images/a.png": b"1"})
    dest = tmp_path / "out"
    dest.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, dest / "images")
    report = extract(z, dest)
    assert not (elsewhere / "a.png").exists()
    assert report.problems and "symlink" in report.problems[0].message


def test_archive_bomb_refused(tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * 2_000_000)
    with pytest.raises(DataError, match="archive bomb"):
        extract(z, tmp_path / "out", max_entry=1_000_000)
    assert not (tmp_path / "out" / "big.bin").exists()


def test_corrupt_archive_is_a_clear_error(tmp_path):
    z = tmp_path / "broken.zip"
    _zip(z, {"a.png": b"1" * 1000})
    z.write_bytes(z.read_bytes()[:-30])
    with pytest.raises(DataError, match="broken.zip"):
        extract(z, tmp_path / "out")


def test_second_extraction_is_skipped(tmp_path):
    z = tmp_path / "x.zip"
    _zip(z, {"a.png": b"1"})
    assert extract(z, tmp_path / "out").written == 1
    again = extract(z, tmp_path / "out")
    assert again.skipped and again.written == 0
