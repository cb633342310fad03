"""Figures 4-7 of the paper (and a stability view), drawn from saved results only.

Every function takes already-loaded numbers (rows of a grid table, dicts, arrays from .npz) and
writes PNG + PDF; nothing here trains or measures. The grid figures (4a, 4b, 4c, 5a) are built
by `*_figure` functions that return the matplotlib Figure, so tests can read what is drawn;
the functions named after the figure save it.

Grid figures never drop a run silently: only `converged` runs are minima (they alone are
coloured by lambda_max), every other run is drawn with the mark of its status, and counts are
shown. Rows from older results may lack `status`, `reason` or `loss_vs_affine`; missing values
are read as unknown.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from src.core.files import finite_or_none, read_csv
from src.core.plots import BLUE, GREEN, GREY, ORANGE, RED, draw_gain_profile, plt, save
from src.core.status import (
    BUDGET_EXHAUSTED,
    CONVERGED,
    DIVERGED,
    EDGE_OF_STABILITY,
    PLATEAU,
    UNSTABLE,
    UNVERIFIED,
)
from src.paper.statistics import line_fit
from src.paper.tables import flattest_per_depth

FORMATS = ("png", "pdf")

UNKNOWN = "unknown"  # a row without a status (should not happen, but must not crash a figure)

# Marker and colour per status (src.core.status.STATUSES). The marker shape carries the
# meaning on its own (figures may be printed in grey): converged runs are coloured tiles.
STATUS_STYLES: dict[str, tuple[str, str]] = {
    CONVERGED: ("s", BLUE),
    PLATEAU: ("o", GREY),  # stopped above the affine denoiser's loss
    BUDGET_EXHAUSTED: (">", ORANGE),  # still improving when the epochs ran out
    UNSTABLE: ("^", RED),  # eta * lambda_max above the linear-stability limit
    DIVERGED: ("X", "black"),
    UNVERIFIED: ("$?$", "#9467bd"),  # the Hessian solve failed: no lambda_max to check
    # stationary below affine with eta * lambda_max near the limit: drawn over its tile's colour
    EDGE_OF_STABILITY: ("d", "#17becf"),
}
# Statuses this module does not know (older results' `not_converged`, UNKNOWN) get these, in
# order, so that every status still has a mark of its own.
SPARE_STYLES: tuple[tuple[str, str], ...] = (
    ("D", "#8c564b"),
    ("P", "#e377c2"),
    ("*", "#bcbd22"),
    ("v", "#17becf"),
    ("h", "#7f7f7f"),
)
STATUS_ORDER = tuple(STATUS_STYLES)

# Colour-bar ticks of the loss / affine panel (those inside the range are used).
RATIO_TICKS = (0.25, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 4.0)

# Colour range of the loss / affine panel never narrower than this (ratio), so that a grid
# whose runs all sit near 1 is not painted as if they differed much.
MIN_RATIO_SPAN = 1.25


def normalize_rows(rows: Iterable[dict]) -> list[dict]:
    """Copies of grid rows with every key the figures read: old grid.csv files lack `reason`
    and `loss_vs_affine`, and lambda_max was only written for converged runs. The ratio is
    recomputed from the losses when only those are present."""
    out = []
    for row in rows:
        loss = finite_or_none(row.get("final_train_loss"))
        affine = finite_or_none(row.get("affine_baseline_loss"))
        ratio = finite_or_none(row.get("loss_vs_affine"))
        if ratio is None and loss is not None and affine:
            ratio = loss / affine
        status = row.get("status")
        out.append(
            {
                **row,
                "depth": int(row["depth"]),
                "lr": float(row["lr"]),
                "status": str(status) if status not in (None, "") else UNKNOWN,
                "reason": row.get("reason") or None,
                "final_train_loss": loss,
                "affine_baseline_loss": affine,
                "loss_vs_affine": ratio,
                "lambda_max": finite_or_none(row.get("lambda_max")),
            }
        )
    return out


def ordered_statuses(statuses: Iterable[str]) -> list[str]:
    """Known statuses in the order of STATUS_STYLES, then the others alphabetically."""
    present = set(statuses)
    known = [s for s in STATUS_ORDER if s in present]
    return known + sorted(present - set(STATUS_ORDER))


def status_styles(statuses: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(marker, colour) for each status; unknown statuses take distinct spare styles."""
    styles = {}
    spare = iter(SPARE_STYLES)
    for status in ordered_statuses(statuses):
        styles[status] = STATUS_STYLES.get(status) or next(spare, ("o", "black"))
    return styles


