"""Dev tool (not part of the package): move phasescope's modules into the layered layout.

Run at the repository root on a clean git tree::

    python tools/relayout.py            # moves (git mv) and rewrites; prints what it changed
    python tools/relayout.py --check    # changes nothing; exit 1 when something is left to do

It is re-runnable and idempotent: a module already at its new place is not moved again and an
import already pointing at it is not rewritten, so running it twice changes nothing. It is meant
to be run again after other branches were merged into the old layout.

What it does:

1. ``git mv`` every module of :data:`MOVES` to its new place (creating the layer packages,
   each with the ``__init__`` docstring of :data:`PACKAGES`).
2. Rewrites every ``phasescope.OLD`` dotted name to ``phasescope.NEW`` in src/, tests/,
   benchmarks/, examples/, docs/, README.md and pyproject.toml: absolute imports, string import
   paths (registry entries, ``monkeypatch.setattr("phasescope.x.y", ...)``, ``mock.patch``
   strings, entry points, ``[project.scripts]``), ``from phasescope import OLD`` (one module
   per line), and file paths ``phasescope/OLD.py``
   (package data such as ``sweep/grids/*.toml`` in pyproject's package-data too).
3. Rewrites relative imports in src/ (``from ..report import x``): each is resolved against the
   module's place now, and when that names nothing, against its place before the move; the
   target is then mapped through :data:`MOVES` and written relative to the new place.
4. Adds each move to ``phasescope._moved.MOVED`` (the old path keeps working: the same module
   object, with a DeprecationWarning naming the new path). ``_moved.py`` itself is never
   rewritten (it holds the old names), nor a line that says ``relayout: keep``.

Hand fixes it cannot do (repeat them after a re-run; they are in their own commits on the
``layout`` branch, before and after the commit of this script's result):

* before the move: ``cli._ENTRY_POINT`` (a global rebound by ``main()`` and read by the sweep
  and analyze commands through a lambda) became ``interfaces/process.entry_point()``, which
  derives it from the interpreter's ``__main__`` (``python -m phasescope`` or the console script); ``data.register_dataset`` no longer
  rebinds ``DATASETS`` (a module ``__getattr__`` derives it from the loaders); the tracker and
  ``measure.capture`` import ``resolve_layers``/``preserved_modes``/``ModelError`` from
  ``layers``/``errors`` (where they are defined) rather than through ``models``.
* after the move: ``tests/test_figures.py`` names ``outputs/figures.py`` and
  ``outputs/compare.py`` (paths relative to the package, which the script does not rewrite);
  ``tests/test_imports.py`` declares the layers as one ordered list
  (``LAYERS``) and checks that no import goes upward; the package docstring of
  ``phasescope/__init__.py`` describes the layout.
"""
from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

SRC = Path("src/phasescope")
PKG = "phasescope"

# old path under src/phasescope -> new path (a module file or a package folder)
MOVES: dict[str, str] = {
    "process.py": "interfaces/process.py",  # new on this branch (no old path to keep)
    # engine: the measurement, independent of how a run is set up
    "layers.py": "engine/layers.py",
    "stats.py": "engine/stats.py",
    "schedule.py": "engine/schedule.py",
    "phases.py": "engine/phases.py",
    "settings.py": "engine/settings.py",
    "diagnostics.py": "engine/diagnostics.py",
    "measure": "engine/measure",
    "tracker.py": "engine/tracker.py",
    # outputs: a run folder's files, its figures and pages, comparisons and rebuilds
    "runs.py": "outputs/runs.py",
    "report.py": "outputs/figures.py",
    "html.py": "outputs/html.py",
    "compare.py": "outputs/compare.py",
    "rebuild.py": "outputs/rebuild.py",
    # run: one training run from a configuration
    "models.py": "run/models.py",
    "training.py": "run/training.py",
    "presets.py": "run/presets.py",
    "runfolder.py": "run/runfolder.py",
    "experiment.py": "run/experiment.py",
    "gpt.py": "run/gpt.py",  # the language model, beside the other models
    "budget.py": "run/budget.py",  # the overhead budget: thins a run's checkpoints against its training time
    # interfaces: what users call
    "cli.py": "interfaces/cli.py",
    "sweep": "interfaces/sweep",
    "integrations": "interfaces/integrations",
    "analyze": "interfaces/analyze",
    # the synthetic data model is data (data.synthetic loads it; the theory reads it)
    "theory/datamodel.py": "data/datamodel.py",
}

