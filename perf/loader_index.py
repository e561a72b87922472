"""Index and iterate an MMIE-sized folder without decoding images, against a naive loader.

Builds a synthetic folder in the MMIE release layout (20,103 rows, about 26,000 small JPEGs), then
runs each loader in a fresh interpreter and prints wall time, peak RSS above the bare interpreter,
and the ratio. Targets (issue 2): ours under 3 s and under 300 MB above the baseline.

    python perf/loader_index.py [--rows 20103] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

COUNTS = {"SA": 5005, "PBL": 11482, "MSR": 3616}

CHILD = r"""
import json, resource, sys, time
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
base = rss_mb()
t0 = time.perf_counter()
mode, root = sys.argv[1], sys.argv[2]
if mode == "ours":
    from interleave_bench import load_benchmark
    data = load_benchmark("mmie", root)
    n = sum(1 for s in data for _ in s.input)
    samples, images = len(data), len(data.sites)
else:
    import os
    from PIL import Image
    rows = json.load(open(os.path.join(root, "data.json")))
    samples = images = n = 0
    kept = []
    for row in rows:
        for part in ("question", "answer"):
            for seg in row[part] if isinstance(row[part], list) else []:
                if seg.get("image"):
                    p = os.path.join(root, seg["image"])
                    if os.path.exists(p):
                        with Image.open(p) as im:
                            im.load()
                            kept.append(im.size)
                        images += 1
        samples += 1
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peak_mb": peak, "base_mb": base, "samples": samples,
                  "images": images}))
"""


def build(root: Path, scale: float, seed: int = 0) -> tuple[int, int]:
    rng = random.Random(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    blobs = []
    for k in range(8):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (30 * k, 100, 200 - 20 * k)).save(buf, format="JPEG")
        blobs.append(buf.getvalue())
    rows, n_images = [], 0

    def image() -> str:
        nonlocal n_images
        n_images += 1
        name = f"v4-460px-step-{n_images}.jpg"
        (images_dir / name).write_bytes(blobs[n_images % len(blobs)])
        return f"./images/{name}"

    for prefix, count in COUNTS.items():
        for i in range(int(count * scale)):
            question = [
                {"text": f"Context sentence {j} for item {i}.", "image": None}
                for j in range(rng.randint(1, 3))
            ]
            if rng.random() < 0.95:
                question.append({"text": "Step 1: do the first thing.\n", "image": image()})
            answer = [
                {"text": "An answer paragraph.", "image": image() if rng.random() < 0.35 else None}
            ]
            rows.append(
                {
                    "id": f"{prefix}-{i}",
                    "question": question,
                    "answer": answer,
                    "model": "gt",
                    "gt_answer": [{"text": "42" if prefix == "MSR" else None, "image": None}],
                }
            )
    (root / "data.json").write_text(json.dumps(rows))
    return len(rows), n_images


def run(mode: str, root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(root)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "IBENCH_HOME": str(root.parent / "home")},
    )
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20103)
    ap.add_argument("--keep", type=Path, help="build the folder here and keep it")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    parent = args.keep or Path(tmp.name)
    root = parent / "mmie"
    if not (root / "data.json").exists():
        rows, images = build(root, args.rows / sum(COUNTS.values()))
        print(f"built {rows} rows, {images} images in the MMIE layout")
    run("ours", root)  # warm the page cache so neither side pays for cold disk
    ours, naive = run("ours", root), run("naive", root)
    for name, r in (("ours (no decoding)", ours), ("naive (opens every image)", naive)):
        print(
            f"{name:28s} {r['seconds']:7.2f} s   peak RSS {r['peak_mb'] - r['base_mb']:7.1f} MB "
            f"above the bare interpreter ({r['samples']} samples, {r['images']} images)"
        )
    print(
        f"time ratio ours/naive: {ours['seconds'] / naive['seconds']:.3f}   "
        f"speed-up: {naive['seconds'] / ours['seconds']:.1f}x"
    )
    ok = ours["seconds"] < 3 and ours["peak_mb"] - ours["base_mb"] < 300
    print(f"target (< 3 s, < 300 MB above baseline): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
