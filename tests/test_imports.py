"""The package's import graph has no cycle (every import counts, at module top or inside a function), and
no module imports a module of a higher layer (``LAYERS``)."""
import ast
from pathlib import Path
from typing import Optional

import graphrec_dist

PACKAGE_ROOT = Path(graphrec_dist.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package rooted at ``root``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_main_guard(node: ast.stmt) -> bool:
    """Whether ``node`` is an ``if __name__ == "__main__":`` block."""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def imports_of(name: str, path: Path, modules: dict[str, Path], skip_main: bool = False) -> set[str]:
    """Package modules that ``name`` imports anywhere in its file (``from X import y`` counts as
    X.y when that is a module, else X); with ``skip_main``, not those of its ``__main__`` block."""
    is_package = path.name == "__init__.py"
    found = set()
    tree = ast.parse(path.read_text())
    if skip_main:
        tree.body = [node for node in tree.body if not _is_main_guard(node)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph(root: Path, skip_main: bool = False) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules, skip_main) for name, path in modules.items()}


# The package's layers, bottom up, as the code has them: a module imports modules of its own layer
# and of the layers below, never above. Names are relative to the package; a name covers a module,
# or a subpackage and everything in it; "__init__" is the package's own __init__.py.
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "errors", "io_utils", "logging_utils", "config"),  # basics
    ("distributed",),  # the only module that calls torch.distributed
    ("data",),  # sources, the Graph3 builder, splits, the cached Bundle
    ("models",),  # recommenders and the sparse products and samplers they run on
    ("sampling", "losses", "metrics", "breakdown", "index", "plots"),  # batches, losses, measures, top-k
    ("run_dir",),  # the run folder's files
    ("checkpoint",),  # the checkpoint format, random states, sharded files, load_run
    ("elastic",),  # re-cutting a user-sharded checkpoint for another number of ranks
    ("evaluate",),  # sharded full ranking of a model or a run
    ("trainer",),  # the gradient loop
    ("tracking",),  # TensorBoard event files of a run (hooks of the trainer)
    # The commands. cli.py imports its subcommands by name when called (importlib); the commands'
    # `if __name__ == "__main__":` blocks import cli.run_command, and only run as scripts.
    ("train", "launch_ray", "tune", "recommend", "export", "serve", "cli", "__main__"),
    ("benchmarks",),  # graphrec-dist bench
]


def layer_of(module: str, package: str, layers: list[tuple[str, ...]]) -> int:
    """Index in ``layers`` of the longest name that covers ``module``; -1 when none does."""
    rel = "__init__" if module == package else module.removeprefix(package + ".")
    matches = [(len(entry), i) for i, names in enumerate(layers) for entry in names
               if rel == entry or rel.startswith(entry + ".")]
    return max(matches)[1] if matches else -1


def upward_imports(graph: dict[str, set[str]], package: str, layers: list[tuple[str, ...]]) -> list[str]:
    """Every ``a -> b`` where module ``a`` imports ``b`` of a higher layer."""
    return [f"{a} -> {b}" for a in sorted(graph) for b in sorted(graph[a])
            if layer_of(b, package, layers) > layer_of(a, package, layers)]


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    stack: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE_ROOT)
    assert len(graph) > 50 and "graphrec_dist.run_dir" in graph["graphrec_dist.train"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("import os\n\ndef f():\n    from .c import g\n    return g\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from pkg import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]
    (pkg / "sub" / "c.py").write_text("def g():\n    return 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_no_module_imports_a_higher_layer() -> None:
    graph = import_graph(PACKAGE_ROOT, skip_main=True)
    package = PACKAGE_ROOT.name
    unplaced = sorted(m for m in graph if layer_of(m, package, LAYERS) < 0)
    assert not unplaced, f"modules in no layer of LAYERS: {unplaced}"
    assert upward_imports(graph, package, LAYERS) == []


def test_an_upward_import_is_found_but_not_one_in_a_main_block(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text('if __name__ == "__main__":\n    from pkg import top\n')
    (pkg / "top.py").write_text("from pkg.low import a\n")
    layers = [("__init__", "low"), ("top",)]
    assert upward_imports(import_graph(pkg, skip_main=True), "pkg", layers) == []
    assert import_graph(pkg)["pkg.low.a"] == {"pkg.top"}  # the cycle check still counts it
    (pkg / "low" / "b.py").write_text("def f():\n    from pkg.top import g\n")
    assert upward_imports(import_graph(pkg, skip_main=True), "pkg", layers) == ["pkg.low.b -> pkg.top"]
