"""One claim's verdict, with its test and evidence (`Claim`), the verdict words, and the
formatting every claim shares (src.report.grid_claims, src.report.minima_claims judge them;
src.report.claims judges each both ways)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from src.paper.statistics import (
    line_fit,
)
from src.paper.tables import reason_counts

HOLDS, FAILS, UNDECIDED = True, False, None
EDGE_SENSITIVE = "undecided (edge-sensitive)"
SENSITIVE = "undecided (sensitive)"  # decided otherwise by a rounding-only rerun (item 7)
# The two readings of every claim (issue 23 item 2), by the key claims.json stores them under.
STRICT, WITH_EDGE = "converged_only", "with_edge_runs"


@dataclass
class Claim:
    """One claim with its test. `holds` is True / False / None (undecided)."""

    name: str
    statement: str  # what the paper says (Sec. 6)
    holds: bool | None
    evidence: str  # the numbers behind the verdict, in words
    statistic: str = ""  # what is computed, from which runs
    threshold: str = ""  # the decision rule
    threshold_source: str = ""  # the paper's figure/table/theorem, or "fixed in advance: why"
    uncertainty: dict[str, Any] = field(default_factory=dict)  # per-seed values, intervals, p
    reason: str | None = None  # why undecided (None when decided)
    numbers: dict[str, Any] = field(default_factory=dict)
    # The verdict of each reading (`judged_both_ways`): edge-of-stability runs not counted as
    # minima, and counted. Empty for a claim judged once.
    readings: dict[str, dict[str, Any]] = field(default_factory=dict)
    edge_sensitive: bool = False  # the two readings disagree: undecided by design
    # {"this_run": verdict, "variant": verdict} when a rounding-only rerun was compared
    stability: dict[str, Any] = field(default_factory=dict)
    sensitive: bool = False  # the rerun's verdict differs: undecided by design

    @property
    def verdict(self) -> str:
        if self.sensitive:
            return SENSITIVE
        if self.edge_sensitive:
            return EDGE_SENSITIVE
        return verdict_word(self.holds)

    def to_dict(self) -> dict[str, Any]:
        return plain({**asdict(self), "verdict": self.verdict})


def plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars to Python numbers, non-finite floats to None, tuples and
    dict keys made plain (claims.json stays machine-readable)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def statuses_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """'3 converged, 2 plateau (stationary_above_affine), ...': every run accounted for."""
    parts = []
    for status, by_reason in reason_counts(list(rows)).items():
        for reason, n in by_reason.items():
            parts.append(f"{n} {status}" + ("" if reason == "n/a" else f" ({reason})"))
    return ", ".join(parts) or "no runs"


def slope_interval(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """The slope of `line_fit` with its t-interval, as a claim's uncertainty reports it."""
    fit = line_fit(x, y)
    return {k: fit[k] for k in ("slope", "intercept", "ci", "r2", "n")}


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float | np.floating):
        return f"{float(value):.3g}"
    return str(value)


def fmt_values(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def fmt_ci(ci: Sequence[float] | None) -> str:
    return "n/a" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def verdict_word(holds: bool | None) -> str:
    return {True: "holds", False: "does not hold", None: "undecided"}[holds]