PACKAGES: dict[str, str] = {
    "engine": '''"""The measurement engine: what a checkpoint measures and how phases are decided.

``measure/`` (ridge decoder, probes, feature capture, sharding), ``layers`` (finding a layer in any
model), ``stats`` (bootstrap intervals), ``schedule`` (log-spaced checkpoints), ``phases`` (the
phase rule), ``settings`` (typed measurement settings), ``diagnostics`` and ``tracker``
(:class:`PhaseTracker`, which runs them inside any training loop). It knows nothing of run
folders, reports or command lines.
"""
''',
    "outputs": '''"""Outputs: a run folder's files and what is drawn from them.

``runs`` (reading and writing the files of a run folder, its lock), ``figures`` (curves and the
extensions' figures), ``html`` (report.html and the index page), ``compare`` (several runs side by
side) and ``rebuild`` (``phasescope report``: everything again from a folder's files). It reads
what the engine measured; it never trains.
"""
''',
    "run": '''"""One run from a configuration: models (the GPT too), training, presets, the overhead budget,
the run-folder writer, run_experiment.

Builds the model and the tracker from a :class:`~phasescope.config.RunConfig`, trains, and writes
through :class:`~phasescope.run.runfolder.RunWriter` (the one run-folder writer).
"""
''',
    "interfaces": '''"""What users call: the command line (``cli``), sweeps, checkpoint analysis and the training-stack
integrations (Lightning, Hugging Face, TensorBoard). Nothing below imports them.
"""
''',
}

TEXT_ROOTS = ("src", "tests", "benchmarks", "examples", "docs", "tools")
TEXT_FILES = ("README.md", "pyproject.toml")
TEXT_SUFFIXES = (".py", ".md", ".toml", ".txt", ".cfg", ".j2", ".rst", ".yaml", ".yml", ".json")


def _mod(path: str) -> str:
    """'engine/tracker.py' -> 'phasescope.engine.tracker'; 'engine/measure' -> 'phasescope.engine.measure'."""
    return ".".join([PKG, *Path(path).with_suffix("").parts]) if path.endswith(".py") else \
        ".".join([PKG, *Path(path).parts])


MODULE_MOVES = {_mod(old): _mod(new) for old, new in MOVES.items()}
NEW_MODULES = {"phasescope.process"}  # created for the layout: no old import path to keep in MOVED
_OLD_SORTED = sorted(MODULE_MOVES, key=len, reverse=True)


def map_name(name: str) -> str:
    """A dotted name under an old module -> the same under its new one (else unchanged)."""
    for old in _OLD_SORTED:
        if name == old or name.startswith(old + "."):
            return MODULE_MOVES[old] + name[len(old):]
    return name


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


# ---------------------------------------------------------------------- 1. moves
def do_moves(check: bool) -> list[str]:
    done = []
    for pkg, doc in PACKAGES.items():
        init = SRC / pkg / "__init__.py"
        if not init.exists():
            done.append(f"create {init}")
            if not check:
                init.parent.mkdir(parents=True, exist_ok=True)
                init.write_text(doc)
                run(["git", "add", str(init)])
    for old, new in MOVES.items():
        src, dst = SRC / old, SRC / new
        if src.exists() and not dst.exists():
            done.append(f"git mv {src} {dst}")
            if not check:
                dst.parent.mkdir(parents=True, exist_ok=True)
                run(["git", "mv", str(src), str(dst)])
        elif src.exists() and dst.exists():
            raise SystemExit(f"both {src} and {dst} exist: merge them by hand, then run again.")
    return done


