"""Reading and writing the project's files, each written atomically: to a temporary name beside
it, synced, then renamed, so a reader sees the old file or the complete new one, never a
half-written one, and a write that fails (a full disk) leaves no partial file. JSON and CSV
here; checkpoints and figures hand their bytes to `write_bytes`. The cell values JSON and CSV
hold: a missing or non-finite number is `null` in JSON and an empty CSV cell.

Files get the mode a plain `open` would give them (0666 less the umask: readable by the group
sharing a results folder where the umask allows it), not mkstemp's private 0600.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from src.core.errors import UserError

CHUNK_BYTES = 1 << 20  # one os.write per MiB: a failing disk stops a large file part-way


class FileWriteError(UserError, OSError):
    """A file could not be written (no space left, quota, read-only): one line naming it.

    An OSError (with the errno) so that callers catching OSError still do; built from
    (errno, message) like OSError itself, so it survives pickling from a worker process."""

    def __init__(self, code: int, message: str) -> None:
        OSError.__init__(self, code, message)

    def __str__(self) -> str:
        return str(self.strerror)


def write_failed(path: str | Path, err: OSError) -> FileWriteError:
    """The one-line error for `err` raised while writing `path`."""
    cause = {
        errno.ENOSPC: "no space left on device",
        getattr(errno, "EDQUOT", -1): "disk quota exceeded",
        errno.EROFS: "read-only file system",
    }.get(err.errno, (err.strerror or str(err)).lower())
    return FileWriteError(err.errno or errno.EIO, f"{path}: cannot write: {cause}")


def umask() -> int:
    """This process's umask (read from /proc where it is there: setting it to read it back
    would change it for every thread for a moment)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see the module docstring); on any error the
    temporary file is removed, `path` is untouched, and an OSError becomes a one-line
    FileWriteError naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_failed(path, err) from err
    try:
        try:
            os.fchmod(fd, 0o666 & ~umask())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[:CHUNK_BYTES]) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, FileWriteError):
            raise write_failed(path, err) from err
        raise
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text handle whose contents are written to `path` by `write_bytes` once the block
    ends without an error (nothing is written otherwise)."""
    buffer = io.StringIO(newline=newline)
    yield buffer
    write_bytes(path, buffer.getvalue().encode())


def write_json(path: str | Path, payload: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(payload, handle, indent=1, default=float)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def finite_or_none(value: Any) -> float | None:
    """A finite float, or None for a missing, non-numeric or non-finite value (JSON and CSV
    cells)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    """One row per dict, in `columns` (default: the first row's keys); None and non-finite
    numbers as empty cells."""
    if columns is None:
        if not rows:
            raise ValueError(f"{path}: no rows and no columns to write")
        columns = list(rows[0])
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row.get(k)) for k in columns})


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a CSV written by `write_csv`, cells parsed back: empty -> None, True/False,
    int, float, else the text."""
    with Path(path).open(newline="") as handle:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else value


def _parse(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
