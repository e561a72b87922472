"""Write the bundled mini sets: our own words and pictures drawn by code, in each release's layout.

Run from the repository root: ``python tools/build_minisets.py``. The output is committed under
``interleave_bench/benchmarks/minisets/``; archives are written with fixed timestamps so a rebuild
with the same Pillow gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
import tarfile
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "interleave_bench" / "benchmarks" / "minisets"
PALETTE = [
    (230, 57, 70),
    (29, 53, 87),
    (69, 123, 157),
    (168, 218, 220),
    (244, 162, 97),
    (42, 157, 143),
    (233, 196, 106),
    (38, 70, 83),
    (131, 56, 236),
    (255, 190, 11),
]


def picture(seed: int, fmt: str, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small scene of shapes, different for every seed."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, rng.choice(PALETTE))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 5)):
        x0, y0 = rng.randrange(size[0] - 10), rng.randrange(size[1] - 10)
        x1, y1 = x0 + rng.randint(8, 40), y0 + rng.randint(8, 30)
        shape = rng.choice(["ellipse", "rectangle"])
        getattr(draw, shape)([x0, y0, x1, y1], fill=rng.choice(PALETTE))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 80} if fmt == "JPEG" else {"optimize": True}))
    return buf.getvalue()


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )


def write_tar_gz(path: Path, files: dict[str, bytes]) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())


def write_zip(path: Path, files: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in sorted(files.items()):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)


# --------------------------------------------------------------------------- MMIE

SA = [
    (
        "A girl finds a paper boat stuck in the reeds by the pond.",
        "She unfolds it and sees a map drawn in blue ink.",
    ),
    (
        "The bakery on the corner opens before sunrise.",
        "The first customer is a cyclist who buys three rolls.",
    ),
    (
        "Our class visits the planetarium on a rainy Tuesday.",
        "The lights go down and the ceiling fills with stars.",
    ),
    (
        "Grandpa repairs an old radio on the kitchen table.",
        "After an hour a crackle turns into music.",
    ),
    (
        "Two friends start building a treehouse in spring.",
        "By summer it has a rope ladder and a small window.",
    ),
]
PBL = [
    (
        "How to Repot a Small Cactus",
        "Put on thick gloves before touching the plant.",
        "Loosen the soil and lift the cactus out of its old pot.",
    ),
    (
        "How to Fold a Fitted Sheet",
        "Hold the sheet by two adjacent corners.",
        "Tuck one corner into the other so the seams line up.",
    ),
    (
        "How to Clean a Cast Iron Pan",
        "Rinse the pan with hot water while it is still warm.",
        "Scrub off stuck food with coarse salt and a paper towel.",
    ),
    (
        "How to Start a Vegetable Journal",
        "Pick a notebook with sturdy pages.",
        "Write the date and the weather at the top of each entry.",
    ),
    (
        "How to Tie a Bowline Knot",
        "Make a small loop near the end of the rope.",
        "Pass the free end up through the loop from below.",
    ),
    (
        "How to Make Paper Lanterns",
        "Fold a sheet of coloured paper in half lengthwise.",
        "Cut slits along the fold, stopping two fingers from the edge.",
    ),
]
MSR = [
    ("The picture shows a rectangle 6 units wide and 4 units tall. What is its area?", "24"),
    (
        "A bag holds the marbles shown. If two of them are removed, how many remain when the "
        "picture shows 9?",
        "7",
    ),
    (
        "The chart shows 3 shelves with 5 books each. How many books are there? "
        "(A) 8 (B) 15 (C) 12 (D) 10",
        "B",
    ),
    ("A triangle in the figure has angles 50 and 60 degrees. What is the third angle?", "70"),
]


def build_mmie(root: Path) -> None:
    rows, images = [], {}
    seed = 100

    def img(name: str) -> str:
        nonlocal seed
        seed += 1
        images[f"images/{name}"] = picture(seed, "JPEG")
        return f"./images/{name}"

    for i, (first, second) in enumerate(SA):
        sid = f"SA-{1000 + i}"
        rows.append(
            {
                "id": sid,
                "question": [
                    {
                        "text": "Continue the story with a paragraph and an image for each step.",
                        "image": None,
                    },
                    {"text": first, "image": img(f"{sid}-q1.jpg")},
                    {"text": second, "image": img(f"{sid}-q2.jpg")},
                ],
                "answer": [
                    {"text": "The story goes on the next morning.", "image": img(f"{sid}-a1.jpg")}
                ],
                "model": "gt",
                "gt_answer": [{"text": None, "image": None}],
            }
        )
    for i, (title, step1, step2) in enumerate(PBL):
        sid = f"PBL-{2000 + i}"
        question = [
            {"text": title, "image": None},
            {"text": f"Step 1: {step1}\n", "image": img(f"{sid}-step-1.jpg")},
        ]
        answer: object = [{"text": f"Step 2: {step2}\n", "image": img(f"{sid}-step-2.jpg")}]
        if i == 3:
            answer = f"Step 2: {step2}"  # the release also has plain-string answers
        if i == 4:
            question.append({"text": None, "image": "./images/not-in-the-archive.jpg"})
        rows.append(
            {
                "id": sid,
                "question": question,
                "answer": answer,
                "model": "gt",
                "gt_answer": [{"text": None, "image": None}],
            }
        )
    for i, (q, gt) in enumerate(MSR):
        sid = f"MSR-{3000 + i}"
        rows.append(
            {
                "id": sid,
                "question": [{"text": q, "image": img(f"{sid}.jpg")}],
                "answer": [
                    {"text": f"Working it out step by step, the answer is {gt}.", "image": None}
                ],
                "model": "gt",
                "gt_answer": [{"text": gt, "image": None}],
            }
        )
    write_json(root / "data.json", rows)
    write_json(root / "overview.json", rows[:1])
    write_tar_gz(root / "images.tar.gz", images)


# --------------------------------------------------------------------------- InterleavedBench

IB = [
    (
        "wikihow_next_step",
        "wiki_images_test",
        2,
        2,
        "How to Plant Tulip Bulbs. Step 1: Choose a sunny spot. <image> Step 2: Dig holes three "
        "times as deep as the bulb. <image> What are the next steps? Explain each with an image.",
        "Step 3: Set each bulb pointy end up. <image> Step 4: Cover with soil and water well. "
        "<image>",
    ),
    (
        "wikihow_next_step",
        "wiki_images_test",
        1,
        1,
        "How to Wash a Wool Sweater. Step 1: Fill a basin with cool water. <image> Continue.",
        "Step 2: Add a spoon of gentle detergent and soak for ten minutes. <image>",
    ),
    (
        "sequential_image_editing",
        "edit_images_test",
        1,
        2,
        "Start from this picture. <image> First make the sky orange, then add a second tree.",
        "<image> <image>",
    ),
    (
        "subject_driven_generation",
        "subject_images_test",
        2,
        1,
        "Here is a toy robot <image> and a red bicycle <image>. Show the robot riding it.",
        "<image>",
    ),
    (
        "document_completion",
        "doc_images_test",
        1,
        1,
        "Complete this poster for a school science fair. <image> Fill in the missing section.",
        "The fair opens at nine in the main hall. <image>",
    ),
    (
        "storytelling_generation",
        "story_images_test",
        2,
        1,
        "A fox waits by the river. <image> A heron lands beside it. <image> What happens next?",
        "They agree to share the fish they catch. <image>",
    ),
    (
        "education_generation",
        None,
        0,
        2,
        "Write a short lesson on the water cycle with two illustrations.",
        "Water evaporates from the sea. <image> It falls again as rain over the hills. <image>",
    ),
    (
        "marketing_generation",
        None,
        0,
        1,
        "Create an advertisement for a reusable water bottle with one image.",
        "Stay cool all day with a bottle that lasts for years. <image>",
    ),
    (
        "report_generation",
        None,
        0,
        2,
        "Write a brief report on a community garden's first year, with pictures.",
        "Forty volunteers planted twelve beds. <image> The harvest fed sixty families. <image>",
    ),
    (
        "fairytale_generation",
        None,
        0,
        2,
        "Tell a fairytale about a lantern that could talk, with illustrations.",
        "Once a lantern woke up in a lighthouse. <image> It guided a lost ship home. <image>",
    ),
    (
        "activity_generation",
        None,
        0,
        1,
        "Plan a rainy-day indoor activity for children, with a picture of the setup.",
        "Build a blanket fort with chairs and pillows. <image>",
    ),
    (
        "education_generation",
        None,
        0,
        1,
        "Explain how a lever works, with one diagram.",
        "A lever turns a small push into a large lift around a pivot. <image>",
    ),
]


def build_interleavedbench(root: Path) -> None:
    rows, zips = [], {}
    for i, (task, folder, n_in, n_out, human, gpt) in enumerate(IB):
        key = 480000 + i * 7
        folder = folder or f"{task.split('_')[0]}_images_test"
        paths = []
        for k in range(n_in + n_out):
            name = f"{folder}/{key}_0_{k}.png"
            zips.setdefault(folder, {})[name] = picture(500 + i * 10 + k, "PNG")
            paths.append(name)
        row = {
            "id": f"{task}_{i}_{key}",
            "image": paths,
            "task_name": task,
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}],
        }
        if task == "wikihow_next_step":
            row["goal"] = human.split(".")[0]
            row["category"] = ["Home and Garden"]
        rows.append(row)
    write_json(root / "interleaved_bench.json", rows)
    for folder, files in zips.items():
        write_zip(root / "zipped_images" / f"{folder}.zip", files)


# --------------------------------------------------------------------------- OpenING

OPENING = [
    (
        "01",
        "Multimodal Brainstorming",
        "02",
        "Party Planning Brainstorming",
        "Suggest three themes for a garden party, each with a picture.",
        0,
        3,
    ),
    (
        "01",
        "Multimodal Brainstorming",
        "02",
        "Party Planning Brainstorming",
        "Here is the backyard. What decorations would fit it? Show them.",
        1,
        2,
    ),
    (
        "02",
        "Interactive Visual Design",
        "01",
        "Logo Refinement",
        "This is our bakery logo. Make it feel warmer and show the result.",
        1,
        1,
    ),
    (
        "03",
        "Storybook Creation",
        "04",
        "Picture Book Writing",
        "Write the first two pages of a picture book about a shy snail.",
        0,
        2,
    ),
    (
        "03",
        "Storybook Creation",
        "04",
        "Picture Book Writing",
        "Continue this page of the book in two more pages.",
        1,
        2,
    ),
    (
        "04",
        "Cooking Guidance",
        "01",
        "Recipe Steps",
        "Show how to make a simple tomato salad step by step.",
        0,
        3,
    ),
    (
        "04",
        "Cooking Guidance",
        "01",
        "Recipe Steps",
        "I have these ingredients. What can I cook? Show the steps.",
        2,
        2,
    ),
    (
        "05",
        "Travel Guide Generation",
        "03",
        "City Walking Tour",
        "Plan a morning walking tour of an old harbour town with pictures.",
        0,
        3,
    ),
    (
        "05",
        "Travel Guide Generation",
        "03",
        "City Walking Tour",
        "We start at this square. Where should we go next?",
        1,
        2,
    ),
    (
        "06",
        "Educational Explanation",
        "02",
        "Science Concept Illustration",
        "Explain why the moon has phases, with diagrams.",
        0,
        2,
    ),
    (
        "06",
        "Educational Explanation",
        "02",
        "Science Concept Illustration",
        "What is happening in this picture of a prism?",
        1,
        1,
    ),
    (
        "07",
        "Product Showcase",
        "05",
        "Gadget Advertisement",
        "Introduce a solar-powered lamp in three images with captions.",
        0,
        3,
    ),
]


def build_opening(root: Path) -> None:
    bench = root / "OpenING-benchmark"
    rows = []
    for i, (mid, mname, sid, sname, prompt, n_in, n_out) in enumerate(OPENING):
        data_id = str(10 + i)
        uid = f"{mid}{sid}{int(data_id):03d}"
        inputs = [{"image": None, "text": f"<BEGIN> {prompt}"}]
        for k in range(1, n_in + 1):
            rel = f"./images/{sname}/{data_id}-i-{k}.jpg"
            (bench / rel).parent.mkdir(parents=True, exist_ok=True)
            (bench / rel).write_bytes(picture(900 + i * 10 + k, "JPEG"))
            inputs.append({"image": rel, "text": " <image>"})
        outputs = []
        for k in range(1, n_out + 1):
            rel = f"./images/{sname}/{data_id}-o-{k}.jpg"
            (bench / rel).parent.mkdir(parents=True, exist_ok=True)
            (bench / rel).write_bytes(picture(950 + i * 10 + k, "JPEG"))
            outputs.append({"image": rel, "text": f"Part {k} of the answer, described. <image>"})
        rows.append(
            {
                "total_uid": uid,
                "meta_task_id": mid,
                "meta_task_name": mname,
                "subtask_id": sid,
                "subtask_name": sname,
                "data_id": data_id,
                "conversations": [{"input": inputs}, {"output": outputs}],
            }
        )
    write_jsonl(bench / "test_data.jsonl", rows)


# --------------------------------------------------------------------------- ISG-Bench

ISG = [
    (
        "Art Style Transfer",
        "Repaint this harbour scene as a mosaic.",
        1,
        "I",
        "The harbour becomes a mosaic of small tiles.",
    ),
    ("Photo Variation", "Show this lamp in three different colours.", 1, "III", None),
    ("Animation Images", "Show a ball bouncing in four frames.", 0, "IIII", None),
    (
        "Attribute Transfer",
        "Make the cat in the picture older, step by step.",
        1,
        "TITI",
        "First the fur greys at the muzzle.",
    ),
    ("3D_object", "Show this mug from the front, the side and above.", 1, "III", None),
    (
        "Realistic Object Detection",
        "Separate the fruit in this bowl into single images.",
        1,
        "TII",
        "The bowl holds an apple and a pear.",
    ),
    (
        "HowTo",
        "Explain how to plant a seed, with a picture for each step.",
        0,
        "TITI",
        "Press the seed into moist soil.",
    ),
    (
        "Scientific",
        "Illustrate how a magnet attracts iron filings.",
        0,
        "TI",
        "Filings line up along the field lines.",
    ),
    (
        "Prediction",
        "What will this sandcastle look like after the tide?",
        1,
        "IT",
        "Only a low mound will remain.",
    ),
    (
        "visual storytelling text-image",
        "Tell a three-part story about a lighthouse keeper.",
        0,
        "TITITI",
        "The keeper lights the lamp at dusk.",
    ),
    (
        "Object_VQA",
        "What object is on the table, and show it closer.",
        1,
        "TI",
        "It is a brass compass.",
    ),
    (
        "Historical",
        "Show how this street might have looked a century ago.",
        1,
        "IT",
        "Carts instead of cars line the street.",
    ),
]


def isg_predict(index: int, n_q: int, golden_shape: str) -> dict:
    """Question lists shaped like ISG-Bench's ``predict`` (our own questions): block questions
    between neighbouring answer blocks (one names a tag no answer has, so it is always skipped) and
    per answer image an entity question and an attribute question that depends on it."""
    tags, n = [], {"T": 0, "I": 0}
    for letter in golden_shape:
        n[letter] += 1
        tags.append(f"<gen_text{n[letter]}>" if letter == "T" else f"<gen_img{n[letter]}>")
    block = []
    for a, b in zip(tags, tags[1:], strict=False):
        if "text" in a and "img" in b:
            block.append(
                {"subject": a, "object": b, "Question": f"Is {a} a caption for the image?"}
            )
        elif "img" in a and "img" in b:
            block.append({"subject": a, "object": b, "Question": "Do both images show one scene?"})
    if n_q and n["I"]:
        block.append(
            {
                "subject": "<gen_img1>",
                "object": "<query_img1>",
                "Question": "Does the first image keep the subject of the second image?",
            }
        )
    block.append({"subject": "<gen_img9>", "object": "<query_text1>", "Question": "Unused?"})
    predict: dict = {
        "structural": {"Query": [], "Answer": []},
        "block_qa": {"questions": block},
    }
    image_qa = []
    for k in range(1, n["I"] + 1):
        qid = len(image_qa)
        image_qa.append(
            {
                "image": f"<gen_img{k}>",
                "Question": "Is a shape drawn?",
                "id": qid,
                "Preliminary": [],
            }
        )
        image_qa.append(
            {
                "image": f"<gen_img{k}>",
                "Question": "Is the shape filled?",
                "id": qid + 1,
                "Preliminary": [qid],
            }
        )
    if image_qa:
        predict["image_qa"] = image_qa if index % 2 == 0 else {"questions": image_qa}
    return predict


def build_isg(root: Path) -> None:
    rows, files = [], {}
    for i, (category, prompt, n_q, golden_shape, text) in enumerate(ISG):
        rid = f"{i:04d}"
        query = [{"type": "text", "content": prompt}]
        for k in range(1, n_q + 1):
            name = f"images/{rid}_q{k}.png"
            files[name] = picture(1200 + i * 10 + k, "PNG")
            query.append({"type": "image", "content": name})
        golden, g = [], 0
        for letter in golden_shape:
            if letter == "T":
                golden.append({"type": "text", "content": text or "A caption."})
            else:
                g += 1
                name = f"images/{rid}_g{g}.png"
                files[name] = picture(1250 + i * 10 + g, "PNG")
                golden.append({"type": "image", "content": name})
        rows.append(
            {
                "id": rid,
                "Category": category,
                "Query": query,
                "Golden": golden,
                "predict": isg_predict(i, n_q, golden_shape),
            }
        )
    write_jsonl(root / "ISG-Bench.jsonl", rows)
    write_zip(root / "images.zip", files)


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    for name, build in [
        ("mmie", build_mmie),
        ("interleavedbench", build_interleavedbench),
        ("opening", build_opening),
        ("isg", build_isg),
    ]:
        (OUT / name).mkdir(parents=True)
        build(OUT / name)
    (OUT / "README.md").write_text(
        "# Bundled mini sets\n\nWritten by interleave-bench (`tools/build_minisets.py`): our own "
        "words and pictures drawn by code, laid out exactly like each benchmark's release so the "
        "real loaders run offline. They are not benchmark data.\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
