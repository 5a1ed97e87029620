"""Source notebooks stay output-free: the stripping rule, a git clean filter, and the check.

``notebooks/*.ipynb`` are committed without outputs (executed copies live in run directories).
JupyterLab's "Run All" saves outputs into them; the git clean filter installed by ``make install``
(``python -m helpers.run.nbclean install``; ``.gitattributes`` names the filter) strips outputs,
execution counts and editor metadata on their way into git, so such a notebook is never committed
with outputs and ``git diff`` shows nothing. ``git status`` would still list it (the saved file's size
differs from the index's, and git takes a size change for a change without running the filter): the
Jupyter save hook refreshes the notebook's index entry when its cleaned content is unchanged
(:func:`helpers.run.hand_run.refresh_git_index`); a file saved by another editor needs a `git add` of it.
``python -m helpers.run.nbclean check`` lists committed notebooks that hold outputs (a test runs it).

    python -m helpers.run.nbclean clean < NB.ipynb > STRIPPED.ipynb   # the filter itself
    python -m helpers.run.nbclean install                             # git config of this checkout
    python -m helpers.run.nbclean check                               # exit 1 naming offenders
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.run.project import project_root

FILTER = "calib-nbstrip"
KEPT_CELL_METADATA = ("tags",)  # the parameters tag (papermill) and nbval markers live here


def strip(nb: dict) -> dict:
    """Outputs, execution counts, editor and widget metadata removed (cell ids and tags kept), in place.

    Works on the notebook's plain JSON (git runs the filter once per notebook whose stat info it cannot
    trust, e.g. in a fresh clone, so it imports nothing heavier than :mod:`json`).
    """
    for cell in nb["cells"]:
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEPT_CELL_METADATA}
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(True)  # nbformat's on-disk form
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    kept = {}
    if "kernelspec" in nb["metadata"]:
        kept["kernelspec"] = nb["metadata"]["kernelspec"]
    if "language_info" in nb["metadata"]:
        kept["language_info"] = {"name": nb["metadata"]["language_info"].get("name", "python")}
    nb["metadata"] = kept
    return nb


def clean_text(text: str) -> str:
    """A notebook file's text stripped, serialized exactly as nbformat writes it (then a final newline)."""
    return (
        json.dumps(strip(json.loads(text)), indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False) + "\n"
    )


def problems(nb: dict, name: str) -> list[str]:
    """What a committed source notebook must not hold, one line each."""
    out = []
    for index, cell in enumerate(nb["cells"]):
        where = f"{name} cell {index} (id {cell.get('id')})"
        if cell["cell_type"] == "code" and cell.get("outputs"):
            out.append(f"{where} has {len(cell['outputs'])} output(s)")
        if cell["cell_type"] == "code" and cell.get("execution_count") is not None:
            out.append(f"{where} has execution_count {cell['execution_count']}")
    return out


def committed_text(path: Path, root: Path) -> str:
    """The notebook as it is staged in git (what a commit would hold); the file itself outside git."""
    rel = path.relative_to(root).as_posix()
    proc = subprocess.run(["git", "show", f":{rel}"], cwd=root, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else path.read_text()


def check(root: Path | None = None) -> list[str]:
    root = root or project_root()
    found = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        found += problems(json.loads(committed_text(path, root)), f"notebooks/{path.name}")
    return found


def clean_stream(src=None, dst=None) -> None:
    """The git clean filter: a notebook on stdin, the stripped notebook on stdout."""
    src, dst = src or sys.stdin, dst or sys.stdout
    dst.write(clean_text(src.read()))


def install(root: Path | None = None) -> str:
    """Configure the clean filter in this checkout's git config (``.gitattributes`` is committed)."""
    root = root or project_root()
    command = f"{sys.executable} -m helpers.run.nbclean clean"
    subprocess.run(["git", "config", f"filter.{FILTER}.clean", command], cwd=root, check=True)
    subprocess.run(["git", "config", f"filter.{FILTER}.required", "false"], cwd=root, check=True)
    return command


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["clean"]:
        clean_stream()
        return 0
    if argv == ["install"]:
        print(f"git filter {FILTER}: {install()}")
        return 0
    if argv == ["check"]:
        found = check()
        for line in found:
            print(line)
        print(
            f"{len(found)} problem(s): strip outputs with `python -m helpers.run.nbclean install` and re-add"
            if found
            else "source notebooks are output-free"
        )
        return 1 if found else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
