"""Everything the report reads, as one value: `load_report_inputs` reads the saved results of
the pipeline's stages (results/<stage>/...) once; the claims and the rendering take the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from src.core.files import read_csv, read_json
from src.core.status import CONVERGED, EDGE_OF_STABILITY
from src.paper.boundary import boundary_counting_edge, probe_rows
from src.paper.tables import table_s1_from_entries

# The figures of the report, in order: (caption, path under figures/).
FIGURES = (
    ("Fig. 4a: sharpness over depth and step size, identity init", "fig4a_sharpness_identity.png"),
    (
        "Fig. 4d: the stability boundary lr_max(m) by bisection, and the flattest minimum vs "
        "2/lr_max",
        "fig4d_lr_max_boundary.png",
    ),
    ("Fig. 4b: flattest minimum vs depth, identity init", "fig4b_flattest_vs_depth.png"),
    ("Sharpness vs the stability limit 2/η, identity init", "fig4c_stability_identity.png"),
    ("Fig. 5a: sharpness over depth and step size, He init", "fig5a_sharpness_he.png"),
    ("Fig. 5b: training curves, identity vs He init", "fig5b_training_curves.png"),
    ("Fig. 6: gain profiles, flat (SGD), sharp (Adam) and SAM", "fig6_gains.png"),
    (
        "Fig. 7: loss cross-sections between and around flat and sharp minima",
        "fig7_cross_sections.png",
    ),
    (
        "Fig. 7 for SAM: cross-sections between SAM's and Adam's minima",
        "fig7_cross_sections_sam.png",
    ),
    (
        "Hessian eigenvalue densities (stochastic Lanczos quadrature) of SGD's, Adam's and SAM's "
        "minima, λ_max marked",
        "fig_hessian_density.png",
    ),
    ("Linear nets: measured sharpness vs Thm 1, and η·λ_max", "linear_check.png"),
    ("Fig. 1 (theory): two-layer scalar valley and GD", "theory/fig1_scalar_valley.png"),
    ("Fig. 2 (theory): interpolation between scalar minima", "theory/fig2_interpolation.png"),
    ("Fig. 3 (theory): gains of arbitrary vs flattest linear minima", "theory/fig3_gains.png"),
)


@dataclass
class ReportInputs:
    """The saved results a report is made of. Optional parts are None (or empty) when their
    stage has not written them (e.g. the bisection in an old checkout)."""

    profile: str = "cpu"
    notes: str = ""
    identity: list[dict] = field(default_factory=list)  # grid_identity/grid.csv rows
    he: list[dict] = field(default_factory=list)  # grid_he/grid.csv rows
    table_s1: dict[str, Any] = field(default_factory=dict)  # flat_vs_sharp/table_s1.json
    gains: dict[str, list[dict]] = field(default_factory=dict)  # flat_vs_sharp/gains.json
    pairs: list[dict] = field(default_factory=list)  # (flat, sharp) pairs of minima
    other_pairs: list[dict] = field(default_factory=list)  # further methods' pairs
    flat_vs_sharp: dict[str, Any] = field(default_factory=dict)  # flat_vs_sharp/summary.json
    gains_by_radius: dict[str, Any] | None = None
    spectra: dict[str, Any] | None = None
    boundary: dict[str, Any] | None = None  # boundary/boundary.json
    # The bisection's probes (boundary.json's per-depth `probes`): runs of the identity-init
    # grid at step sizes it lacks, trained with its settings; claims 1 and 3 join its minima.
    boundary_probes: list[dict] = field(default_factory=list)
    grid_summaries: dict[str, dict] = field(default_factory=dict)
    linear_check: dict[str, Any] | None = None  # linear_check/summary.json
    theory: dict[str, Any] | None = None  # theory/metrics.json
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, relative path)
    # The verdicts of a rounding-only variant of the pipeline (VARIANT_FILE), if any
    variant: dict[str, Any] | None = None

    @property
    def methods(self) -> list[str]:
        """Table S1's methods in params.yaml order: the flat one, the sharp one, then any
        further one (sgd and adam when the table has fewer than two)."""
        methods = [m for m in self.table_s1 if isinstance(self.table_s1[m], Mapping)]
        return methods if len(methods) >= 2 else ["sgd", "adam"]

    @property
    def skipped_pairs(self) -> list[dict]:
        return list(self.flat_vs_sharp.get("pairs_skipped", []))

    def others_skipped(self, method: str) -> list[dict]:
        return list(
            (self.flat_vs_sharp.get("others", {}).get(method) or {}).get("pairs_skipped", [])
        )

    @property
    def edge_runs(self) -> int:
        """How many runs of the grids and Table S1 ended at the edge of stability."""
        rows = [*self.identity, *self.he, *_table_entries(self.table_s1)]
        return sum(r.get("status") == EDGE_OF_STABILITY for r in rows)

    def counting_edge_as_minima(self) -> ReportInputs:
        """The same results read with every edge-of-stability run counted as a minimum
        (issue 23): its status becomes `converged` wherever a claim looks (grid rows and the
        bisection's probes, Table S1 rebuilt from its run entries, gain profiles, gains by
        radius) and the boundary takes its with-edge reading (`boundary_counting_edge`), so each claim can be
        judged a second time, unchanged. The pairs need nothing: the flat_vs_sharp stage
        measures the pairs of edge runs too, and the claims keep a pair when Table S1 counts
        both its runs."""
        by_radius = self.gains_by_radius
        if by_radius is not None:
            by_radius = {
                **by_radius,
                "runs": {m: _as_minima(rows) for m, rows in by_radius.get("runs", {}).items()},
            }
        table = self.table_s1
        if any("runs" in row for row in table.values() if isinstance(row, Mapping)):
            table = table_s1_from_entries(
                {
                    m: _as_minima(row.get("runs", []))
                    for m, row in table.items()
                    if isinstance(row, Mapping)
                }
            )
        return replace(
            self,
            identity=_as_minima(self.identity),
            he=_as_minima(self.he),
            boundary=None if self.boundary is None else boundary_counting_edge(self.boundary),
            boundary_probes=_as_minima(self.boundary_probes),
            table_s1=table,
            gains={m: _as_minima(profiles) for m, profiles in self.gains.items()},
            gains_by_radius=by_radius,
        )


def _as_minima(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Copies of `rows` with edge-of-stability runs relabelled `converged`."""
    return [
        {**r, "status": CONVERGED} if r.get("status") == EDGE_OF_STABILITY else dict(r)
        for r in rows
    ]


