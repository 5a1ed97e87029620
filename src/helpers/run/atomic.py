"""Atomic, deterministic file writing: every file the project writes goes through here.

A write goes to a temporary file in the destination's directory, is flushed and fsynced, and
then replaces the destination with ``os.replace`` -- a reader sees the old file or the new one,
never half of one, and a crash leaves at most a ``.tmp-*`` file that nothing reads.

The writers are also *deterministic*: the same content gives the same bytes (sorted JSON keys,
fixed zip timestamps in ``.npz``, no date metadata in PNGs), which is what lets two runs of the
same configuration produce byte-identical results files.

:func:`read_json` is the one reader of the JSON files: a missing or broken file is an error that names
the file and says what to do about it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _default_mode() -> int:
    """What open() would give a new file: 0o666 less the umask (mkstemp's files are 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse O_RDONLY on directories
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and move it into place.

    For writers that insist on a file name (ONNX, papermill, torch.onnx.export). On any
    exception the temporary file is removed and the destination is left untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{dest.name}.", suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, _default_mode())
        os.replace(tmp_path, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def disk_full(exc: OSError, where: str | os.PathLike | None) -> str:
    """The message for a full disk (or quota) hit while writing under ``where``; any other OSError is re-raised."""
    if exc.errno not in DISK_FULL:
        raise exc
    return disk_full_message(f"{exc.strerror}{': ' + str(exc.filename) if exc.filename else ''}", where)


def disk_full_message(detail: str, where: str | os.PathLike | None) -> str:
    """``where``: the run the writer worked on (named in the command that continues it); None when there is
    no run to continue (nothing was created)."""
    if where is None:
        return (
            f"no space left on device ({detail}); nothing half-written was kept: free some space, then run "
            "the command again"
        )
    return (
        f"no space left on device while writing under {where} ({detail}); nothing half-written was kept: "
        f"free some space, then `calib run --resume {where}` continues from the last complete phase"
    )


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays and Paths to plain JSON types (recursively)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps_json(obj: Any) -> str:
    """Canonical JSON text: sorted keys, 2-space indent, trailing newline, NaN refused."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, dumps_json(obj))


class InvalidJSON(ValueError):
    """A file that is not valid JSON (or not UTF-8 text); ``reason`` is the parser's own words."""

    def __init__(self, path: Path, reason: str, fix: str):
        super().__init__(f"{path} is not valid JSON ({reason}); {fix}")
        self.path, self.reason = path, reason


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON value in ``path`` (UTF-8 text, as :func:`write_json` writes it).

    ``fix`` says what to do when the file cannot be read (e.g. ``"re-run 02_train"``): a missing file is a
    ``FileNotFoundError`` (``"<path> is missing: <fix>"``), one that is not valid JSON an :class:`InvalidJSON`
    (a ``ValueError``: ``"<path> is not valid JSON (<reason>); <fix>"``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: {fix}") from None
    except UnicodeDecodeError as exc:
        raise InvalidJSON(path, str(exc), fix) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJSON(path, str(exc), fix) from None


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """Bytes of an ``.npz`` archive with fixed timestamps (np.savez stamps the wall clock)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            arr = np.asanyarray(arrays[name])
            if arr.dtype == object:
                raise TypeError(f"array {name!r} has dtype=object; refusing to pickle it")
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Deterministic, atomic ``np.savez_compressed``. Load with ``np.load(path)`` (no pickle)."""
    return write_bytes(path, npz_bytes(arrays))


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG without date/software metadata, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return write_bytes(path, buf.getvalue())


def save_with(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Run ``writer(tmp_path)`` for a library that writes files itself, then move into place."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` into a buffer, then an atomic write (load with ``weights_only=True``)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(path, buf.getvalue())
