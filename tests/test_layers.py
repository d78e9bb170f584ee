"""The dependency direction of docs/architecture.md "Layers", checked on every import in zmqgrid/ (ast, no import).

    errors <- spec_limits <- model <- protocol <- transport <- {master, worker, client};  fields (the wire schema's specs) <- model, protocol
    errors <- config;  model <- store (store knows no zmq)
    master -> store;  worker -> executors, metrics (never store, never master)
    standalone -> master, worker;  cli -> client, config, logs, standalone
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .helpers import REPO

pytestmark = pytest.mark.timeout(30)

PACKAGE = REPO / "zmqgrid"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, at any depth (inside functions too), relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from . import queries` imports the module zmqgrid.master.queries
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def violations(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """`importer -> imported` pairs where a module in the packages `importers` imports one in `forbidden`."""
    return sorted(f"{importer} -> {imported}"
                  for importer, imported_set in IMPORTS.items() if within(importer, *importers)
                  for imported in imported_set if within(imported, *forbidden))


def zmqgrid_modules_except(*allowed: str) -> tuple[str, ...]:
    """Every top-level zmqgrid module or package except `allowed` (names without the zmqgrid. prefix)."""
    tops = {name.split(".")[1] for name in MODULES if name.count(".") >= 1}
    return tuple(f"zmqgrid.{top}" for top in sorted(tops - set(allowed)))


def test_the_walk_sees_the_package_and_resolves_relative_imports():
    assert {"zmqgrid.protocol", "zmqgrid.master.handlers", "zmqgrid.cli"} <= set(MODULES)
    assert {"zmqgrid.errors", "zmqgrid.master.queries", "zmqgrid.master.cluster"} <= IMPORTS["zmqgrid.master.handlers"]
    assert "zmqgrid.cli" in IMPORTS["zmqgrid.__main__"]


def test_nothing_but_the_cli_itself_and_main_imports_the_cli_or_the_tui():
    found = sorted(f"{importer} -> {imported}" for importer, imported_set in IMPORTS.items()
                   if not within(importer, "zmqgrid.cli", "zmqgrid.tui", "zmqgrid.__main__")
                   for imported in imported_set if within(imported, "zmqgrid.cli", "zmqgrid.tui"))
    assert found == []


def test_the_worker_never_imports_the_store_or_the_master():
    assert violations(("zmqgrid.worker",), ("zmqgrid.store", "zmqgrid.master")) == []


def test_the_store_knows_no_zmq_and_no_master_worker_or_client():
    assert violations(("zmqgrid.store",), ("zmq", "zmqgrid.master", "zmqgrid.worker", "zmqgrid.client")) == []


@pytest.mark.parametrize("module, may_import", [
    ("zmqgrid.errors", ()),
    ("zmqgrid.text", ()),
    ("zmqgrid.spec_limits", ("errors",)),
    ("zmqgrid.model", ("errors", "spec_limits", "fields")),
    ("zmqgrid.fields", ()),
    ("zmqgrid.protocol", ("errors", "model", "fields")),
])
def test_the_bottom_layers_import_nothing_of_zmqgrid_above_them(module, may_import):
    above = zmqgrid_modules_except(module.split(".")[1], *may_import)
    assert violations((module,), above) == []


def test_the_master_never_imports_the_worker_the_client_or_the_cli():
    assert violations(("zmqgrid.master",), ("zmqgrid.worker", "zmqgrid.client", "zmqgrid.cli")) == []


def test_the_client_never_imports_the_master_the_worker_or_the_store():
    assert violations(("zmqgrid.client",), ("zmqgrid.master", "zmqgrid.worker", "zmqgrid.store")) == []


def test_the_dashboard_screens_and_widgets_never_import_the_app():
    # They ask the app by messages (zmqgrid/tui/messages.py) and read the Source they are given, as Textual apps do;
    # the package itself (zmqgrid.tui) imports the app.
    assert violations(("zmqgrid.tui.screens", "zmqgrid.tui.widgets"), ("zmqgrid.tui.app",)) == []
    assert [name for name in MODULES if within(name, "zmqgrid.tui.screens", "zmqgrid.tui.widgets")
            and "zmqgrid.tui" in IMPORTS[name]] == []


def test_no_module_is_longer_than_400_lines():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}