def status_counts(rows: Sequence[dict]) -> dict[str, int]:
    """Runs per status, in display order."""
    counts = Counter(r["status"] for r in rows)
    return {s: counts[s] for s in ordered_statuses(counts)}


def counts_text(rows: Sequence[dict], width: int = 70) -> str:
    """'12 runs: 5 converged, 4 plateau, ...' (the line that says nothing was dropped)."""
    counts = status_counts(rows)
    text = f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    return textwrap.fill(text, width=width)


def _geometric_mean(values: Sequence[float]) -> float | None:
    """Mean of positive numbers in log space (lambda_max and loss ratios are scale quantities)."""
    positive = [v for v in values if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(positive)))) if positive else None


@dataclass(frozen=True)
class Tile:
    """The runs of one (depth, step size) cell; several seeds share a cell."""

    runs: tuple[dict, ...]

    @property
    def minima(self) -> list[dict]:
        """Converged runs, else the runs at the edge of stability (stationary below the affine
        denoiser; the tile is coloured by them and marked as such)."""
        for status in (CONVERGED, EDGE_OF_STABILITY):
            runs = [r for r in self.runs if r["status"] == status]
            if runs:
                return runs
        return []

    @property
    def lambda_max(self) -> float | None:
        """Sharpness of the minima reached (`minima`: the other runs are no minima)."""
        return _geometric_mean([r["lambda_max"] for r in self.minima])

    @property
    def mark(self) -> str | None:
        """The status drawn on the tile when no run converged: edge_of_stability over the
        colour of its minima, else the most common one (ties go to the earlier status in
        STATUS_ORDER)."""
        if any(r["status"] == CONVERGED for r in self.runs):
            return None
        if self.minima:
            return EDGE_OF_STABILITY
        counts = status_counts(list(self.runs))
        return max(counts, key=lambda s: counts[s])  # max keeps the first of equal counts

    def loss_value(self, key: str) -> float | None:
        """Mean over all runs of the cell (converged or not): it tells why a tile is empty."""
        return _geometric_mean([r[key] for r in self.runs])


def grid_tiles(rows: Sequence[dict]) -> tuple[list[int], list[float], dict[tuple[int, int], Tile]]:
    """Depths, step sizes and the tile at each (depth index, lr index) that has runs."""
    depths = sorted({r["depth"] for r in rows})
    lrs = sorted({r["lr"] for r in rows})
    cells: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        cells.setdefault((depths.index(r["depth"]), lrs.index(r["lr"])), []).append(r)
    return depths, lrs, {ij: Tile(tuple(runs)) for ij, runs in cells.items()}


def sharpness_limits(*row_sets: Sequence[dict]) -> tuple[float, float] | None:
    """Common colour range for heatmaps that should be compared (Fig. 4a vs 5a)."""
    values = [
        r["lambda_max"]
        for rows in row_sets
        for r in normalize_rows(rows)
        if r["status"] in (CONVERGED, EDGE_OF_STABILITY) and r["lambda_max"] and r["lambda_max"] > 0
    ]
    return (min(values), max(values)) if values else None


def loss_ratio_span(*row_sets: Sequence[dict]) -> float:
    """Common half-width (as a factor around 1) of the loss / affine colour scale, so that
    identity and He colours mean the same ratio."""
    ratios = [
        r["loss_vs_affine"]
        for rows in row_sets
        for r in normalize_rows(rows)
        if r["loss_vs_affine"] and r["loss_vs_affine"] > 0
    ]
    widest = max((max(v, 1 / v) for v in ratios), default=1.0)
    return max(widest, MIN_RATIO_SPAN)


