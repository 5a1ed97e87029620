"""The package's layering (see ``helpers/__init__.py``): no import cycle, no layer importing upward.

Every ``import helpers...`` / ``from helpers... import`` in every module counts, lazy imports inside
functions included, so a layer cannot reach upward by deferring the import.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import helpers

PACKAGE = Path(helpers.__file__).resolve().parent
# Lowest first (helpers.LAYERS, the one statement of the order). A module may import its own unit and any unit
# of an earlier rank, nothing else.
LAYERS = helpers.LAYERS
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """``helpers.quantize.ort`` -> ``quantize``; ``helpers.bundle`` -> ``bundle``."""
    return module.split(".")[1]


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("helpers.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "helpers":
                out |= {f"helpers.{a.name}" for a in node.names}
            elif node.module.startswith("helpers."):
                out.add(node.module)
    return out


@functools.cache
def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m in import_graph() if m != "helpers"}
    assert units <= set(RANK), f"add {sorted(units - set(RANK))} to helpers.LAYERS (src/helpers/__init__.py)"


def test_no_layer_imports_upward_or_sideways():
    bad = []
    for module, imports in import_graph().items():
        if module == "helpers":
            continue
        for target in imports:
            src, dst = unit_of(module), unit_of(target)
            if src != dst and RANK[dst] >= RANK[src]:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_run_layer_imports_nothing_of_the_domain():
    graph = import_graph()
    domain = {
        m: sorted(t for t in imports if unit_of(t) != "run")
        for m, imports in graph.items()
        if m == "helpers.run" or m.startswith("helpers.run.")
    }
    assert not any(domain.values()), {m: t for m, t in domain.items() if t}


def test_no_import_cycle():
    full = import_graph()
    graph = {m: {t for t in imports if t in full} for m, imports in full.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(
                    "import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt])
                    if nxt in path
                    else f"import cycle through {nxt}"
                )
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_layer_checks_can_fail(tmp_path):
    """The checks above see a lazy upward import (the run layer reaching into models)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from helpers.models import training\n")
    imports = imported_modules(probe)
    assert "helpers.models" in imports and RANK[unit_of("helpers.models")] > RANK["run"]


def test_a_kernel_first_import_is_light():
    """``import helpers.run.phase`` (every phase kernel's first line) stays far below ``import torch``:
    it must not pull torch, nbformat/jsonschema or pandas."""
    code = (
        "import sys, helpers.run.phase; heavy = [m for m in ('torch', 'nbformat', 'jsonschema', 'pandas', "
        "'matplotlib') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import helpers.run.phase pulls in {out}"
