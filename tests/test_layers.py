"""The dependency direction of docs/architecture.md "Layers", checked on every import in zmqgrid/ (ast, no import).

    errors <- spec_limits <- model <- protocol <- transport <- {master, worker, client};  fields (the wire schema's specs) <- model, protocol
    errors <- config;  model <- store (store knows no zmq)
    master -> store;  worker -> executors, metrics (never store, never master)
    standalone -> master, worker;  cli -> client, config, logs, standalone
    gateway -> client, config, security, health (never master, worker, store, cli, tui)

and that a class lives in one file: no mixins spread over several modules, no `self: Host` annotations.
"""
from __future__ import annotations

import ast
import functools
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


@functools.cache
def imports() -> dict[str, set[str]]:
    """Each module's imports, parsed when a test first asks (not when every xdist process collects this file)."""
    return {name: imports_of(path) for name, path in MODULES.items()}


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def violations(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """`importer -> imported` pairs where a module in the packages `importers` imports one in `forbidden`."""
    return sorted(f"{importer} -> {imported}"
                  for importer, imported_set in imports().items() if within(importer, *importers)
                  for imported in imported_set if within(imported, *forbidden))


def zmqgrid_modules_except(*allowed: str) -> tuple[str, ...]:
    """Every top-level zmqgrid module or package except `allowed` (names without the zmqgrid. prefix)."""
    tops = {name.split(".")[1] for name in MODULES if name.count(".") >= 1}
    return tuple(f"zmqgrid.{top}" for top in sorted(tops - set(allowed)))


def test_the_walk_sees_the_package_and_resolves_relative_imports():
    assert {"zmqgrid.protocol", "zmqgrid.master.handlers", "zmqgrid.cli"} <= set(MODULES)
    assert {"zmqgrid.errors", "zmqgrid.master.queries", "zmqgrid.master.board"} <= imports()["zmqgrid.master.handlers"]
    assert "zmqgrid.cli" in imports()["zmqgrid.__main__"]


def test_nothing_but_the_cli_itself_and_main_imports_the_cli_or_the_tui():
    found = sorted(f"{importer} -> {imported}" for importer, imported_set in imports().items()
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


def test_the_http_gateway_is_a_client_it_never_imports_the_master_the_worker_the_store_or_the_cli():
    # One more client of the master, as the dashboard is (docs/architecture.md, "HTTP gateway").
    assert violations(("zmqgrid.gateway",), ("zmqgrid.master", "zmqgrid.worker", "zmqgrid.store", "zmqgrid.cli",
                                             "zmqgrid.tui", "zmqgrid.standalone")) == []
    assert "zmqgrid.client" in imports()["zmqgrid.gateway.upstream"]


def test_the_dashboard_screens_and_widgets_never_import_the_app():
    # They ask the app by messages (zmqgrid/tui/messages.py) and read the Source they are given, as Textual apps do;
    # the package itself (zmqgrid.tui) imports the app.
    assert violations(("zmqgrid.tui.screens", "zmqgrid.tui.widgets"), ("zmqgrid.tui.app",)) == []
    assert [name for name in MODULES if within(name, "zmqgrid.tui.screens", "zmqgrid.tui.widgets")
            and "zmqgrid.tui" in imports()[name]] == []


def test_no_module_is_longer_than_400_lines():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


# ---- one class, one file ------------------------------------------------------------------------------------------
# A class whose methods live in mixins of other modules (each method reaching into the host through `self: Host`)
# meets the line count by spreading one object over several files. Compose objects that own their data instead.

@functools.cache
def trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def methods(cls: ast.ClassDef) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The methods defined in the class body that take the instance or class first (not static methods)."""
    return [f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            and not any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in f.decorator_list)
            and (f.args.posonlyargs or f.args.args)]


def first_parameter(f: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.arg:
    return (f.args.posonlyargs or f.args.args)[0]


def classes(trees: dict[str, ast.Module]) -> dict[str, ast.ClassDef]:
    """Every top-level class of the package by its full name, `module.Class`."""
    return {f"{module}.{node.name}": node for module, tree in trees.items() for node in tree.body
            if isinstance(node, ast.ClassDef)}


def imported(module: str, tree: ast.Module) -> dict[str, str]:
    """Local name -> the full name it was imported as (`from .fleet import FleetEvents` -> zmqgrid.master.fleet.
    FleetEvents), at any depth (TYPE_CHECKING blocks too)."""
    package = module.split(".") if module in PACKAGES else module.split(".")[:-1]
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - (node.level - 1)] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            names.update({alias.asname or alias.name: f"{source}.{alias.name}" for alias in node.names})
        elif isinstance(node, ast.Import):
            names.update({alias.asname or alias.name: alias.name for alias in node.names})
    return names


def resolve(name: str, trees: dict[str, ast.Module], found: dict[str, ast.ClassDef]) -> str | None:
    """The full name of the package class `name` refers to, following re-exports (a package's __init__)."""
    for _ in range(5):
        if name in found:
            return name
        module, _, local = name.rpartition(".")
        if module not in trees:
            return None
        name = imported(module, trees[module]).get(local, "")
    return None


def is_mixin(cls: ast.ClassDef) -> bool:
    """A class with no base of its own whose methods reach attributes of `self` it neither defines nor sets: the
    state it works on belongs to the class that mixes it in. An Exception subclass, a dataclass, a Textual widget or
    a base that sets up what it uses is none."""
    if any(not (isinstance(b, ast.Name) and b.id == "object") for b in cls.bases):
        return False
    defined = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for node in cls.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    used = set()
    for f in methods(cls):
        me = first_parameter(f).arg
        read_first = {id(n.target) for n in ast.walk(f) if isinstance(n, ast.AugAssign)}   # `self.x += 1` reads x
        for node in ast.walk(f):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == me:
                stored = isinstance(node.ctx, ast.Store) and id(node) not in read_first
                (defined if stored else used).add(node.attr)
    return bool({name for name in used - defined if not (name.startswith("__") and name.endswith("__"))})   # dunders: Python's


def mixed_in(trees: dict[str, ast.Module]) -> dict[str, list[str]]:
    """Classes -> the mixins of other modules among their bases."""
    found = classes(trees)
    out = {}
    for name, cls in found.items():
        module = name.rpartition(".")[0]
        local = imported(module, trees[module])
        bases = []
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in local:
                target = resolve(local[base.id], trees, found)
            elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id in local:
                target = resolve(f"{local[base.value.id]}.{base.attr}", trees, found)
            else:
                continue   # defined in this module, or not the package's
            if target is not None and target.rpartition(".")[0] != module and is_mixin(found[target]):
                bases.append(target)
        if bases:
            out[name] = bases
    return out


def self_annotations(trees: dict[str, ast.Module]) -> dict[str, str]:
    """`module.Class.method` -> the annotation of its first parameter, for every method that has one."""
    return {f"{name}.{f.name}": ast.unparse(first_parameter(f).annotation)
            for name, cls in classes(trees).items() for f in methods(cls) if first_parameter(f).annotation is not None}


PACKAGES = {module_name(p) for p in PACKAGE.rglob("__init__.py")}


def test_no_class_takes_its_methods_from_mixins_of_other_modules():
    assert mixed_in(trees()) == {}


def test_no_method_annotates_its_self_to_reach_into_the_class_it_is_mixed_into():
    assert self_annotations(trees()) == {}


def parse(**sources: str) -> dict[str, ast.Module]:
    return {f"zmqgrid.{name}": ast.parse(source) for name, source in sources.items()}


def test_the_rules_tell_a_class_spread_over_files_from_ordinary_inheritance():
    trees = parse(
        host="from .part import Part\nfrom .base import Base, Failure, Record, Interface\nfrom . import base\n"
             "from textual.screen import Screen\n"
             "class Host(Part):\n    def __init__(self):\n        self.count = 0\n"
             "class Ok(Base, Interface): pass\nclass Bad(Failure): pass\nclass Row(Record): pass\n"
             "class View(Screen): pass\nclass Qualified(base.Base): pass\n",
        part="class Part:\n    def bump(self: 'Host') -> None:\n        self.count += 1\n",
        base="class Base:\n    def __init__(self):\n        self.n = 0\n    def get(self):\n        return self.n\n"
             "class Failure(Exception):\n    def text(self):\n        return self.args[0]\n"
             "class Record:\n    size: int = 0\n    def double(self):\n        return 2 * self.size\n"
             "class Interface:\n    def run(self):\n        raise NotImplementedError\n"
             "    @staticmethod\n    def make(x: int) -> int:\n        return x\n")
    assert mixed_in(trees) == {"zmqgrid.host.Host": ["zmqgrid.part.Part"]}
    assert self_annotations(trees) == {"zmqgrid.part.Part.bump": "'Host'"}
