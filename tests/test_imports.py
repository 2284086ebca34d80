"""The import graph of phasescope: no cycles, and low-level modules never import high-level ones.

The graph is read from the source with ``ast`` (nothing is imported). Its nodes are the
modules under ``src/phasescope`` (a package is its ``__init__``); its edges are the
imports each module's code names, wherever they stand:

* module-level imports, **and imports inside functions** (lazy imports). A lazy import
  only postpones a dependency, so it counts: a cycle closed by a lazy import is still a
  cycle (the code cannot be understood, tested or moved one module at a time), and
  hiding a cycle behind a function-level import is exactly what this test is meant to
  catch. Lazy imports that only keep ``import phasescope`` light (matplotlib, scipy,
  sklearn, an optional module) are fine: they point outside the package or downward. Each
  says why on its line (``# lazy: why``: see test_imports_inside_functions_say_why); every
  other import stands at the top of its module.
* ``import a.b`` gives the edge to ``a.b``; ``from X import n`` gives the edge to the
  submodule ``X.n`` when there is one, else to ``X`` itself (a name ``X`` defines).
* Relative imports are resolved against the importing module's package.
* The implicit import of a module's parent packages (Python runs ``phasescope/__init__``
  before any ``phasescope.x``) is not an edge: every module has it, and it says nothing
  about the design. Importing a name *from* a package's ``__init__`` is an edge.

``KNOWN_EDGES`` lists edges that close a cycle today and belong to code outside the change
that added this test; each says why it is excused and how it could go. Remove an entry when its edge
goes; the test fails when an excused edge no longer exists, so the list cannot go stale.
"""
from __future__ import annotations

import ast
from pathlib import Path

import phasescope

ROOT = Path(phasescope.__file__).resolve().parent
PACKAGE = "phasescope"

# The layers, lowest first: a module imports only modules of its own layer or of layers below it
# (its own layer's imports may not form a cycle: see test_no_import_cycles). Each entry names
# modules or packages relative to ``phasescope``; the package's own ``__init__`` (the facade
# that re-exports the public names) and ``__main__`` stand above every layer. The layout of the
# package follows these layers (see the docstring of ``phasescope/__init__.py``).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("version", "errors", "defaults", "_moved")),
    ("data", ("data",)),
    ("declarations", ("extension", "registry", "config")),
    ("engine", ("engine",)),  # measure/ (targets: input or token targets), layers, stats, phases, settings, tracker
    ("outputs", ("outputs",)),
    ("extensions", ("extensions",)),
    ("run", ("run",)),  # models, gpt (the language model), training, presets, budget, runfolder, experiment
    ("theory", ("theory",)),
    ("interfaces", ("interfaces",)),
]
TOP = ("__main__",)  # with the package itself: may import any layer
# The built-in extensions (phasescope.extensions.*) plug into the rest through the registry: no other
# module names one (the registry loads them by import string).
EXTENSIONS = ("extensions",)

# (importer, imported) -> why it is excused. Each closes a cycle today, in modules outside
# the change that added this test; the other edge of each cycle is the intended direction.
KNOWN_EDGES: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_edges() -> dict[tuple[str, str], list[int]]:
    """(importer, imported) -> line numbers, for imports of phasescope modules by phasescope modules."""
    mods = modules()
    edges: dict[tuple[str, str], list[int]] = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                if t in mods and t != name and node.lineno not in edges.get((name, t), []):
                    edges.setdefault((name, t), []).append(node.lineno)
    return edges


def _in(module: str, layer: tuple[str, ...]) -> bool:
    rel = module[len(PACKAGE) + 1:]
    return any(rel == m or rel.startswith(m + ".") for m in layer)


def layer_of(module: str) -> int | None:
    """The index of ``module``'s layer in LAYERS; ``len(LAYERS)`` for the facade; None when in none."""
    if module == PACKAGE or _in(module, TOP):
        return len(LAYERS)
    return next((i for i, (_, members) in enumerate(LAYERS) if _in(module, members)), None)


def find_cycles(edges) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _describe(edges, pairs) -> str:
    return "\n".join(f"  {a} -> {b} (line {', '.join(map(str, edges[(a, b)]))})" for a, b in sorted(pairs))


def test_the_reader_sees_known_imports():
    edges = import_edges()
    assert ("phasescope.engine.phases", "phasescope.engine.stats") in edges  # from .stats import ... (module level)
    assert ("phasescope.extensions.transfer.tasks", "phasescope.data") in edges  # from ...data import ... (package)
    assert ("phasescope.run.experiment", "phasescope.data.subsets") in edges  # from .data import subsets (submodule)
    assert ("phasescope.outputs.figures", "phasescope.engine.diagnostics") in edges  # a lazy import inside a function
    assert ("phasescope", "phasescope.engine.tracker") in edges


def test_known_edges_still_exist():
    edges = import_edges()
    gone = [e for e in KNOWN_EDGES if e not in edges]
    assert not gone, f"these excused edges are gone; remove them from KNOWN_EDGES: {gone}"


def test_no_import_cycles():
    edges = import_edges()
    kept = {e: lines for e, lines in edges.items() if e not in KNOWN_EDGES}
    cycles = find_cycles(kept)
    assert not cycles, "import cycles among phasescope modules:\n" + "\n\n".join(
        _describe(kept, [(a, b) for a, b in kept if a in c and b in c]) for c in cycles)


