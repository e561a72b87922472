import base64
import io

import pytest
from helpers import bomb_png
from PIL import Image

from interleave_bench.media import (
    ImageError,
    ImageLimits,
    ImageStore,
    check_image_file,
    decode_image,
    probe_image,
    to_data_url,
)


def png(w=40, h=30, color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def test_store_is_content_addressed_and_idempotent(tmp_path):
    store = ImageStore(tmp_path / "images")
    data = png()
    a = store.put_bytes(data)
    b = store.put_bytes(data)
    assert a == b and len(a.sha256) == 64
    assert store.resolve(a).read_bytes() == data
    assert store.resolve(a).name == f"{a.sha256}.png"
    assert store.open(a).size == (40, 30)
    assert not list((tmp_path / "images").rglob(".tmp-*"))


def test_store_refuses_non_images(tmp_path):
    with pytest.raises(ImageError, match="not a recognisable image"):
        ImageStore(tmp_path).put_bytes(b"hello world")


def test_decompression_bomb_refused_from_header():
    with pytest.raises(ImageError, match="exceeds the limits|decompression bomb"):
        probe_image(bomb_png())


def test_pixel_and_byte_limits():
    limits = ImageLimits(max_bytes=10_000_000, max_pixels=1000)
    with pytest.raises(ImageError, match="exceeds"):
        probe_image(png(40, 30), limits)
    with pytest.raises(ImageError, match="bytes exceeds"):
        probe_image(png(), ImageLimits(max_bytes=10))


def test_truncated_and_corrupt_images(tmp_path):
    data = png(64, 64, (1, 2, 3))
    truncated = tmp_path / "t.png"
    truncated.write_bytes(data[: len(data) // 2])
    assert "truncated" in check_image_file(truncated) or "corrupt" in check_image_file(truncated)
    corrupt = tmp_path / "c.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    assert check_image_file(corrupt) is not None
    good = tmp_path / "g.png"
    good.write_bytes(data)
    assert check_image_file(good) is None


def test_refused_format():
    buf = io.BytesIO()
    Image.new("P", (4, 4)).save(buf, format="GIF")
    with pytest.raises(ImageError, match="not one of"):
        decode_image(buf.getvalue())


def test_data_url_passthrough_and_resize(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(png(400, 200))
    url = to_data_url(p)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == p.read_bytes()
    small = to_data_url(p, max_side=100, format="JPEG")
    img = Image.open(io.BytesIO(base64.b64decode(small.split(",", 1)[1])))
    assert img.format == "JPEG" and img.size == (100, 50)
    exact = to_data_url(p, size=(512, 512), format="jpg")
    assert Image.open(io.BytesIO(base64.b64decode(exact.split(",", 1)[1]))).size == (512, 512)
