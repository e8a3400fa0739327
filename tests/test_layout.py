"""The file tree is the architecture: the package layers, no import cycle, no borrowed private names,
SQL only in the ledger, and files a reader can take in one sitting. Read from the source, not run."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "arrl"
PACKAGES = ("config", "ops", "ledger", "worker", "policy", "learner", "driver", "report", "track", "bench", "cli")
LOOP = ("ops", "ledger", "worker", "policy", "learner", "driver")
ABOVE_LOOP = ("report", "track", "bench", "cli", "launch", "actors", "jobs")
# what each loop package may not import (besides ABOVE_LOOP): the layers below it never reach up
NOT_BELOW = {"ops": ("ledger", "worker", "policy", "learner", "driver"),
             "ledger": ("worker", "policy", "learner", "driver", "ops"),
             "worker": ("ledger", "policy", "learner", "driver"),
             "policy": ("ledger", "worker", "learner", "driver"),
             "learner": ("ledger", "worker", "driver"),
             "driver": ()}
MAX_LINES = 400
# Files still over MAX_LINES, each with the issue that splits it. The list may only shrink.
TOO_LONG: set[str] = set()
# Modules that still run SQL outside the ledger package (named queries replace them).
SQL_OUTSIDE_LEDGER: set[str] = set()


def _modules() -> dict[str, Path]:
    return {str(p.relative_to(SRC).with_suffix("")).replace("/", "."): p for p in sorted(SRC.rglob("*.py"))}


def _name(mod: str) -> str:
    return "arrl" if mod == "__init__" else "arrl." + mod.removesuffix(".__init__")


def _imports(path: Path, mod: str) -> set[str]:
    """Every arrl module a file imports, at top level or inside a function (`from arrl.x import y`
    counts `arrl.x.y` where that is a module)."""
    mods = {_name(m) for m in _modules()}
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("arrl")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("arrl") and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in mods else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    names = {_name(m) for m in mods}
    return {_name(m): {i for i in _imports(p, m) if i in names and i != _name(m)} for m, p in mods.items()}


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_says_what_it_owns():
    for pkg in PACKAGES + ("worker/sandbox",):
        init = SRC / pkg / "__init__.py"
        assert init.is_file(), pkg
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"{pkg}/__init__.py has no docstring saying what it owns"
    assert not [p for p in SRC.glob("*.py") if p.stem not in
                ("__init__", "__main__", "paths", "target", "launch", "actors", "jobs")], \
        "a module outside the packages"


def test_no_file_is_longer_than_a_sitting():
    long = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if len(p.read_text().splitlines()) > MAX_LINES}
    assert long <= TOO_LONG, f"over {MAX_LINES} lines: {sorted(long - TOO_LONG)}"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in graph[n]:
            if m.startswith(n + ".") or n.startswith(m + "."):
                continue  # a package and its own modules
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_the_loop_never_imports_reporting_benchmarks_or_the_composition_root():
    bad = []
    for mod, deps in _graph().items():
        top = _top(mod)
        if top not in LOOP:
            continue
        for d in deps:
            if _top(d) in ABOVE_LOOP or _top(d) in NOT_BELOW[top]:
                bad.append(f"{mod} imports {d}")
    assert not bad, bad


def test_the_config_imports_nothing_else_of_arrl():
    """Every layer reads the config, so the config reads no layer."""
    bad = [f"{m} imports {d}" for m, deps in _graph().items() if _top(m) == "config"
           for d in deps if _top(d) != "config"]
    assert not bad, bad


def test_no_module_borrows_another_modules_private_names():
    bad = []
    mods = {_name(m) for m in _modules()}
    for mod, path in _modules().items():
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> arrl module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("arrl"):
                for a in node.names:
                    if a.name.startswith("_"):
                        bad.append(f"{mod}: from {node.module} import {a.name}")
                    if f"{node.module}.{a.name}" in mods:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{mod}: {node.value.id}.{node.attr}")
    assert not bad, bad


def _runs_sql(path: Path) -> bool:
    """Whether a module imports sqlite3 or calls `.execute` / `.executemany` on anything."""
    tree = ast.parse(path.read_text())
    for n in ast.walk(tree):
        if isinstance(n, ast.Import) and any(a.name == "sqlite3" for a in n.names):
            return True
        if isinstance(n, ast.ImportFrom) and n.module == "sqlite3":
            return True
        if isinstance(n, ast.Attribute) and n.attr in ("execute", "executemany", "executescript"):
            return True
    return False


def test_sql_lives_in_the_ledger():
    found = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
             if not str(p.relative_to(SRC)).startswith("ledger/") and _runs_sql(p)}
    assert found <= SQL_OUTSIDE_LEDGER, f"SQL outside arrl.ledger: {sorted(found - SQL_OUTSIDE_LEDGER)}"


def test_the_layout_checks_can_fail():
    """The checks above read what they should: the allow-lists name files that exist, and the import
    graph sees the driver's imports."""
    for rel in TOO_LONG:
        assert (SRC / rel).is_file(), rel
    assert _runs_sql(SRC / "ledger" / "store.py") and _runs_sql(SRC / "ledger" / "queries.py")
    graph = _graph()
    assert "arrl.ledger.store" in graph["arrl.driver.loop"]
    assert "arrl.worker.sandbox.engine" in graph["arrl.worker.sandbox.docker"]


def test_the_readme_tree_lists_every_module_and_the_tests_mirror_the_packages():
    readme = (SRC.parents[1] / "README.md").read_text()
    tree = readme[readme.index("\nsrc/arrl/"):readme.index("\nbench/\n")]
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.name == "__init__.py" and rel.parent != Path("."):
            assert f" {rel.parent.name}/" in tree, f"README's tree lacks {rel.parent}/"
        elif rel.name != "__init__.py":
            assert f" {rel.name}" in tree or f"{rel.name} " in tree, f"README's tree lacks {rel}"
    tests = SRC.parents[1] / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - {"environment", "system"} <= set(PACKAGES), folders
    assert not {p.name for p in tests.glob("test_*.py")} - {"test_actors.py", "test_layout.py"}