# ---------------------------------------------------------------------- 2. dotted names and paths
_DOTTED = re.compile(r"(?<![\w.])phasescope(?:\.[A-Za-z_]\w*)+")
_PATHS = {f"phasescope/{old}": f"phasescope/{new}" for old, new in MOVES.items()}
_PATH_RE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(k) for k in sorted(_PATHS, key=len, reverse=True))
                      + r")(?=[/\"'`\s)\]:,*]|$)", re.M)


_FROM_PKG = re.compile(r"^(\s*)from phasescope import (\w+)(\s+as\s+\w+)?(?=\s*(#|$))", re.M)


def _from_package(m: re.Match) -> str:
    """``from phasescope import experiment`` (one moved module) -> ``from phasescope.run import experiment``;
    a module moved under a new name keeps its old one as the alias."""
    indent, name, alias = m.group(1), m.group(2), m.group(3) or ""
    new = MODULE_MOVES.get(f"{PKG}.{name}")
    if new is None:
        return m.group(0)
    parent, leaf = new.rsplit(".", 1)
    return f"{indent}from {parent} import {leaf}" + (alias or ("" if leaf == name else f" as {name}"))


def rewrite_text(text: str) -> str:
    """Every old dotted name and path, except on lines marked ``relayout: keep`` (old names on purpose)."""
    def line(text: str) -> str:
        if "relayout: keep" in text:
            return text
        text = _FROM_PKG.sub(_from_package, text)
        text = _DOTTED.sub(lambda m: map_name(m.group(0)), text)
        return _PATH_RE.sub(lambda m: _PATHS[m.group(1)], text)

    return "".join(line(t) for t in text.splitlines(keepends=True))


def rewrite_package_data(text: str) -> str:
    """pyproject's package-data globs are relative to the package: 'sweep/grids/*.toml'."""
    for old, new in MOVES.items():
        if not old.endswith(".py"):
            text = re.sub(r'(?<=["\'])' + re.escape(old) + r"/", new + "/", text)
    return text


def text_files() -> list[Path]:
    files = [Path(f) for f in TEXT_FILES if Path(f).exists()]
    for root in TEXT_ROOTS:
        if Path(root).exists():
            files += [p for p in sorted(Path(root).rglob("*")) if p.is_file() and p.suffix in TEXT_SUFFIXES
                      and "__pycache__" not in p.parts]
    skip = {SRC / "_moved.py", Path("tools/relayout.py")}
    return [f for f in files if f not in skip]


# ---------------------------------------------------------------------- 3. relative imports
def module_of(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_pkg else parts), is_pkg


def _path_of(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:]) if "." in module else Path()
    for p in (SRC / rel.with_suffix(".py") if rel.parts else None, SRC / rel / "__init__.py"):
        if p is not None and p.exists():
            return p
    return None


def _defines(module: str, name: str) -> bool:
    path = _path_of(module)
    if path is None:
        return False
    if _path_of(f"{module}.{name}") is not None:
        return True
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in (name, "__getattr__"):
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


def _resolve(current: str, is_pkg: bool, level: int, module: str | None) -> str:
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _relative(current: str, is_pkg: bool, target: str) -> tuple[int, str]:
    here = current.split(".") if is_pkg else current.split(".")[:-1]
    there = target.split(".")
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    return len(here) - common + 1, ".".join(there[common:])


_OLD_OF = {v: k for k, v in MODULE_MOVES.items()}


def old_name(current: str) -> str:
    for new in sorted(_OLD_OF, key=len, reverse=True):
        if current == new or current.startswith(new + "."):
            return _OLD_OF[new] + current[len(new):]
    return current


