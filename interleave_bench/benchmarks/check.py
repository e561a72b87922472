"""Deep checks of a loaded benchmark's images (loading itself never decodes a pixel).

Each distinct file is checked once, on a thread pool (Pillow releases the GIL while decoding); a
bad file becomes one Problem per row and field that refers to it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..media import DEFAULT_LIMITS, ImageLimits, check_image_file
from .base import BenchmarkData
from .problems import Problem


def check_images(
    data: BenchmarkData,
    *,
    full: bool = True,
    workers: int | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
    progress: Callable[[int, int], None] | None = None,
) -> list[Problem]:
    """Decode (``full``) or header-check every referenced image; return the problems found."""
    by_path: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for site in data.sites:
        by_path[site.path].append((site.row, site.field))
    paths = list(by_path)
    problems: list[Problem] = []
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (path, reason) in enumerate(
            zip(paths, pool.map(lambda p: check_image_file(p, limits, full), paths), strict=True), 1
        ):
            if reason is not None:
                problems.extend(Problem(row, field, reason) for row, field in by_path[path])
            if progress is not None:
                progress(done, len(paths))
    return problems
