"""Images: a content-addressed store, safe lazy decoding, and data-URL encoding for judges.

Nothing here decodes pixels until asked. Every decode goes through ``open_image``, which refuses
files over a byte limit, formats other than PNG/JPEG/WebP, and images whose header promises more
pixels than allowed (decompression bombs) before any pixel is read.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .types import ImageRef

ALLOWED_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class ImageError(ValueError):
    """An image that cannot be used: missing, too large, a bomb, corrupt or of a refused format."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16_384


DEFAULT_LIMITS = ImageLimits()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_limited(path: str | os.PathLike[str], limits: ImageLimits) -> bytes:
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if size > limits.max_bytes:
        raise ImageError(f"{path}: {size} bytes exceeds the limit of {limits.max_bytes}")
    with open(path, "rb") as f:
        return f.read(limits.max_bytes + 1)


def probe_image(
    data: bytes, limits: ImageLimits = DEFAULT_LIMITS, name: str = "<bytes>"
) -> tuple[str, int, int]:
    """Read only the header: return (format, width, height) or raise ImageError."""
    if len(data) > limits.max_bytes:
        raise ImageError(f"{name}: {len(data)} bytes exceeds the limit of {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt, (w, h) = img.format, img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: refused as a decompression bomb") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a recognisable image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt image header ({e})") from None
    if fmt not in ALLOWED_FORMATS:
        raise ImageError(f"{name}: format {fmt} is not one of PNG, JPEG, WebP")
    if w <= 0 or h <= 0 or w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
        raise ImageError(f"{name}: {w}x{h} pixels exceeds the limits (decompression bomb?)")
    return fmt, w, h


def decode_image(
    data: bytes, limits: ImageLimits = DEFAULT_LIMITS, name: str = "<bytes>"
) -> Image.Image:
    """Fully decode bytes into a PIL image after the header checks; truncation is an error."""
    probe_image(data, limits, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: refused as a decompression bomb") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None
    return img


def open_image(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    return decode_image(_read_limited(path, limits), limits, str(path))


def check_image_file(
    path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS, full: bool = True
) -> str | None:
    """Return None when the file is a usable image, else the reason it is not."""
    try:
        data = _read_limited(path, limits)
        if full:
            decode_image(data, limits, os.path.basename(path))
        else:
            probe_image(data, limits, os.path.basename(path))
    except ImageError as e:
        return str(e)
    return None


class ImageStore:
    """Images stored once under their SHA-256: ``<root>/<aa>/<sha256>.<ext>``.

    Writes are atomic (temp file + rename), so a crash never leaves a half image under a real name,
    and storing the same bytes twice is a no-op.
    """

    def __init__(self, root: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS):
        self.root = Path(root)
        self.limits = limits

    def _path(self, sha: str, ext: str) -> Path:
        return self.root / sha[:2] / f"{sha}.{ext}"

    def put_bytes(self, data: bytes) -> ImageRef:
        fmt, _, _ = probe_image(data, self.limits)
        sha = sha256_bytes(data)
        path = self._path(sha, ALLOWED_FORMATS[fmt])
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return ImageRef(sha256=sha, path=str(path))

    def put_image(self, img: Image.Image, format: str = "PNG") -> ImageRef:
        buf = io.BytesIO()
        img.save(buf, format=format)
        return self.put_bytes(buf.getvalue())

    def put_file(self, path: str | os.PathLike[str]) -> ImageRef:
        return self.put_bytes(_read_limited(path, self.limits))

    def find(self, sha: str) -> Path | None:
        for ext in ALLOWED_FORMATS.values():
            p = self._path(sha, ext)
            if p.exists():
                return p
        return None

    def resolve(self, ref: ImageRef) -> Path:
        """The file behind a reference: the store copy when there is one, else its path."""
        if ref.sha256 is not None and (p := self.find(ref.sha256)) is not None:
            return p
        if ref.path is not None and not ref.missing:
            return Path(ref.path)
        raise ImageError(f"image {ref.sha256 or ref.source or ref.path} is not available")

    def open(self, ref: ImageRef) -> Image.Image:
        return open_image(self.resolve(ref), self.limits)


def ref_path(ref: ImageRef, store: ImageStore | None = None) -> Path:
    """The file behind a reference, with or without a store."""
    if store is not None:
        return store.resolve(ref)
    if ref.path is None or ref.missing:
        raise ImageError(f"image {ref.source or ref.sha256} is not available")
    return Path(ref.path)


def load_ref(
    ref: ImageRef, store: ImageStore | None = None, limits: ImageLimits = DEFAULT_LIMITS
) -> Image.Image:
    """Decode the image behind a reference (lazily: only when a caller needs pixels)."""
    return open_image(ref_path(ref, store), limits)


def to_data_url(
    ref_or_path: ImageRef | str | os.PathLike[str],
    *,
    store: ImageStore | None = None,
    max_side: int | None = None,
    size: tuple[int, int] | None = None,
    format: str | None = None,
    quality: int = 90,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> str:
    """Encode an image as a ``data:`` URL for a judge request.

    Without ``max_side``/``size``/``format`` the original bytes are sent unchanged (after the same
    safety checks); otherwise the image is decoded, resized (``max_side`` keeps the aspect ratio,
    ``size`` forces an exact size such as OpenING's 512x512) and re-encoded.
    """
    path = ref_path(ref_or_path, store) if isinstance(ref_or_path, ImageRef) else ref_or_path
    data = _read_limited(path, limits)
    fmt, w, h = probe_image(data, limits, str(path))
    target = (format or fmt).upper()
    if target == "JPG":
        target = "JPEG"
    if target not in ALLOWED_FORMATS:
        raise ImageError(f"cannot encode as {target}")
    if size is None and (max_side is None or max(w, h) <= max_side) and target == fmt:
        return f"data:{MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"
    img = decode_image(data, limits, str(path))
    if size is not None:
        img = img.resize(size, Image.Resampling.BICUBIC)
    elif max_side is not None and max(w, h) > max_side:
        scale = max_side / max(w, h)
        img = img.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC
        )
    if target == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=target, **({"quality": quality} if target != "PNG" else {}))
    return f"data:{MIME[target]};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
