"""Write the warm-up mini sets: a few rows of our own words, pictures drawn by code, each in the
on-disk layout of the release it stands for (``data_cards/warmup_*.md``).

Run from the repository root: ``python tools/build_warmup_minisets.py``. The output is committed
under ``interleave_bench/train/minisets/`` (about 60 KB) and read by
``{format: NAME, miniset: true}``. Tar members get fixed timestamps, so a rebuild with the same
Pillow gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "interleave_bench" / "train" / "minisets"
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 70, 220),
    "yellow": (230, 200, 40),
    "purple": (140, 50, 200),
    "orange": (240, 140, 30),
}


def picture(colour: str, shape: str, fmt: str = "JPEG") -> bytes:
    """A 32x32 picture of one coloured shape (square, stripe, dot) on a light background."""
    img = Image.new("RGB", (32, 32), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    fill = COLOURS[colour]
    if shape == "square":
        draw.rectangle((8, 8, 23, 23), fill=fill)
    elif shape == "stripe":
        draw.rectangle((0, 12, 31, 19), fill=fill)
    else:
        draw.ellipse((6, 6, 25, 25), fill=fill)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def put(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


def activitynet(root: Path) -> None:
    """``train.json`` as released plus one keyframe per caption segment (our layout)."""
    videos = {
        "v_mini000001": (
            31.2,
            [
                ("red", "square", "A person paints a red square on a board."),
                ("blue", "stripe", " Then they add a blue stripe across it."),
            ],
        ),
        "v_mini000002": (
            18.0,
            [
                ("green", "dot", "A child places a green ball on the floor."),
                ("yellow", "square", "The child puts a yellow box next to it."),
                ("orange", "stripe", "Finally an orange ribbon is laid in front."),
            ],
        ),
    }
    data = {}
    for vid, (duration, steps) in videos.items():
        cut = duration / len(steps)
        data[vid] = {
            "duration": duration,
            "timestamps": [[round(k * cut, 2), round((k + 1) * cut, 2)] for k in range(len(steps))],
            "sentences": [s for _, _, s in steps],
        }
        for k, (colour, shape, _) in enumerate(steps):
            put(root / "keyframes" / vid / f"{k}.jpg", picture(colour, shape))
    put(root / "train.json", json.dumps(data, indent=1) + "\n")


def genhowto(root: Path) -> None:
    """A ``states.*.txt`` CSV with GenHowTo's columns and frames at ``frames/<VID_ID>/<s>.jpg``."""
    rows = [
        ("mini-vid-01", 0, "apple", 3, 40, 21, 0.91, "a red square cut into a blue stripe"),
        ("mini-vid-02", 1, "avocado", 5, 33, 12, 0.87, "a green dot turned into a yellow square"),
    ]
    frames = {
        "mini-vid-01": {3: ("red", "square"), 21: ("purple", "dot"), 40: ("blue", "stripe")},
        "mini-vid-02": {5: ("green", "dot"), 12: ("orange", "stripe"), 33: ("yellow", "square")},
    }
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "VID_ID",
            "DS_CAT",
            "DS_CAT_NAME",
            "FRAME_S1",
            "FRAME_S2",
            "FRAME_AC",
            "SCORE",
            "FRAME_S2_PROMPT",
            "FILENAME",
        ]
    )
    for vid, cat, name, s1, s2, ac, score, prompt in rows:
        w.writerow([vid, cat, name, s1, s2, ac, score, prompt, f"results/states_{cat}/{vid}.jpg"])
        for second, (colour, shape) in frames[vid].items():
            put(root / "frames" / vid / f"{second}.jpg", picture(colour, shape))
    put(root / "states.train.txt", buf.getvalue())


def openstory(root: Path) -> None:
    """One webdataset shard: per keyframe ``.jpg`` + ``.json`` (caption, mask labels) + ``.png``
    mask; one ``_override_`` key repeating its predecessor, as the release's pipeline writes."""
    stories = {
        "miniVideo01": [
            ("red", "square", "A red box sits alone on a table."),
            ("blue", "stripe", "A blue ribbon is placed beside the red box."),
            ("green", "dot", "A green ball rolls towards the box and the ribbon."),
        ],
        "miniVideo02": [
            ("yellow", "dot", "A yellow sun rises over the field."),
            ("orange", "stripe", "An orange cloud drifts across the sun."),
        ],
    }
    members: list[tuple[str, bytes]] = []
    for video, frames in stories.items():
        for k, (colour, shape, caption) in enumerate(frames):
            key = f"{video}_keyframe_0-00-{10 * k + 5:02d}-000"
            meta = {
                "origin_caption": caption.lower(),
                "caption": caption,
                "mask": [{"value": 0, "label": "background"}],
            }
            mask = Image.new("L", (32, 32), 0)
            png = io.BytesIO()
            mask.save(png, format="PNG")
            members += [
                (f"{key}.jpg", picture(colour, shape)),
                (f"{key}.json", json.dumps(meta).encode()),
                (f"{key}.png", png.getvalue()),
            ]
            if video == "miniVideo01" and k == 1:
                dup = f"{key}_override_{video}_keyframe_0-00-20-500"
                members += [
                    (f"{dup}.jpg", picture(colour, shape)),
                    (f"{dup}.json", json.dumps(meta).encode()),
                ]
    path = root / "shards" / "000000.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))


def emova(root: Path) -> None:
    """An ``annotations/*.json`` LLaVA-format list, images in a sibling folder; one text-only
    row (left out by the loader, as a speech/text dialogue would be)."""
    rows = [
        {
            "id": "mini-0",
            "image": "emova-mini/0.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat shape is in the picture?"},
                {"from": "gpt", "value": "A red square."},
            ],
        },
        {
            "id": "mini-1",
            "image": "emova-mini/1.jpg",
            "conversations": [
                {"from": "human", "value": "What colour is the stripe?\n<image>"},
                {"from": "gpt", "value": "It is blue."},
                {"from": "human", "value": "Is it horizontal?"},
                {"from": "gpt", "value": "Yes, it runs across the picture."},
            ],
        },
        {
            "id": "mini-2",
            "conversations": [
                {"from": "human", "value": "Name a warm colour."},
                {"from": "gpt", "value": "Orange."},
            ],
        },
    ]
    put(root / "emova-mini" / "0.jpg", picture("red", "square"))
    put(root / "emova-mini" / "1.jpg", picture("blue", "stripe"))
    put(root / "annotations" / "emova-mini.json", json.dumps(rows, indent=1) + "\n")


def journeydb(root: Path) -> None:
    """``train_anno_realease_repath.jsonl`` rows and images under ``imgs/000/``."""
    items = [("red", "dot"), ("green", "square"), ("purple", "stripe")]
    lines = []
    for k, (colour, shape) in enumerate(items):
        name = f"mini{k:04d}.jpg"
        put(root / "imgs" / "000" / name, picture(colour, shape))
        lines.append(
            json.dumps(
                {
                    "img_path": f"./000/{name}",
                    "prompt": f"a {colour} {shape}, flat, minimal --ar 1:1",
                    "Task1": {"Style": ["flat", "minimal"], "Content": [colour, shape]},
                    "Task2": {"Caption": f"A single {colour} {shape} on a light grey background."},
                }
            )
        )
    put(root / "train_anno_realease_repath.jsonl", "\n".join(lines) + "\n")


def main() -> None:
    for name, write in (
        ("activitynet_captions", activitynet),
        ("genhowto", genhowto),
        ("openstory", openstory),
        ("emova", emova),
        ("journeydb", journeydb),
    ):
        shutil.rmtree(OUT / name, ignore_errors=True)
        write(OUT / name)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
