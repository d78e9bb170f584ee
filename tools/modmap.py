#!/usr/bin/env python
"""The package's module map: each module's lines and the package modules it imports, then the longest functions and
classes. With `--rev`, the map of that commit (read through git, nothing checked out), to compare two states.

    python tools/modmap.py                      # the working tree
    python tools/modmap.py --rev 42c2383~1      # a commit
    python tools/modmap.py --under zmqgrid/master --top 15
"""
from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sources(rev: str | None, under: str) -> dict[str, str]:
    """Path -> text of every .py file below `under`, in the working tree or at `rev`."""
    if rev is None:
        return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in sorted((REPO / under).rglob("*.py"))}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, under], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".py")}


def module_name(path: str) -> str:
    parts = path[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(module: str, path: str, tree: ast.Module) -> set[str]:
    """The package modules `module` imports (relative imports resolved; `from x import y` counts x.y if a module)."""
    package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - (node.level - 1)] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            out.add(source)
            out.update(f"{source}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def spans(tree: ast.Module, module: str) -> list[tuple[int, str, str]]:
    """(lines, name, "classes" or "functions") of every class and function, methods included."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                kind = "classes" if isinstance(child, ast.ClassDef) else "functions"
                found.append((child.end_lineno - child.lineno + 1, name, kind))
                visit(child, name)
    visit(tree, module)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a commit (default: the working tree)")
    parser.add_argument("--under", default="zmqgrid", help="the folder to map (default: zmqgrid)")
    parser.add_argument("--top", type=int, default=10, help="how many of the longest functions and classes")
    a = parser.parse_args()
    files = sources(a.rev, a.under)
    trees = {module_name(p): (p, ast.parse(text), len(text.splitlines())) for p, text in files.items()}
    total = 0
    print(f"{'module':40} {'lines':>5}  imports (package modules)")
    for module, (path, tree, lines) in sorted(trees.items()):
        total += lines
        used = sorted(m for m in imports(module, path, tree) if m in trees and m != module)
        print(f"{module:40} {lines:5}  {', '.join(u.removeprefix('zmqgrid.') for u in used)}")
    print(f"{'total':40} {total:5}  ({len(trees)} modules)")
    every = sorted((s for module, (_, tree, _) in trees.items() for s in spans(tree, module)), reverse=True)
    for kind in ("classes", "functions"):
        print(f"\nlongest {kind}:")
        for lines, name, _ in [s for s in every if s[2] == kind][:a.top]:
            print(f"  {lines:5}  {name}")


if __name__ == "__main__":
    main()
