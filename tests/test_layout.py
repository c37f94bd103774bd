"""The layout rule, read from the source with ast:
- edgetune core -> edgetune.convert -> gguf, never back; edgetune.tui -> core, never back (the CLI entry
  point alone opens the TUI); errors, events and fsutil are the foundation every layer may use and which
  uses none;
- inside the core, the folders follow the job: inputs/ uses neither steps/, measure/ nor use/;
  measure/ does not use steps/ or use/;
- the TUI, the CLI and the scripts reach the core only through the door, `from edgetune import name`
  (edgetune/__init__.py), and the core never goes through the door;
- no import cycle among the project's modules, lazy imports included."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"edgetune": ROOT / "edgetune", "edgetune.convert": ROOT / "convert", "edgetune.tui": ROOT / "tui",
            "scripts": ROOT / "scripts"}
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
    if module.startswith("scripts"):
        return "scripts"
    return "core"


ALLOWED = {("core", "convert"), ("tui", "core"), ("tui", "convert"), ("scripts", "core"), ("scripts", "convert"),
           ("core", "foundation"), ("convert", "foundation"), ("tui", "foundation"), ("scripts", "foundation")}
NEVER_USES = {"edgetune.inputs": ("edgetune.steps", "edgetune.measure", "edgetune.use"),
              "edgetune.measure": ("edgetune.steps", "edgetune.use")}
OUTSIDE = ("edgetune.tui", "scripts", "edgetune.cli")  # reach the core through the door only


def test_imports_follow_the_layout_rule():
    wrong = [f"{a} -> {b}" for a, targets in graph().items() for b in targets
             if layer(a) != layer(b) and (layer(a), layer(b)) not in ALLOWED and a not in ENTRY_POINTS]
    assert wrong == []


def test_core_folders_follow_the_job():
    wrong = [f"{a} -> {b}" for a, targets in graph().items() for b in targets
             for folder, banned in NEVER_USES.items() if a.startswith(folder + ".") and b.startswith(banned)]
    assert wrong == []


def core_imports(path: Path) -> list[str]:
    """`from edgetune... import` and `import edgetune...` statements naming a core module, as 'line: module'
    (the package's `__version__` is metadata, not the door)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 and [a.name for a in node.names] != ["__version__"]
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        found += [f"{node.lineno}: {n}" for n in names
                  if n.startswith("edgetune") and not n.startswith(("edgetune.tui", "edgetune.convert"))]
    return found


def test_outside_reaches_the_core_through_the_door():
    wrong = [f"{name} {line}" for name, path in modules().items() if name.startswith(OUTSIDE)
             for line in core_imports(path) if not line.endswith(": edgetune")]
    assert wrong == []


def test_the_core_never_goes_through_the_door():
    wrong = [f"{name} {line}" for name, path in modules().items()
             if layer(name) in ("core", "foundation") and name != "edgetune" and not name.startswith(OUTSIDE)
             for line in core_imports(path) if line.endswith(": edgetune")]
    assert wrong == []


def test_every_name_in_the_door_resolves():
    import edgetune
    for name in edgetune.__all__:
        assert getattr(edgetune, name) is not None, name
    assert edgetune.train.__name__ == "edgetune.steps.train.train"
    assert edgetune.RunFolder is edgetune.runs.RunFolder


def test_the_door_imports_nothing_heavy():
    import subprocess
    import sys
    heavy = "{'torch', 'transformers', 'numpy', 'gguf', 'llama_cpp'}"
    for imported, allowed in (("edgetune", "set()"), ("edgetune.cli", "{'numpy', 'gguf'}")):
        code = f"import sys, {imported}; print(sorted(({heavy} - {allowed}) & set(sys.modules)))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]", imported


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
    assert "edgetune.measure.metrics" in g["edgetune.steps.smoke"]  # `from edgetune.measure import ... metrics`
    assert core_imports(ROOT / "tui" / "app.py")  # it sees the door