def _text_colour(rgba) -> str:
    """Black on light tiles, white on dark ones (jet runs from dark blue through yellow)."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _tile_axes(ax, depths: Sequence[int], lrs: Sequence[float]) -> None:
    ax.set_xticks(range(len(lrs)), [f"{lr:.3g}" for lr in lrs])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlim(-0.5, len(lrs) - 0.5)
    ax.set_ylim(-0.5, len(depths) - 0.5)
    ax.set_ylabel("depth m")


def _draw_sharpness(fig: Figure, ax, depths, lrs, tiles, limits) -> None:
    """Top panel: converged tiles coloured and labelled by lambda_max; others get a mark."""
    matrix = np.full((len(depths), len(lrs)), np.nan)
    for (i, j), tile in tiles.items():
        if tile.lambda_max is not None:
            matrix[i, j] = tile.lambda_max
    finite = matrix[np.isfinite(matrix)]
    if limits is None and finite.size:
        limits = (finite.min(), finite.max())
    norm = LogNorm(*limits) if limits and 0 < limits[0] < limits[1] else None
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        origin="lower",
        aspect="auto",
        cmap="jet",
        norm=norm,
        interpolation="nearest",
    )
    for (i, j), tile in tiles.items():
        if tile.lambda_max is None:
            continue
        label = f"{tile.lambda_max:.3g}"
        if len(tile.minima) < len(tile.runs):  # some seeds of this cell did not converge
            label += f"\n{len(tile.minima)}/{len(tile.runs)}"
        colour = _text_colour(image.cmap(image.norm(tile.lambda_max)))
        ax.text(j, i, label, ha="center", va="center", fontsize=6, color=colour)
    _draw_marks(ax, tiles)
    _tile_axes(ax, depths, lrs)
    if finite.size:
        fig.colorbar(image, ax=ax, label=r"$\lambda_{\max}$ (converged)")
    else:
        fig.colorbar(image, ax=ax).remove()  # keep both panels the same width
        ax.text(0.5, 1.0, "no converged runs", transform=ax.transAxes, ha="center", va="bottom")


def _draw_marks(ax, tiles: dict[tuple[int, int], Tile]) -> None:
    """One marker per non-converged tile, one legend entry per status (with run counts)."""
    runs = [r for tile in tiles.values() for r in tile.runs]
    counts = status_counts(runs)
    styles = status_styles(counts)
    handles = []
    for status, n in counts.items():
        marker, colour = styles[status]
        label = f"{status} ({n})"
        if status == CONVERGED:  # drawn as coloured tiles, not as marks
            handles.append(
                Line2D([], [], ls="", marker=marker, ms=9, mfc="#7fbf7f", mec="none", label=label)
            )
            continue
        points = [ij for ij, tile in tiles.items() if tile.mark == status]
        ys, xs = zip(*points) if points else ((), ())
        (line,) = ax.plot(xs, ys, ls="", marker=marker, color=colour, ms=8, mew=1.5, label=label)
        handles.append(line)
    ax.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.02),
        ncol=min(len(handles), 4),
        fontsize=7,
        frameon=False,
        handletextpad=0.3,
        columnspacing=1.0,
    )


def _draw_loss(fig: Figure, ax, depths, lrs, tiles, ratio_span: float | None) -> None:
    """Bottom panel: training loss / affine denoiser's for every run with a finite loss
    (diverging colours centred at 1: blue beats the linear filter, red does not). Results
    without the affine reference show the plain training loss instead."""
    has_ratio = any(t.loss_value("loss_vs_affine") is not None for t in tiles.values())
    key = "loss_vs_affine" if has_ratio else "final_train_loss"
    matrix = np.full((len(depths), len(lrs)), np.nan)
    for (i, j), tile in tiles.items():
        value = tile.loss_value(key)
        if value is not None:
            matrix[i, j] = value
    finite = matrix[np.isfinite(matrix) & (matrix > 0)]
    if has_ratio:
        span = ratio_span or max(np.max(np.maximum(finite, 1 / finite)), MIN_RATIO_SPAN)
        norm, cmap, fmt = LogNorm(1 / span, span), "RdBu_r", "{:.2f}"
        label = "train loss / affine"
    else:
        # linear: old results' losses span a narrow range, where log ticks read badly
        norm = Normalize(finite.min(), finite.max()) if finite.size > 1 else None
        cmap, fmt, label = "viridis", "{:.3g}", "train loss (no affine ref.)"
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        origin="lower",
        aspect="auto",
        cmap=cmap,
        norm=norm,
        interpolation="nearest",
    )
    for (i, j), tile in tiles.items():
        value = tile.loss_value(key)
        if value is None:
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=6, color=GREY)
            continue
        colour = _text_colour(image.cmap(image.norm(value))) if value > 0 else "black"
        ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=6, color=colour)
    _tile_axes(ax, depths, lrs)
    ax.set_xlabel(r"step size $\eta$")
    bar = fig.colorbar(image, ax=ax, label=label)
    if has_ratio:  # log ticks would label only 10^0: name the ratios instead
        ticks = [t for t in RATIO_TICKS if norm.vmin <= t <= norm.vmax]
        bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        bar.minorticks_off()


def sharpness_figure(
    rows: Sequence[dict],
    title: str,
    limits: tuple[float, float] | None = None,
    ratio_span: float | None = None,
) -> Figure:
    """Figs. 4a / 5a with the reason for every empty tile: (top) lambda_max of converged runs,
    a status mark on every other tile; (bottom) each tile's training loss relative to the
    affine denoiser, so a plateau at a trivial solution is visible next to its sharpness."""
    rows = normalize_rows(rows)
    depths, lrs, tiles = grid_tiles(rows)
    width = 2.2 + 0.6 * max(len(lrs), 4)
    height = 2.0 + 0.7 * max(len(depths), 2)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, height), sharex=True)
    _draw_sharpness(fig, top, depths, lrs, tiles, limits)
    _draw_loss(fig, bottom, depths, lrs, tiles, ratio_span)
    fig.suptitle(title, fontsize=10)
    return fig


def sharpness_heatmap(
    rows: Sequence[dict],
    path: Path,
    title: str,
    limits: tuple[float, float] | None = None,
    ratio_span: float | None = None,
) -> Path:
    """Figs. 4a / 5a, saved (see sharpness_figure)."""
    return save(sharpness_figure(rows, title, limits, ratio_span), path, FORMATS)


def flattest_figure(rows: Sequence[dict], title: str) -> Figure:
    """Fig. 4b: the lowest lambda_max per depth among converged runs, with a least-squares line;
    each depth says how many of its runs converged, and a depth with none is marked."""
    rows = normalize_rows(rows)
    best = flattest_per_depth(rows)
    per_depth = Counter(r["depth"] for r in rows)
    converged = Counter(r["depth"] for r in rows if r["status"] == CONVERGED)
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    if best:
        depths = np.array(list(best))
        values = np.array([v["lambda_max"] for v in best.values()])
        ax.plot(depths, values, "o", color=BLUE, label="flattest minimum found")
        for depth, value in zip(depths, values):
            ax.annotate(
                f"{converged[depth]}/{per_depth[depth]} conv.",
                (depth, value),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
        if len(depths) >= 2:
            fit = line_fit(depths, values)
            grid = np.linspace(depths.min(), depths.max(), 50)
            ax.plot(
                grid,
                fit["slope"] * grid + fit["intercept"],
                "--",
                color=GREY,
                label=f"linear fit ($R^2$={fit['r2']:.2f})",
            )
    missing = [d for d in sorted(per_depth) if d not in best]
    if missing:  # depths with no minimum: an x on the axis, not a gap
        ax.plot(
            missing,
            [0.02] * len(missing),
            "x",
            color=RED,
            ms=8,
            mew=2,
            transform=ax.get_xaxis_transform(),
            label="no converged run",
        )
        for depth in missing:
            ax.annotate(
                f"0/{per_depth[depth]} conv.",
                (depth, 0.02),
                xycoords=ax.get_xaxis_transform(),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=RED,
            )
    if not rows:
        ax.text(0.5, 0.5, "no runs", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.margins(x=0.15)  # room for the count beside the deepest point
    ax.set_xlabel("depth m")
    ax.set_ylabel(r"lowest $\lambda_{\max}$")
    ax.set_title(f"{title}\n{counts_text(rows)}", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def flattest_vs_depth(rows: Sequence[dict], path: Path, title: str) -> Path:
    """Fig. 4b, saved (see flattest_figure)."""
    return save(flattest_figure(rows, title), path, FORMATS)


def stability_figure(rows: Sequence[dict], title: str) -> Figure:
    """lambda_max against step size per depth, with the linear-stability limit 2 / eta (App. I).
    Converged runs form the lines; every other run with a measured lambda_max is a point in
    its status's mark, and the legend counts the runs of each status it could not place."""
    rows = normalize_rows(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    depths = sorted({r["depth"] for r in rows})
    cmap = plt.get_cmap("viridis", max(len(depths), 2))
    styles = status_styles(r["status"] for r in rows)
    for i, depth in enumerate(depths):
        mine = [r for r in rows if r["depth"] == depth and r["lambda_max"] is not None]
        pts = sorted((r["lr"], r["lambda_max"]) for r in mine if r["status"] == CONVERGED)
        if pts:
            ax.plot(*zip(*pts), "o-", color=cmap(i), label=f"m={depth}", ms=4)
        for status in styles:
            if status == CONVERGED:
                continue
            others = [(r["lr"], r["lambda_max"]) for r in mine if r["status"] == status]
            if others:
                ax.plot(*zip(*others), ls="", marker=styles[status][0], color=cmap(i), ms=7)
    for status, n in status_counts(rows).items():
        if status == CONVERGED:
            continue
        shown = sum(1 for r in rows if r["status"] == status and r["lambda_max"] is not None)
        label = f"{status} ({n}, {shown} plotted)"
        ax.plot([], [], ls="", marker=styles[status][0], color="black", label=label)
    lrs = sorted({r["lr"] for r in rows})
    if lrs:
        grid = np.geomspace(min(lrs), max(lrs), 50)
        ax.plot(grid, 2 / grid, "k--", label=r"$2/\eta$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel(r"$\lambda_{\max}$")
    ax.set_title(f"{title}\n{counts_text(rows)}", fontsize=8)
    if ax.get_legend_handles_labels()[0]:  # outside: the marks must not hide points
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.grid(alpha=0.3, which="both")
    return fig


def stability(rows: Sequence[dict], path: Path, title: str) -> Path:
    """The stability view, saved (see stability_figure)."""
    return save(stability_figure(rows, title), path, FORMATS)


def training_curves(rows: Sequence[dict], path: Path, title: str) -> Path:
    """Fig. 5b: training loss vs iteration for identity and He initialization."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    colors = {"identity": BLUE, "he": RED}
    for init in sorted({r["init"] for r in rows}):
        pts = [
            (r["iteration"], r["train_loss"])
            for r in rows
            if r["init"] == init and r["train_loss"] is not None
        ]
        if pts:
            ax.plot(*zip(*pts), color=colors.get(init, GREY), label=f"{init} init")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    return save(fig, path, FORMATS)


def gain_profiles(gains: dict[str, list[dict]], path: Path, labels: dict[str, str]) -> Path:
    """Fig. 6: per-layer max gain and gains of the maximally amplified input, sharp vs flat."""
    methods = list(gains)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, method in zip(axes, methods):
        runs = gains[method]
        if not runs:
            ax.text(0.5, 0.5, "no gain profiles", ha="center", transform=ax.transAxes)
            continue
        draw_gain_profile(ax, runs[0], title=labels.get(method, method))
        for other in runs[1:]:  # the other seeds, faint
            layers = range(1, len(other["max_gain"]) + 1)
            ax.plot(layers, other["max_gain"], "o", color=BLUE, alpha=0.3, ms=4)
            ax.plot(layers, other["maximal_input_gains"], "o", mfc="none", mec=RED, alpha=0.3, ms=8)
    axes[0].legend(fontsize=8)
    return save(fig, path, FORMATS)


def cross_sections(
    arrays: dict, pairs: Sequence[dict], path: Path, labels: dict[str, str], subject: str = "flat"
) -> Path:
    """Fig. 7: (a) the interpolation line, (b, c) close-ups at each end, (d, e) the loss along
    each minimum's top Hessian eigenvector with the quadratic model 0.5 lambda t^2. `subject`
    names the minimum at t = 0 in the title (flat, or another method's, e.g. SAM)."""
    flat, sharp = [str(m) for m in arrays["methods"]]
    fig, axes = plt.subplots(1, 5, figsize=(19, 3.6))
    ts, lines = arrays["line_ts"], arrays["line_losses"]
    for other in lines[1:]:
        axes[0].plot(ts, other, color=GREY, alpha=0.3, lw=0.8)
    axes[0].plot(ts, lines[0], color="k")
    axes[0].axvline(0, color=GREEN, ls=":")
    axes[0].axvline(1, color=ORANGE, ls=":")
    axes[0].set_title(
        f"(a) line {labels.get(flat, flat)} (t=0) to {labels.get(sharp, sharp)} (t=1)", fontsize=9
    )
    axes[0].set_xlabel("t")
    axes[0].set_ylabel("training loss")
    axes[0].set_yscale("log")  # the loss grows by orders of magnitude past the minima
    close = arrays["closeup_ts"]
    for ax, method, offset, color, tag in (
        (axes[1], flat, 0.0, GREEN, "(b)"),
        (axes[2], sharp, 1.0, ORANGE, "(c)"),
    ):
        ax.plot(close + offset, arrays[f"closeup_{method}"], color=color)
        ax.set_title(f"{tag} close-up at {labels.get(method, method)}", fontsize=9)
        ax.set_xlabel("t")
    lo = min(arrays[f"closeup_{m}"].min() for m in (flat, sharp))
    hi = max(arrays[f"closeup_{m}"].max() for m in (flat, sharp))
    for ax in axes[1:3]:
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))  # same scale: compare curvature
    eig_ts = arrays["eigen_ts"]
    for ax, method, color, tag in ((axes[3], flat, GREEN, "(d)"), (axes[4], sharp, ORANGE, "(e)")):
        ax.plot(eig_ts, arrays[f"eigen_loss_{method}"], color=color, label="loss")
        ax.plot(
            eig_ts,
            arrays[f"eigen_quadratic_{method}"],
            "k--",
            lw=0.8,
            label=r"$L_0 + \lambda t^2/2$",
        )
        ax.set_title(f"{tag} top eigenvector, {labels.get(method, method)}", fontsize=9)
        ax.set_xlabel("distance along eigenvector")
        ax.legend(fontsize=7)
    lo = min(arrays[f"eigen_loss_{m}"].min() for m in (flat, sharp))
    hi = max(arrays[f"eigen_loss_{m}"].max() for m in (flat, sharp))
    for ax in axes[3:]:
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    if pairs:
        n_flat = sum(bool(p["flat_looks_sharper_on_line"]) for p in pairs)
        fig.suptitle(
            f"the {subject} minimum looks sharper on the line in {n_flat} of {len(pairs)} pairs",
            fontsize=10,
        )
    for ax in axes:
        ax.grid(alpha=0.3)
    return save(fig, path, FORMATS)


def linear_check(rows: Sequence[dict], path: Path) -> Path:
    """Measured sharpness of trained linear nets against Thm 1, and eta x lambda_max vs 2."""
    done = [
        r for r in rows if r.get("lambda_max") is not None and r.get("lambda_theorem1") is not None
    ]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    if done:
        predicted = np.array([r["lambda_theorem1"] for r in done])
        measured = np.array([r["lambda_max"] for r in done])
        axes[0].loglog(predicted, measured, "o", color=BLUE)
        lim = [
            min(predicted.min(), measured.min()) * 0.9,
            max(predicted.max(), measured.max()) * 1.1,
        ]
        axes[0].plot(lim, lim, "k--", lw=0.8)
        for depth in sorted({r["depth"] for r in done}):
            pts = sorted((r["lr"], r["lr_times_lambda_max"]) for r in done if r["depth"] == depth)
            axes[1].plot(*zip(*pts), "o-", label=f"m={depth}", ms=4)
        axes[1].axhline(2, color="k", ls="--", lw=0.8, label="stability limit 2")
        axes[1].set_xscale("log")
        axes[1].legend(fontsize=7)
    axes[0].set_xlabel(r"Thm 1: $2m\,\sigma_{\max}(T)^{2(1-1/m)}/d_y$")
    axes[0].set_ylabel(r"measured $\lambda_{\max}$")
    axes[0].set_title("linear nets, identity init, GD", fontsize=10)
    axes[1].set_xlabel(r"step size $\eta$")
    axes[1].set_ylabel(r"$\eta\,\lambda_{\max}$")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    return save(fig, path, FORMATS)


def spectral_densities(
    spectra: dict, path: Path, labels: dict[str, str], colors: dict[str, str] | None = None
) -> Path:
    """The Hessian eigenvalue densities (stochastic Lanczos quadrature) of one converged minimum
    per method on one axis, density on a log scale (the bulk near 0 spans decades more than the
    outliers), each minimum's lambda_max marked by a vertical line. Runs without a density (no
    converged run of a method) are named in the title, not drawn."""
    densities = spectra.get("densities", {})
    methods = list(spectra.get("runs", {})) or list(densities)
    colors = colors or {}
    palette = [GREEN, ORANGE, BLUE, RED, GREY]
    fig, ax = plt.subplots(figsize=(7, 4))
    missing = []
    for i, method in enumerate(methods):
        entry = densities.get(method)
        if entry is None:
            missing.append(method)
            continue
        color = colors.get(method, palette[i % len(palette)])
        density = np.asarray(entry["density"], dtype=float)
        floor = max(float(density.max()) * 1e-8, 1e-300)  # log scale: the Gaussian tails' zeros
        label = f"{labels.get(method, method)} (seed {entry['seed']})"
        ax.plot(entry["grid"], np.maximum(density, floor), color=color, lw=1.2, label=label)
        if entry.get("lambda_max") is not None:
            ax.axvline(entry["lambda_max"], color=color, ls="--", lw=0.9)
    ax.set_yscale("log")
    ax.set_xlabel(r"eigenvalue $\lambda$ of the training-loss Hessian (per-pixel MSE)")
    ax.set_ylabel("density (Gaussian-broadened)")
    title = r"Hessian eigenvalue density; dashed: $\lambda_{\max}$ (Lanczos)"
    if missing:
        title += f"\nno converged run: {', '.join(missing)}"
    ax.set_title(title, fontsize=10)
    if densities:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save(fig, path, FORMATS)


# --- Fig. 7 from the flat_vs_sharp stage's files ---------------------------------------------

METHOD_LABELS = {"sgd": "SGD (flat)", "adam": "Adam (sharp)", "sam": "SAM"}


def note_figure(path: Path, text: str) -> Path:
    """A figure that only says why it is empty: a fixed output stays present."""
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.text(0.5, 0.5, text, ha="center")
    ax.axis("off")
    return save(fig, path, FORMATS)


def cross_section_figures(results: Path, out: Path, labels: dict[str, str]) -> list[Path]:
    """Fig. 7 from results/flat_vs_sharp/: the flat-vs-sharp cross-sections
    (fig7_cross_sections) and one figure per further method against the sharp one
    (fig7_cross_sections_<method>, e.g. SAM). A comparison without a pair of minima gets a
    figure that says so."""
    paths = []
    arrays = dict(np.load(results / "cross_sections.npz"))
    path = out / "fig7_cross_sections.png"
    if "unavailable" in arrays:
        paths.append(note_figure(path, "no cross-sections: a flat_vs_sharp run diverged"))
    else:
        pairs = read_csv(results / "pairs.csv")
        paths.append(cross_sections(arrays, pairs, path, labels))
    stored = dict(np.load(results / "cross_sections_others.npz"))
    pairs = read_csv(results / "pairs_others.csv")
    for method in dict.fromkeys(key.split(":", 1)[0] for key in stored):
        arrays = {k.split(":", 1)[1]: v for k, v in stored.items() if k.startswith(f"{method}:")}
        path = out / f"fig7_cross_sections_{method}.png"
        if "unavailable" in arrays:
            text = f"no cross-sections: no pair of {method} and sharp minima"
            paths.append(note_figure(path, text))
            continue
        own = [p for p in pairs if p.get("method") == method]
        subject = labels.get(method, method)
        paths.append(cross_sections(arrays, own, path, labels, subject=subject))
    return paths