def rewrite_relative(path: Path) -> str | None:
    text = path.read_text()
    current, is_pkg = module_of(path)
    before = old_name(current)
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, str, str]] = []  # (line index, col, old text, new text)
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        names = [a.name for a in node.names]
        base = _resolve(current, is_pkg, node.level, node.module)
        if _path_of(base) is not None and all(n == "*" or _defines(base, n) for n in names):
            continue  # resolves where the module is now
        old_base = _resolve(before, is_pkg, node.level, node.module)
        submodules = [map_name(f"{old_base}.{n}") for n in names if f"{old_base}.{n}" in _ALL_OLD_MODULES]
        if submodules and len(submodules) == len(names) and len({s.rsplit(".", 1)[0] for s in submodules}) == 1 \
                and all(s.rsplit(".", 1)[1] == n for s, n in zip(submodules, names)):
            target = submodules[0].rsplit(".", 1)[0]  # from . import report -> from .outputs import figures?
        elif submodules:
            raise SystemExit(f"{path}:{node.lineno}: `from {'.' * node.level}{node.module or ''} import "
                             f"{', '.join(names)}` imports moved modules under new names: fix it by hand.")
        else:
            target = map_name(old_base)
        if _path_of(target) is None:
            raise SystemExit(f"{path}:{node.lineno}: cannot resolve {'.' * node.level}{node.module or ''} "
                             f"(from {before}): fix it by hand.")
        level, rest = _relative(current, is_pkg, target)
        old_spec = "." * node.level + (node.module or "")
        new_spec = "." * level + rest
        if old_spec != new_spec:
            edits.append((node.lineno - 1, old_spec, new_spec))
    if not edits:
        return None
    for i, old_spec, new_spec in edits:
        pattern = re.compile(r"(\bfrom\s+)" + re.escape(old_spec) + r"(\s+import\b)")
        new_line, n = pattern.subn(lambda m: m.group(1) + new_spec + m.group(2), lines[i], count=1)
        if n != 1:
            raise SystemExit(f"{path}:{i + 1}: could not rewrite `from {old_spec} import` on this line.")
        lines[i] = new_line
    return "".join(lines)


_ALL_OLD_MODULES: set[str] = set()


def _collect_old_modules() -> None:
    """Old names of every module under a moved package (for `from . import module`)."""
    _ALL_OLD_MODULES.update(MODULE_MOVES)
    for p in SRC.rglob("*.py"):
        name, _ = module_of(p)
        _ALL_OLD_MODULES.add(old_name(name))


# ---------------------------------------------------------------------- 4. MOVED
def add_moved(text: str) -> str:
    start = text.index("MOVED = {")
    end = text.index("\n}\n", start)
    body = text[start:end]
    extra = "".join(f'    "{old}": "{new}",\n' for old, new in MODULE_MOVES.items()
                    if f'"{old}":' not in body and old not in NEW_MODULES)
    return text[:end + 1] + extra + text[end + 1:] if extra else text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when something is left to do")
    args = ap.parse_args()
    if not SRC.is_dir():
        raise SystemExit("run me at the repository root")
    changes = do_moves(args.check)
    if args.check and changes:
        print("\n".join(changes))
        return 1
    _collect_old_modules()
    for path in sorted(SRC.rglob("*.py")):
        new = rewrite_relative(path)
        if new is not None:
            changes.append(f"relative imports: {path}")
            if not args.check:
                path.write_text(new)
    for path in text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        new = rewrite_text(text)
        if path.name == "pyproject.toml":
            new = rewrite_package_data(new)
        if new != text:
            changes.append(f"names: {path}")
            if not args.check:
                path.write_text(new)
    moved = SRC / "_moved.py"
    text = moved.read_text()
    new = add_moved(text)
    if new != text:
        changes.append(f"MOVED: {moved}")
        if not args.check:
            moved.write_text(new)
    print("\n".join(changes) if changes else "nothing to do")
    return 1 if args.check and changes else 0


if __name__ == "__main__":
    sys.exit(main())
