"""nbval's own cell comparison, applied to two executed notebooks without re-executing either.

nbval compares a cell it has just executed with the stored one; here both sides are stored (a run made on
another machine, or any executed copy), so the comparison needs no kernel. The code that decides equality
is nbval's (:meth:`nbval.plugin.IPyNbCell.compare_outputs`, its stream coalescing, its comment markers and
its sanitizer parser): only the object it is bound to is a small stand-in for the pytest item it expects.
"""

from __future__ import annotations

import types
from pathlib import Path

import nbformat
from nbval import plugin


def _comparator(patterns: list[tuple[str, str]]):
    """A stand-in for an nbval cell item: what ``compare_outputs`` reads of ``self`` and ``self.parent``."""
    parent = types.SimpleNamespace(
        sanitize_patterns=dict(patterns),
        # nbval's defaults without --nbdime: metadata, tracebacks, widget ids and images are not compared
        skip_compare=(
            "metadata",
            "traceback",
            "prompt_number",
            "output_type",
            "name",
            "execution_count",
            "application/vnd.jupyter.widget-view+json",
            "image/png",
            "image/jpeg",
        ),
    )
    cell = types.SimpleNamespace(parent=parent, colors=plugin.nocolors, comparison_traceback=[])
    cell.sanitize = types.MethodType(plugin.IPyNbCell.sanitize, cell)
    cell.compare_outputs = types.MethodType(plugin.IPyNbCell.compare_outputs, cell)
    cell.format_output_compare = types.MethodType(_format_difference, cell)
    return cell


def _format_difference(self, key, left, right):
    self.comparison_traceback.append(f"mismatch {key!r}\n--- reference\n{left}\n+++ other\n{right}")


def _checked(cell) -> bool:
    """nbval's rule: a code cell is compared unless a comment marker or tag says otherwise."""
    options = dict(plugin.find_comment_markers(cell.source))
    options.update(dict(plugin.find_metadata_tags(cell.metadata)))
    return options.get("check", True) and not options.get("skip", False)


def differences(reference: Path, other: Path, patterns: list[tuple[str, str]]) -> list[str]:
    """Every code cell of ``other`` whose outputs nbval would report as differing from ``reference``.

    Both notebooks must have the same code cells (the same sources, in order); a differing source is
    reported as such, since nbval would then compare outputs of different code.
    """
    ref_nb = nbformat.read(reference, as_version=4)
    other_nb = nbformat.read(other, as_version=4)
    ref_cells = [c for c in ref_nb.cells if c.cell_type == "code"]
    other_cells = [c for c in other_nb.cells if c.cell_type == "code"]
    if [c.source for c in ref_cells] != [c.source for c in other_cells]:
        return [f"{reference.name}: the code cells' sources differ"]
    found = []
    for index, (ref_cell, other_cell) in enumerate(zip(ref_cells, other_cells)):
        if not _checked(ref_cell):
            continue
        comparator = _comparator(patterns)
        outputs = plugin.coalesce_streams([nbformat.from_dict(o) for o in other_cell.outputs])
        expected = plugin.coalesce_streams([nbformat.from_dict(o) for o in ref_cell.outputs])
        if not comparator.compare_outputs(outputs, expected):
            found.append(f"{reference.name} code cell {index}:\n" + "\n".join(comparator.comparison_traceback))
    return found
