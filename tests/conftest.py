"""Shared fixtures: an isolated cache per test, offline hub, and copies of the bundled mini sets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from interleave_bench.benchmarks.base import MINISET_DIR

# pytest-xdist workers inherit COLUMNS from the controller, and a rich Console created at import
# (the CLI's) then keeps that width for good, whatever a test's CliRunner env says: every worker
# sees the environment of a serial run instead (tests that need a width set it themselves)
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("IBENCH_HOME", str(tmp_path_factory.mktemp("ibench_home")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def copy_miniset(tmp_path):
    """Copy a bundled mini set into a writable folder the test may damage."""

    def _copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(MINISET_DIR / name, dest)
        return dest

    return _copy


@pytest.fixture(scope="session")
def tiny_janus(tmp_path_factory):
    """A tiny random Janus saved with save_pretrained, built once per test session."""
    from interleave_bench.models.tiny_janus import build_tiny_janus

    return build_tiny_janus(tmp_path_factory.mktemp("tiny_janus") / "model")


@pytest.fixture(scope="session")
def tiny_emu3(tmp_path_factory):
    """A tiny random Emu3 saved with save_pretrained, built once per test session."""
    from interleave_bench.models.tiny_emu3 import build_tiny_emu3

    return build_tiny_emu3(tmp_path_factory.mktemp("tiny_emu3") / "model")


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory):
    """A tiny random text-only Llama (the text family), built once per test session."""
    from interleave_bench.models.tiny_text import build_tiny_text

    return build_tiny_text(tmp_path_factory.mktemp("tiny_text") / "model")
