"""Notebooks run by hand: their upstream phases reused from verified runs, and the executed copy JupyterLab saves.

A notebook opened with ``run_dir`` empty works in a scratch run whose upstream phases it finds or creates
(:func:`helpers.run.runner.prepare_scratch_run`). An upstream phase that a verified run of the runs root already
holds with the same input key -- a ``calib run`` with the same parameters, say -- is not trained again but
materialized from that run (:func:`reuse_upstream`, the cross-run cache of ``calib run --reuse``); the notebook's
first output line says which phases came from which run (:func:`scratch_summary`).

:func:`remember` notes which scratch run a notebook works in, per phase, in ``<runs root>/.hand-run/<phase>``. JupyterLab saves the
notebook, outputs and all, over the source file in ``notebooks/`` (the git filter of
:mod:`helpers.run.nbclean` keeps those outputs out of git); the Jupyter server hook
:func:`keep_executed_copy` then copies the saved file to ``<scratch run>/notebooks/<phase>.ipynb``,
beside the results it produced, as ``calib run`` keeps its executed notebooks. The copy is what was
last saved; it is not part of the phase's manifest (the results are, whichever way they were made).

Every save of a ``notebooks/*.ipynb`` also refreshes git's index entry for it (:func:`refresh_git_index`):
the clean filter makes the saved file and its committed form differ in size, and git then reports the
notebook as modified (``git status``) although ``git diff`` is empty, until the index records the new
size. The refresh re-adds the file only when its cleaned content *is* the index's, so a real edit of the
notebook's code stays unstaged and shows as modified.

``make install`` enables the hook for this environment's Jupyter server::

    python -m helpers.run.hand_run install   # sets it in <sys.prefix>/etc/jupyter/jupyter_server_config.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.run import cache, manifest
from helpers.run.atomic import read_json, write_text
from helpers.run.graph import PhaseSpec
from helpers.run.project import project_root, runs_root
from helpers.run.resume import why_rerun

POINTERS = ".hand-run"  # under the runs root: one file per phase, holding its scratch run's path
HOOK = "helpers.run.hand_run.keep_executed_copy"  # an import string: the server imports it


def remember(phase_id: str, run_dir: Path) -> None:
    """Note that ``phase_id``'s notebook, run by hand, works in the scratch run ``run_dir``."""
    write_text(runs_root() / POINTERS / phase_id, str(run_dir.resolve()))


def reuse_upstream(run_dir: Path, specs: list[PhaseSpec], resolved: dict) -> dict[str, str | None]:
    """Before a hand run computes anything: each phase of ``specs`` (upstream phases, in graph order) that its
    scratch run ``run_dir`` lacks and a verified run of the same runs root holds with the same input key is
    materialized from that run, as ``calib run --reuse`` does (``cache.reuse``). Returns phase id -> the run it
    was reused from, or None for a phase the scratch run already held up to date; phases left out are computed."""
    found: dict[str, str | None] = {}
    for spec in specs:
        try:
            parts = manifest.key_parts(
                spec.id, resolved[spec.id], spec.notebook, list(spec.upstream), run_dir, spec.soft_upstream
            )
        except FileNotFoundError:
            continue  # an upstream phase is computed first; the runner's cache looks this one up again then
        if why_rerun(run_dir, spec.id, parts, []) is None:
            found[spec.id] = None
        elif source := cache.reuse(run_dir, spec.id, manifest.key_of(parts), log=lambda _: None):
            found[spec.id] = source
    return found


def scratch_summary(phase_id: str, run_dir: Path, specs: list[PhaseSpec], found: dict[str, str | None]) -> str:
    """A hand run's first output line: its scratch run, which upstream phases were reused from which run, which
    it already held, which are computed now."""
    groups: dict[str, list[str]] = {}
    for spec in specs:
        where = found.get(spec.id, "")
        label = f"reused from run {where}" if where else "up to date there" if spec.id in found else "computed now"
        groups.setdefault(label, []).append(spec.id)
    parts = [f"{label}: {', '.join(ids)}" for label, ids in groups.items()]
    return f"{phase_id}: scratch run {run_dir}" + "".join(f"; {part}" for part in parts)


def scratch_run_of(phase_id: str) -> Path | None:
    """The scratch run ``phase_id``'s notebook last worked in by hand, if it still exists."""
    pointer = runs_root() / POINTERS / phase_id
    if not pointer.is_file():
        return None
    run_dir = Path(pointer.read_text())
    return run_dir if (run_dir / "notebooks").is_dir() else None


def keep_executed_copy(model: dict, os_path: str, contents_manager=None, **_) -> Path | None:
    """Jupyter server ``post_save_hook``: a saved ``notebooks/<phase>.ipynb`` is copied into its scratch run.

    Saves of other files, and of notebooks not run by hand since their scratch run was removed, copy
    nothing. Returns the copy's path (or None).
    """
    saved = Path(os_path).resolve()
    if model.get("type") != "notebook" or saved.parent != (project_root() / "notebooks").resolve():
        return None
    refresh_git_index(saved)
    run_dir = scratch_run_of(saved.stem)
    if run_dir is None:
        return None
    copy = run_dir / "notebooks" / saved.name
    write_text(copy, saved.read_text())
    if contents_manager is not None:
        contents_manager.log.info("calib-lab: executed copy of %s kept in %s", saved.name, copy)
    return copy


def refresh_git_index(path: Path) -> bool:
    """Record a saved notebook's new size in git's index when its cleaned content is what the index holds
    (then ``git status`` no longer lists it); returns whether it did. Outside a git checkout, or with the clean
    filter not installed, or when the notebook's code really changed, it changes nothing."""
    root, rel = project_root(), path.resolve().relative_to(project_root().resolve()).as_posix()

    def git(*args: str) -> str | None:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else None

    staged = git("ls-files", "--stage", "--", rel)
    cleaned = git("hash-object", f"--path={rel}", "--", rel)
    if not staged or not cleaned or staged.split()[1] != cleaned:
        return False
    return git("add", "--", rel) is not None


def config_path(prefix: Path = Path(sys.prefix)) -> Path:
    """The environment's Jupyter server config (its ``.d`` folder holds only extension switches)."""
    return prefix / "etc" / "jupyter" / "jupyter_server_config.json"


def install(prefix: Path = Path(sys.prefix)) -> Path:
    """Enable :func:`keep_executed_copy` for the Jupyter server of the environment at ``prefix`` (other settings
    in its config are kept)."""
    path = config_path(prefix)
    config = read_json(path, "fix its JSON (or remove it), then install again") if path.is_file() else {}
    config.setdefault("FileContentsManager", {})["post_save_hook"] = HOOK
    write_text(path, json.dumps(config, indent=2) + "\n")
    return path


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m helpers.run.hand_run install", file=sys.stderr)
        return 2
    print(f"JupyterLab saves of notebooks/*.ipynb are copied into their scratch runs ({install()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
