"""Small helpers shared by tests."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib

from PIL import Image
from typer.testing import CliRunner

from interleave_bench.cli import app


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def cli_json(*args: str):
    result = run_cli(*args, "--json")
    return result.exit_code, json.loads(result.stdout)


def png_bytes(w=32, h=24, color=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(w=32, h=24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 100, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def bomb_png(w=100_000, h=100_000) -> bytes:
    """A valid PNG header that promises 10 gigapixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def write_opening_outputs(folder, skip: str | None = None, limit: int | None = None):
    """A gen_outputs/<MODEL>_output/ folder in the official layout, from the bundled gold:
    one <total_uid>.json per sample, output images as bare file names beside it."""
    from interleave_bench.benchmarks.base import MINISET_DIR

    bench = MINISET_DIR / "opening" / "OpenING-benchmark"
    folder.mkdir(parents=True)
    lines = (bench / "test_data.jsonl").read_text().splitlines()
    for line in lines[:limit]:
        row = json.loads(line)
        if row["total_uid"] == skip:
            continue
        items = []
        for k, item in enumerate(row["conversations"][1]["output"]):
            name = f"{row['total_uid']}-o-{k}.jpg"
            shutil.copy(bench / item["image"], folder / name)
            items.append({"text": item["text"], "image": name})
        row["conversations"][1]["output"] = items
        (folder / f"{row['total_uid']}.json").write_text(json.dumps(row))
