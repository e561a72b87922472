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


def train_one_and_two_processes(script, cfg_one: str, cfg_two: str, out_one, out_two, atol: float):
    """Run ``script CONFIG`` as 1 process and under torchrun as 2 (CPU, gloo); check that the 2
    ranks' saved weights are identical and equal the 1-process weights within ``atol``; return
    the 1-process weights. Each run saves ``weights-<rank>.pt`` in its output folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, str(script), cfg_one], env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(script), cfg_two,
        ],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    w1 = torch.load(Path(out_one) / "weights-0.pt")
    r0, r1 = (torch.load(Path(out_two) / f"weights-{r}.pt") for r in (0, 1))
    for k in w1:
        assert torch.equal(r0[k], r1[k]), k  # the ranks never drift apart
        assert torch.allclose(w1[k], r0[k], atol=atol), (k, float((w1[k] - r0[k]).abs().max()))
    return w1
