"""The layout rule, read from the source with ast: edgetune core -> edgetune.convert -> gguf, never
back; edgetune.tui -> core, never back (the CLI entry point alone opens the TUI); errors, events
and fsutil are the foundation every layer may use and which uses none; and no import cycle among
the project's modules, lazy imports included."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"edgetune": ROOT / "edgetune", "edgetune.convert": ROOT / "convert", "edgetune.tui": ROOT / "tui"}
ENTRY_POINTS = {"edgetune.cli"}  # `edgetune` with no verb opens the TUI


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


FOUNDATION = {"edgetune.errors", "edgetune.events", "edgetune.fsutil"}  # importable by every layer


def layer(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    if module.startswith("edgetune.convert"):
        return "convert"
    if module.startswith("edgetune.tui"):
        return "tui"
    return "core"


ALLOWED = {("core", "convert"), ("tui", "core"), ("tui", "convert"),
           ("core", "foundation"), ("convert", "foundation"), ("tui", "foundation")}


def test_imports_follow_the_layout_rule():
    wrong = [f"{a} -> {b}" for a, targets in graph().items() for b in targets
             if layer(a) != layer(b) and (layer(a), layer(b)) not in ALLOWED and a not in ENTRY_POINTS]
    assert wrong == []


def test_no_import_cycles():
    g = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_a_violation(tmp_path):
    """The graph builder resolves relative and absolute imports (so the tests above can fail)."""
    g = graph()
    assert "edgetune.convert" in g["edgetune.pipeline"] or any(t.startswith("edgetune.convert") for t in g["edgetune.pipeline"])
    assert any(t.startswith("edgetune.tui") for t in g["edgetune.cli"])
    assert "edgetune.tui.display" in g["edgetune.tui.screens.run"]  # `from ..display import ...`
