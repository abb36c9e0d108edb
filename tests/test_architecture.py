"""Enforce DESIGN.md's dependency rules ("one direction only"): no import cycle between ablate modules
or components, `spec` is the root, `report` never imports torch, and the CLI imports nothing heavy at
import time. Static (stdlib `ast`): nothing of ablate is imported."""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ablate"
LEAVES = {"ablate", "ablate.errors"}  # everyone may import these: left out of the component graph
TORCH = {"torch", "transformers", "peft"}
HEAVY = TORCH | {"mlflow", "optuna", "pandas", "matplotlib"}


@dataclass(frozen=True)
class Import:
    importer: str  # module holding the statement: ablate.spec.study, or ablate.spec for its __init__
    target: str  # imported module: an ablate module (resolved to a submodule where one exists) or torch.nn
    line: int
    text: str
    module_level: bool  # runs when the importer is imported (not inside a def or lambda)

    def __str__(self) -> str:
        return f"{self.importer}:{self.line}: {self.text}"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted name -> file for every module of the package at `root`."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"


@functools.lru_cache(maxsize=None)
def collect_imports(root: Path = PACKAGE) -> tuple[Import, ...]:
    """Every import statement of every module under `root`, those inside functions and methods included."""
    modules = module_files(root)
    found: list[Import] = []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

        def visit(node: ast.AST, module_level: bool) -> None:
            # `if TYPE_CHECKING:` bodies are for type checkers and never run: skipped (their else runs).
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for child in node.orelse:
                    visit(child, module_level)
                return
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: `from . import y`, `from .z import y`, against the package
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                # `from ablate.x import y`: ablate.x.y where that is a module, else ablate.x
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                targets = []
            text = " ".join((ast.get_source_segment(source, node) or "").split())
            found.extend(Import(name, t, node.lineno, text, module_level) for t in dict.fromkeys(targets))
            inner = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for child in ast.iter_child_nodes(node):
                visit(child, inner)

        visit(ast.parse(source, filename=str(path)), True)
    return tuple(found)


def internal(root: Path = PACKAGE) -> list[Import]:
    """Imports from one module of the package to another (a module importing itself dropped)."""
    return [i for i in collect_imports(root) if i.target.split(".")[0] == root.name and i.target != i.importer]


def cycles(edges: list[tuple[str, str, Import]]) -> list[str]:
    """Tarjan: every strongly connected component of more than one node, with its edges."""
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            scc = {stack.pop()}
            while node not in scc:
                scc.add(stack.pop())
            if len(scc) > 1:
                found.append(scc)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [f"cycle among {', '.join(sorted(c))}:\n" + "\n".join(
        f"    {a} -> {b}   ({imp})" for a, b, imp in edges if a in c and b in c and a != b) for c in found]


def module_cycles(root: Path = PACKAGE) -> list[str]:
    return cycles([(i.importer, i.target, i) for i in internal(root)])


def component_cycles(root: Path = PACKAGE) -> list[str]:
    leaves = {m.replace("ablate", root.name, 1) for m in LEAVES}
    return cycles([(i.importer.split(".")[1], i.target.split(".")[1], i) for i in internal(root)
                   if i.importer not in leaves and i.target not in leaves])


def spec_violations(root: Path = PACKAGE) -> list[Import]:
    spec, errors = [root.name, "spec"], f"{root.name}.errors"
    return [i for i in internal(root)
            if i.importer.split(".")[:2] == spec and i.target.split(".")[:2] != spec and i.target != errors]


def report_violations(root: Path = PACKAGE) -> list[Import]:
    return [i for i in collect_imports(root)
            if i.importer.split(".")[1:2] == ["report"] and i.target.split(".")[0] in TORCH]


def cli_violations(root: Path = PACKAGE) -> list[Import]:
    cli, errors = f"{root.name}.cli", f"{root.name}.errors"
    assert cli in module_files(root), f"no module {cli} under {root}"
    return [i for i in collect_imports(root) if i.importer == cli and i.module_level and (
        i.target.split(".")[0] in HEAVY or (i.target.split(".")[0] == root.name and i.target != errors))]


def _fail_if(found: list, header: str) -> None:
    if found:
        pytest.fail(header + "\n" + "\n".join(f"    {f}" for f in found), pytrace=False)


def test_no_import_cycle_between_modules():
    _fail_if(module_cycles(), "import cycles between ablate modules (DESIGN.md: one direction only):")


def test_no_import_cycle_between_components():
    _fail_if(component_cycles(), "import cycles between ablate components (ablate.errors, ablate/__init__ left out):")


def test_spec_is_the_root():
    _fail_if(spec_violations(), "ablate/spec/ may import only ablate.spec.* and ablate.errors:")


def test_report_never_imports_torch():
    _fail_if(report_violations(), "ablate/report/ must not import torch, transformers or peft:")


def test_cli_is_light_at_import_time():
    _fail_if(cli_violations(), "ablate/cli.py imports at module level what it should import inside a command:")
