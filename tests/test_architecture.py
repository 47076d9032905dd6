"""The shape of the code: a layered core with no import cycle, built-in plugins that use the
public API only, and a generated API reference that is current."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tunery

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core" / "tunery"
#: The contract plugins see: it imports nothing above it.
CONTRACT = {"tunery.errors", "tunery.options", "tunery.members", "tunery.hookspecs", "tunery.context",
            "tunery.registry"}


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Modules a file imports at run time (module level and inside functions; not the imports
    under ``if TYPE_CHECKING:``), as absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                found.update(f"{base}.{a.name}" for a in child.names)
                found.add(base)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def core_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in CORE.rglob("*.py")}
    return {name: {m for m in imported(path) if m in files and m != name} - {"tunery"}
            for name, path in files.items()}


def test_core_has_no_import_cycle():
    graph = core_graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)


def test_the_contract_imports_nothing_above_it():
    graph = core_graph()
    leaves = {name for name, deps in graph.items() if not deps}  # helpers that import no tunery module
    for name in CONTRACT:
        above = graph[name] - CONTRACT - leaves
        assert not above, f"{name} (the contract) imports {sorted(above)}"


def test_every_core_module_is_placed_in_a_layer_of_the_architecture_page():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for path in CORE.glob("*.py"):
        if path.stem != "__init__":
            assert f"`{path.stem}`" in page, f"docs/architecture.md does not place core/tunery/{path.name} in a layer"


def test_builtin_plugins_use_only_the_public_api():
    public = set(tunery.__all__)
    offences = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "tunery":
                    offences += [f"{path.relative_to(ROOT)}: tunery.{a.name}" for a in node.names if a.name not in public]
                elif node.module.startswith("tunery.") and not node.module.startswith("tunery.testing"):
                    offences.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                offences += [f"{path.relative_to(ROOT)}: import {a.name}" for a in node.names
                             if a.name.startswith("tunery.") and not a.name.startswith("tunery.testing")]
    assert not offences, "built-in plugins reach past the public API:\n" + "\n".join(offences)


def test_every_public_name_resolves_and_is_documented():
    from tunery.docs import api_markdown

    for name in tunery.__all__:
        assert getattr(tunery, name) is not None, name
    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == api_markdown(), "docs/api.md is stale: run `python -m tunery.docs docs`"


def test_a_bad_training_setting_is_refused_before_anything_heavy_loads(tmp_path):
    """A misspelt training.extra key or a missing DeepSpeed file is refused at once: before the
    run folder exists and before transformers (seconds to import) is even imported."""
    out = tmp_path / "run"
    for extra, message in (("{lerning_rate: 0.1}", "'training.extra.lerning_rate' is not a transformers."
                                                   "TrainingArguments field (did you mean 'learning_rate'?)"),
                           ("{fsdp_config: missing.json}", "no FSDP config file")):
        code = ("import sys\nfrom tunery import Engine, ConfigError\n"
                f"cfg = {{'model': 'x', 'output_dir': {str(out)!r}, 'method': 'lora', 'format': 'alpaca',"
                f" 'data': {{'train': ['x.json']}}}}\n"
                "try:\n"
                f"    Engine().train(cfg, overrides=['training.extra={extra}'])\n"
                "except ConfigError as e:\n    print('ERROR', e)\n"
                "print('HEAVY', [m for m in ('torch', 'transformers', 'peft') if m in sys.modules])\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
        assert message in result.stdout, result.stdout + result.stderr
        assert "HEAVY []" in result.stdout
        assert not out.exists()