def test_every_module_is_in_one_layer():
    layered = {m: [name for name, members in LAYERS if _in(m, members)] for m in modules()}
    loose = [m for m, names in layered.items() if not names and layer_of(m) is None]
    twice = {m: names for m, names in layered.items() if len(names) > 1}
    assert not loose, f"modules in no layer (add them to LAYERS): {loose}"
    assert not twice, f"modules in several layers: {twice}"


def test_imports_only_go_downward():
    edges = import_edges()
    upward = [(a, b) for a, b in edges if (a, b) not in KNOWN_EDGES and layer_of(b) > layer_of(a)]
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(
        f"  {a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0] if layer_of(b) < len(LAYERS) else 'facade'}) "
        f"(line {', '.join(map(str, edges[(a, b)]))})" for a, b in sorted(upward))


def function_level_imports(path: Path) -> list[ast.stmt]:
    """The import statements inside function bodies (at any depth) of one module."""
    found: list[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def test_imports_inside_functions_say_why():
    """An import stays inside a function only for a reason (an optional or heavy dependency, a fast
    ``import phasescope``, a cycle at import time), given on its line as ``# lazy: why``; every other
    import stands at the top of its module, where the layering can be read."""
    unsaid = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        lines = path.read_text().splitlines()
        unsaid += [f"  {rel}:{n.lineno}: {lines[n.lineno - 1].strip()}" for n in function_level_imports(path)
                   if "# lazy:" not in lines[n.lineno - 1]]
    assert not unsaid, ("imports inside functions without a `# lazy: why` comment (move them to the top of "
                        "the module, or say why they must wait):\n" + "\n".join(unsaid))


def test_function_level_imports_are_found(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    import json  # lazy: test\n    def g():\n"
                      "        from . import x\n    return json\n\nclass C:\n    def m(self):\n        import re\n")
    assert [n.lineno for n in function_level_imports(source)] == [4, 6, 11]


def test_find_cycles_finds_cycles():
    assert find_cycles([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [["a", "b", "c"]]
    assert find_cycles([("a", "b"), ("b", "c")]) == []


def test_public_and_moved_names_still_import():
    from phasescope import PhaseResult, PhaseTracker, RunConfig, detect_phases, log_schedule, run_experiment  # noqa: F401
    from phasescope.data import measurement_indices, measurement_sets  # noqa: F401
    from phasescope.data.base import unnormalise
    from phasescope.errors import NotFittedError
    from phasescope.engine.measure.conv_decoder import NotFittedError as conv_error
    from phasescope.engine.measure.probe import LinearProbe  # noqa: F401
    from phasescope.engine.measure.ridge import NotFittedError as ridge_error, RidgeDecoder  # noqa: F401
    from phasescope.engine.phases import bootstrap_weights, mean_ci  # noqa: F401
    from phasescope.engine.stats import bootstrap_weights as stats_weights
    from phasescope.theory.single_layer import NotFittedError as theory_error
    from phasescope.transfer import transfer_summary_rows  # noqa: F401
    from phasescope.transfer.tasks import unnormalise as tasks_unnormalise

    assert conv_error is ridge_error is theory_error is NotFittedError  # one class: one `except` catches all
    assert issubclass(NotFittedError, RuntimeError)
    assert bootstrap_weights is stats_weights
    assert tasks_unnormalise is unnormalise


def test_every_extension_file_is_a_run_file():
    """--overwrite deletes only RUN_FILES: every file an extension declares must be one of them."""
    from phasescope.registry import extensions
    from phasescope.outputs.runs import RUN_FILES

    declared = {f: cls.__name__ for cls in extensions() for f in cls.files}
    assert declared and not set(declared) - RUN_FILES, {f: c for f, c in declared.items() if f not in RUN_FILES}
    for cls in extensions():
        assert set(cls.figures) <= set(cls.files), cls.__name__


def test_only_the_registry_knows_the_concrete_extensions():
    """Adding an extension touches one module: nothing outside phasescope.extensions imports one
    (the registry lists them as import strings); the registry imports only the Extension base and
    the exceptions (extensions never import the run or the interfaces: the layers check it)."""
    edges = import_edges()
    into = [(a, b) for a, b in edges if _in(b, EXTENSIONS) and not _in(a, EXTENSIONS)]
    assert not into, "modules outside phasescope.extensions import a concrete extension:\n" + _describe(edges, into)
    assert {b for a, b in edges if a == "phasescope.registry"} <= {"phasescope.extension", "phasescope.errors"}


def test_moved_modules_keep_their_old_import_paths(monkeypatch):
    """An old path gives the very same module (a monkeypatch through it patches the real one), with a
    DeprecationWarning naming the new path."""
    import importlib
    import sys
    import warnings

    from phasescope._moved import MOVED

    for old, new in MOVED.items():
        for name in [m for m in sys.modules if m == old or m.startswith(old + ".")]:
            monkeypatch.delitem(sys.modules, name)  # imported earlier in this process: import afresh
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert module is importlib.import_module(new) and module.__name__ == new and module.__spec__.name == new
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old
    import phasescope.extensions.transfer.tasks as tasks
    import phasescope.transfer.tasks as old_tasks  # a submodule of a moved package: the same object too

    assert old_tasks is tasks
    from phasescope.extensions import infoplane

    monkeypatch.setattr("phasescope.infoplane.DEFAULTS", {"patched": True})
    assert infoplane.DEFAULTS == {"patched": True}
    from phasescope.samples import SampleDynamics
    from phasescope.stopping import BestFeaturesKeeper
    from phasescope.transfer import BestFeaturesKeeper as keeper, TransferProbes

    assert keeper is BestFeaturesKeeper and TransferProbes.name == "transfer" and SampleDynamics.name == "samples"
