"""The layer map of docs/architecture.md holds: imports only go down, no two modules import each other, files stay small.

Every bloodcell/**.py (and the top-level train.py / evaluate.py) is parsed with `ast`; imports at module level and
inside functions both count. A new module must be given a layer in LAYERS.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

# module (or package prefix) → layer; the longest matching prefix wins
LAYERS = {
    "bloodcell": 1,  # the package __init__ (registers the config resolvers)
    "bloodcell.errors": 1,
    "bloodcell.config": 1,
    "bloodcell.reproducibility": 1,
    "bloodcell.data": 2,
    "bloodcell.augment": 2,
    "bloodcell.models": 2,
    "bloodcell.optim": 2,
    "bloodcell.module": 3,
    "bloodcell.checkpoint": 3,
    "bloodcell.callbacks": 3,
    "bloodcell.distributed": 3,
    "bloodcell.training": 4,
    "bloodcell.evaluation": 4,
    "bloodcell.sweeps": 4,
    "bloodcell.tools": 5,
    "train": 5,
    "evaluate": 5,
    "export": 5,
    "serve": 5,
}
MAX_LINES = 350


@dataclass(frozen=True)
class Import:
    """One import statement of a project module: who imports what, where."""

    importer: str
    imported: str
    where: str  # file:line

    def __str__(self) -> str:
        return f"{self.where}: {self.importer} imports {self.imported}"


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for the package and the top-level entry points."""
    files = {p.stem: p for p in (ROOT / "train.py", ROOT / "evaluate.py", ROOT / "export.py", ROOT / "serve.py")}
    for path in sorted((ROOT / "bloodcell").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def layer_of(module: str) -> int | None:
    """The layer of a module: its longest prefix in LAYERS (None: not mapped; "bloodcell" itself maps only the package)."""
    for end in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:end])
        if prefix in LAYERS and (prefix != "bloodcell" or module == "bloodcell"):
            return LAYERS[prefix]
    return None


def resolve(name: str, known: set[str]) -> str | None:
    """The project module a dotted import name loads: its longest prefix that is a known module (None: a library)."""
    parts = name.split(".")
    return next((m for end in range(len(parts), 0, -1) if (m := ".".join(parts[:end])) in known), None)


def imports_of(module: str, path: Path, known: set[str], root: Path = ROOT) -> list[Import]:
    """Every import of a project module in `path`, at module level or inside functions (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod when there is one, else names from pkg
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            target = resolve(name, known)
            imp = Import(module, target, f"{path.relative_to(root)}:{node.lineno}")
            if target is not None and target != module and imp not in found:
                found.append(imp)
    return found


def upward_imports(imports: list[Import]) -> list[str]:
    """Imports from a lower layer to a higher one, each named with its file and line."""
    bad = []
    for imp in imports:
        low, high = layer_of(imp.importer), layer_of(imp.imported)
        if high is not None and low is not None and high > low:
            bad.append(f"{imp} (layer {low} imports layer {high})")
    return bad


def import_cycles(imports: list[Import]) -> list[str]:
    """Every cycle of the module graph (strongly connected components of size > 1), with the imports that close it."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, set()).add(imp.imported)
        graph.setdefault(imp.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [" ; ".join(str(i) for i in imports if i.importer in c and i.imported in c) for c in components]


@pytest.fixture(scope="module")
def project_imports() -> list[Import]:
    files = module_files()
    return [imp for module, path in files.items() for imp in imports_of(module, path, set(files))]


def test_every_module_has_a_layer():
    unmapped = [m for m in module_files() if layer_of(m) is None]
    assert not unmapped, f"give these modules a layer in tests/test_architecture.py LAYERS (and docs/architecture.md): {unmapped}"


def test_imports_only_go_down(project_imports):
    bad = upward_imports(project_imports)
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_no_import_cycles(project_imports):
    cycles = import_cycles(project_imports)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_nothing_imports_the_tools(project_imports):
    bad = [str(i) for i in project_imports if i.imported.startswith("bloodcell.tools") and layer_of(i.importer) != 5]
    assert not bad, "only entry points may import bloodcell.tools:\n" + "\n".join(bad)


def test_files_stay_small():
    long = {str(p.relative_to(ROOT)): n for p in module_files().values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them along a seam): {long}"


def test_the_checks_catch_what_they_claim(tmp_path):
    """The checker itself: an upward import, an in-function import and a two-module cycle are all reported."""
    pkg = tmp_path / "bloodcell"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def f():\n    from bloodcell.training import train\n")
    (pkg / "training.py").write_text("from bloodcell import evaluation\n")
    (pkg / "evaluation.py").write_text("import bloodcell.training\n")
    known = {"bloodcell", "bloodcell.config", "bloodcell.training", "bloodcell.evaluation"}
    imports = [i for name in ("config", "training", "evaluation")
               for i in imports_of(f"bloodcell.{name}", pkg / f"{name}.py", known, tmp_path)]
    assert upward_imports(imports) == ["bloodcell/config.py:2: bloodcell.config imports bloodcell.training (layer 1 imports layer 4)"]
    cycles = import_cycles(imports)
    assert len(cycles) == 1 and "bloodcell.training imports bloodcell.evaluation" in cycles[0]
    assert "bloodcell.evaluation imports bloodcell.training" in cycles[0]

