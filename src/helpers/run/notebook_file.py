"""A notebook's code cells read straight from its ``.ipynb`` JSON (nbformat 4).

The run layer needs only cell sources and tags (for the code hash and the parameters cell);
reading the JSON directly keeps ``nbformat`` -> ``jsonschema`` (about 0.8 s) out of every
kernel's first import. The sources are exactly what ``nbformat.read(...).cells[i].source`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.run.atomic import InvalidJSON, read_json


@dataclass(frozen=True)
class CodeCell:
    source: str
    tags: tuple[str, ...]


def code_cells(path: Path) -> list[CodeCell]:
    """The notebook's code cells, in order; a file that is not a v4 notebook is a ValueError naming it."""
    try:
        cells = read_json(path, "the phases' notebooks live in notebooks/ (restore it from git)")["cells"]
    except InvalidJSON as exc:
        raise ValueError(f"{path} is not a Jupyter notebook (nbformat 4): {exc.reason}") from None
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a Jupyter notebook (nbformat 4): {exc}") from None
    out = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        out.append(
            CodeCell(
                "".join(source) if isinstance(source, list) else source, tuple(cell.get("metadata", {}).get("tags", ()))
            )
        )
    return out