def _table_entries(table: Mapping[str, Any]) -> list[dict]:
    return [e for row in table.values() if isinstance(row, Mapping) for e in row.get("runs", [])]


# Written by src.experiments.verdict_stability (pipelines/verdict_stability.py), committed.
VARIANT_FILE = Path("stability") / "rounding_variant.json"


def _optional(path: Path) -> Any:
    return read_json(path) if path.exists() else None


def _pairs(path: Path) -> list[dict]:
    """The pairs of minima a CSV holds (none when it says `unavailable`)."""
    rows = read_csv(path) if path.exists() else []
    return [p for p in rows if "flat_looks_sharper_on_line" in p]


def load_report_inputs(
    results: Path, profile: str, notes: str = "", figures_dir: str = "../figures"
) -> ReportInputs:
    """Read the pipeline's saved results under `results` (results/<stage>/...); figures are
    referenced under `figures_dir`, relative to the report."""
    flat_vs_sharp = results / "flat_vs_sharp"
    boundary = _optional(results / "boundary" / "boundary.json")
    return ReportInputs(
        profile=profile,
        notes=notes,
        identity=read_csv(results / "grid_identity" / "grid.csv"),
        he=read_csv(results / "grid_he" / "grid.csv"),
        table_s1=read_json(flat_vs_sharp / "table_s1.json"),
        gains=read_json(flat_vs_sharp / "gains.json"),
        pairs=_pairs(flat_vs_sharp / "pairs.csv"),
        other_pairs=_pairs(flat_vs_sharp / "pairs_others.csv"),
        flat_vs_sharp=_optional(flat_vs_sharp / "summary.json") or {},
        gains_by_radius=_optional(flat_vs_sharp / "gains_by_radius.json"),
        spectra=_optional(flat_vs_sharp / "spectra.json"),
        boundary=boundary,
        boundary_probes=probe_rows(boundary),
        grid_summaries={
            name: read_json(results / name / "summary.json")
            for name in ("grid_identity", "grid_he")
        },
        linear_check=read_json(results / "linear_check" / "summary.json"),
        theory=_optional(results / "theory" / "metrics.json"),
        figures=[(caption, f"{figures_dir}/{path}") for caption, path in FIGURES],
        variant=_optional(results.parent / VARIANT_FILE),
    )
