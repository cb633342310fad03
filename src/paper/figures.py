"""Figures 4-7 of the paper (and a stability view), drawn from saved results only.

Every function takes already-loaded numbers (rows of a grid table, dicts, arrays from .npz) and
writes PNG + PDF; nothing here trains or measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm

from src.paper.tables import flattest_per_depth, linear_fit
from src.plots import BLUE, GREEN, GREY, ORANGE, RED, draw_gain_profile, plt, save

FORMATS = ("png", "pdf")


def _grid_matrix(rows: Sequence[dict], value: str = "lambda_max"):
    """depths x lrs matrix of `value` for converged runs (NaN elsewhere: the white tiles)."""
    depths = sorted({r["depth"] for r in rows})
    lrs = sorted({r["lr"] for r in rows})
    matrix = np.full((len(depths), len(lrs)), np.nan)
    for r in rows:
        if r["status"] == "converged" and r.get(value) is not None:
            i, j = depths.index(r["depth"]), lrs.index(r["lr"])
            # several seeds per cell: show the mean
            matrix[i, j] = r[value] if np.isnan(matrix[i, j]) else 0.5 * (matrix[i, j] + r[value])
    return depths, lrs, matrix


def sharpness_limits(*row_sets: Sequence[dict]) -> tuple[float, float] | None:
    """Common colour range for heatmaps that should be compared (Fig. 4a vs 5a)."""
    values = [
        r["lambda_max"]
        for rows in row_sets
        for r in rows
        if r["status"] == "converged" and r.get("lambda_max")
    ]
    values = [v for v in values if v > 0]
    return (min(values), max(values)) if values else None


def sharpness_heatmap(rows: Sequence[dict], path: Path, title: str, limits=None) -> Path:
    """Figs. 4a / 5a: lambda_max per (depth, step size); non-converged runs are white."""
    depths, lrs, matrix = _grid_matrix(rows)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(lrs), 1.2 + 0.45 * len(depths)))
    finite = matrix[np.isfinite(matrix) & (matrix > 0)]
    if limits is None and finite.size:
        limits = (finite.min(), finite.max())
    norm = LogNorm(*limits) if limits and limits[0] < limits[1] else None
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        origin="lower",
        aspect="auto",
        cmap="jet",
        norm=norm,
        interpolation="nearest",
    )
    for i in range(len(depths)):
        for j in range(len(lrs)):
            if np.isfinite(matrix[i, j]):
                ax.text(
                    j, i, f"{matrix[i, j]:.3g}", ha="center", va="center", fontsize=6, color="white"
                )
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel("depth m")
    ax.set_title(title, fontsize=10)
    if finite.size:
        fig.colorbar(image, ax=ax, label=r"$\lambda_{\max}$")
    return save(fig, path, FORMATS)


def flattest_vs_depth(rows: Sequence[dict], path: Path, title: str) -> Path:
    """Fig. 4b: the lowest lambda_max per depth, with a least-squares line."""
    best = flattest_per_depth(rows)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    if best:
        depths = np.array(list(best))
        values = np.array([v["lambda_max"] for v in best.values()])
        ax.plot(depths, values, "o", color=BLUE, label="flattest minimum found")
        if len(depths) >= 2:
            fit = linear_fit(depths, values)
            grid = np.linspace(depths.min(), depths.max(), 50)
            ax.plot(
                grid,
                fit["slope"] * grid + fit["intercept"],
                "--",
                color=GREY,
                label=f"linear fit ($R^2$={fit['r2']:.2f})",
            )
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no converged runs", ha="center", transform=ax.transAxes)
    ax.set_xlabel("depth m")
    ax.set_ylabel(r"lowest $\lambda_{\max}$")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return save(fig, path, FORMATS)


def stability(rows: Sequence[dict], path: Path, title: str) -> Path:
    """lambda_max against step size per depth, with the linear-stability limit 2 / eta (App. I)."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    depths = sorted({r["depth"] for r in rows})
    cmap = plt.get_cmap("viridis", max(len(depths), 2))
    for i, depth in enumerate(depths):
        pts = sorted(
            (r["lr"], r["lambda_max"])
            for r in rows
            if r["depth"] == depth and r["status"] == "converged" and r.get("lambda_max")
        )
        if pts:
            ax.plot(*zip(*pts), "o-", color=cmap(i), label=f"m={depth}", ms=4)
    lrs = sorted({r["lr"] for r in rows})
    if lrs:
        grid = np.geomspace(min(lrs), max(lrs), 50)
        ax.plot(grid, 2 / grid, "k--", label=r"$2/\eta$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel(r"$\lambda_{\max}$")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    return save(fig, path, FORMATS)


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


def cross_sections(arrays: dict, pairs: Sequence[dict], path: Path, labels: dict[str, str]) -> Path:
    """Fig. 7: (a) the interpolation line, (b, c) close-ups at each end, (d, e) the loss along
    each minimum's top Hessian eigenvector with the quadratic model 0.5 lambda t^2."""
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
            f"the flat minimum looks sharper on the line in {n_flat} of {len(pairs)} pairs",
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
