"""The package as a whole: its import graph has no cycle, and an installed wheel carries the
recipes and published leaderboards."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import interleave_bench

PACKAGE = Path(interleave_bench.__file__).resolve().parent


def _modules(root: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (functions and methods included), except those
    under ``if TYPE_CHECKING:``, which never run."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports. ``from X import n`` points at the module
    ``X.n`` when there is one, else at ``X``; imports from outside the package are left out."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
                continue
            if node.level:  # relative: from the package holding this module, up level - 1
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = base + (f".{node.module}" if node.module else "")
            else:
                target = node.module or ""
            if target not in modules:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                graph[name].add(sub if sub in modules else target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None when the graph is acyclic (iterative DFS)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_package_has_no_import_cycle():
    """No module of ``interleave_bench`` reaches itself through imports.

    The rule: every import counts, at module level and inside functions alike (only
    ``if TYPE_CHECKING:`` blocks, which never run, are skipped). A function-local import is
    laziness (not loading torch for ``--help``), not a licence to import back up the layers: a
    cycle through one still means two modules that can only be understood together, and turns
    into an import-time failure the day someone hoists the import. Fix a cycle by moving the
    shared piece down into a module both can import."""
    graph = import_graph(PACKAGE)
    assert "interleave_bench.cli.root" in graph and "interleave_bench.judges.client" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The checker itself: a lazy import back up (cli -> cli_eval -> cli) is reported."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from . import cli_eval\n")
    (pkg / "cli_eval.py").write_text("def f():\n    from .cli import app\n")
    (pkg / "sub" / "__init__.py").write_text("from .a import x\n")
    (pkg / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\nx = 1\n"
    )
    (pkg / "sub" / "b.py").write_text("from .a import x\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.a"] == set() and graph["pkg.sub.b"] == {"pkg.sub.a"}
    assert find_cycle(graph) == ["pkg.cli", "pkg.cli_eval", "pkg.cli"]


REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def test_installed_wheel_has_recipes_and_boards_outside_the_source_tree(tmp_path):
    """``pip install`` of the wheel into a fresh venv, then from an empty folder: ``ibench train
    recipes`` lists the bundled recipes, ``train grpo --config tiny_janus_grpo`` finds one by
    name and trains, ``leaderboard show mmie`` reads the published board from the package.

    The venv gets the test interpreter's third-party packages (torch, typer, ...) through a
    ``.pth`` line, so nothing is downloaded; that line does not run the checkout's editable
    finder, so ``interleave_bench`` comes from the installed wheel alone (asserted)."""
    src = tmp_path / "src"  # build from a copy: no build/ or egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("interleave_bench", "train", "leaderboards"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("IBENCH_LEADERBOARDS", None)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
          "-q", "-w", str(wheels)], tmp_path, env)  # fmt: skip
    (wheel,) = wheels.glob("interleave_bench-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = set(zf.namelist())
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "interleave_bench").rglob("*.py")}
    expected |= {
        f"interleave_bench/recipes/{p.relative_to(REPO / 'train').as_posix()}"
        for p in (REPO / "train").rglob("*")
        if p.is_file()
    }
    expected |= {f"interleave_bench/published/{p.name}" for p in (REPO / "leaderboards").glob("*")}
    assert sorted(expected - shipped) == []

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
          str(wheel)], tmp_path, env)  # fmt: skip
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   tmp_path, env).stdout.strip()  # fmt: skip
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    Path(purelib, "host_packages.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))

    work = tmp_path / "work"
    work.mkdir()
    ibench = str(venv / "bin" / "ibench")
    where = _run([str(python), "-c", "import interleave_bench; print(interleave_bench.__file__)"],
                 work, env).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(venv), where

    listed = json.loads(_run([ibench, "train", "recipes", "--json"], work, env).stdout)
    names = {r["name"]: Path(r["path"]) for r in listed}
    grid = (REPO / "train" / "ablations").glob("*.yaml")  # the paper's ablation grid
    assert {p.stem for p in (*(REPO / "train").glob("*.yaml"), *grid)} == set(names)
    assert names["janus_pro_1b_g2"].parent.name == "ablations"
    assert names["tiny_janus_grpo"].is_relative_to(venv)

    trained = _run([ibench, "train", "grpo", "--config", "tiny_janus_grpo", "steps=1", "--json"], work, env)  # fmt: skip
    summary = json.loads(trained.stdout)
    assert summary["steps"] == 1 and (work / summary["log"]).is_file()

    shown = json.loads(_run([ibench, "leaderboard", "show", "mmie", "--json"], work, env).stdout)
    published = json.loads((REPO / "leaderboards" / "mmie.json").read_text(encoding="utf-8"))
    assert {r["model"] for r in shown} == {r["model"] for r in published["rows"]}
    assert sorted(p.name for p in work.iterdir()) == ["runs"]  # nothing else written here
