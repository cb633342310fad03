"""Reading and writing the project's JSON and CSV files, each written atomically (a reader sees
the old file or the complete new one, never a half-written one), and the cell values they hold
(a missing or non-finite number is `null` in JSON and an empty CSV cell)."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text handle on a temporary file beside `path`, renamed to `path` once written and
    synced; on any error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
