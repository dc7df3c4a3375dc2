"""The parts of braze and the arrows allowed between them (docs/ARCHITECTURE.md).

Read from the source of every product module (module-level and
function-local imports alike): no import cycle anywhere, and each part
imports only the parts below it. A new import that breaks an arrow fails
here, naming the module, the import and the rule.
"""
from __future__ import annotations

import ast
import os

import networkx as nx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = {"braze": "braze", "ir": "braze.ir", "compiler": "braze.compiler", "passes": "braze.passes",
           "autotune": "braze.autotune"}

# part -> the parts it may import (its own included). "version" is braze/version.py, a leaf.
ALLOWED = {
    "ir": {"ir"},
    "passes": {"passes", "ir"},
    "autotune": {"autotune", "ir", "version"},
    "codegen": {"codegen", "autotune", "ir"},
    "compiler": {"compiler", "codegen", "passes", "autotune", "ir", "version"},
    "api": {"api", "compiler", "codegen", "passes", "autotune", "ir", "version"},
    "version": set(),
}


def _modules() -> dict[str, str]:
    out = {}
    for folder, pkg in FOLDERS.items():
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.join(ROOT, folder))[:-3]
                parts = [p for p in rel.split(os.sep) if p != "__init__"]
                out[".".join([pkg] + parts)] = os.path.join(dirpath, f)
    return out


def part(module: str) -> str:
    if module == "braze.version":
        return "version"
    if module.startswith("braze.compiler.codegen"):
        return "codegen"
    for name in ("ir", "passes", "autotune", "compiler"):
        if module == f"braze.{name}" or module.startswith(f"braze.{name}."):
            return name
    return "api"


def _imports(path: str, modules: dict) -> list[tuple[str, int]]:
    """(imported product module, line) for every import of braze in the file."""
    out = []
    for node in ast.walk(ast.parse(open(path).read())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("braze") and not node.level:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("braze")]
        for n in names:
            while n and n not in modules:
                n = n.rpartition(".")[0]
            if n:
                out.append((n, node.lineno))
                break
    return out


def _graph():
    modules = _modules()
    g = nx.DiGraph()
    where = {}
    for m, path in modules.items():
        g.add_node(m)
        for target, line in _imports(path, modules):
            if target != m and not m.startswith(target + "."):  # a package's own submodules import it
                g.add_edge(m, target)
                where[(m, target)] = f"{os.path.relpath(path, ROOT)}:{line}"
    return g, where


def test_no_import_cycle_in_the_product():
    g, where = _graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(
        " <-> ".join(c) + " (" + ", ".join(where[e] for e in g.subgraph(c).edges) + ")" for c in cycles)


def test_every_import_follows_the_allowed_arrows():
    g, where = _graph()
    bad = [f"{where[(a, b)]}: {a} ({part(a)}) imports {b} ({part(b)})" for a, b in g.edges
           if part(b) not in ALLOWED[part(a)]]
    assert not bad, "imports against the arrows of docs/ARCHITECTURE.md:\n" + "\n".join(sorted(bad))


def test_the_kernel_contract_imports_no_backend_and_no_driver():
    g, _ = _graph()
    reach = nx.descendants(g, "braze.autotune.contract")
    assert not [m for m in reach if part(m) in ("codegen", "compiler", "passes", "api")], sorted(reach)


def test_dev_tools_are_not_in_the_product_package():
    modules = _modules()
    for name in ("demo", "hf_models", "greedy", "cuda_export", "aot"):
        assert not [m for m in modules if m.rsplit(".", 1)[-1] == name], f"{name} belongs in tools/"


def test_function_local_imports_say_why():
    """An import inside a function is there to keep a heavy module (triton, tvm, ...) or the
    API's first import lazy; each says so with a ``# lazy:`` note (cycles need none: there
    are none)."""
    missing = []
    for m, path in _modules().items():
        src = open(path).read()
        lines = src.splitlines()
        for fn in ast.walk(ast.parse(src)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for st in ast.walk(fn):
                if isinstance(st, ast.ImportFrom) and st.module and st.module.startswith("braze"):
                    here = lines[st.lineno - 1] + (lines[st.lineno - 2] if st.lineno > 1 else "")
                    if "# lazy:" not in here:
                        missing.append(f"{os.path.relpath(path, ROOT)}:{st.lineno}")
    assert not missing, "function-local imports without a '# lazy:' reason: " + ", ".join(sorted(set(missing)))
