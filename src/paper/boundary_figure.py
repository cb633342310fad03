"""Fig. 4d (ours): the stability boundary lr_max(m) found by bisection, drawn from the saved
`results/boundary/boundary.json` only (nothing here trains).

Left: lr_max per depth with its bracket [lo, hi] (lo: the largest converged step size, hi: the
smallest step size above it that diverged or was unstable beyond the band), marked by what
limits it (divergence or the edge of stability), non-monotone depths crossed, lr_max with
edge-of-stability runs counted as minima where it differs (open diamonds), the power law fitted
to the bracketed depths with its confidence band, and a 1/m line for reference. Right: the flattest
converged lambda_max per depth beside 2 / lr_max, the sharpness above which SGD at step lr_max
cannot stay at a minimum (App. I, eq. S4: linearly stable only if lambda_max <= 2 / eta).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.core.plots import BLUE, GREEN, GREY, ORANGE, RED, plt, save

FORMATS = ("png", "pdf")
BRACKETED = "bracketed"
OPEN_ABOVE = "open_above"
# Bracketed depths by what limits the boundary (boundary.json's `limited_by`): marker, colour
# and legend; None: an entry written before issue 23 said nothing about it.
LIMIT_STYLES = (
    ("divergence", "o", BLUE, r"$\eta_{\max}$ limited by divergence (bar: up to hi)"),
    ("edge", "s", GREEN, r"$\eta_{\max}$ limited by the edge ($\eta\lambda$ beyond the band)"),
    (None, "D", GREY, r"$\eta_{\max}$ (bar: up to first stability failure)"),
)


def _entries(boundary: Mapping[str, Any], state: str) -> list[Mapping[str, Any]]:
    return [
        b
        for _, b in sorted(boundary["depths"].items(), key=lambda kv: int(kv[0]))
        if b["state"] == state
    ]


def _fit_line(fit: Mapping[str, Any], depths: np.ndarray, slope: float) -> np.ndarray:
    """c m^slope through the centre of the fitted points (mean log m, mean log mid): the line
    of the fit itself for its exponent, and the band's edges for the interval's ends."""
    points = fit["points"]
    log_m = np.mean([math.log(p["depth"]) for p in points])
    log_y = np.mean([math.log(p["mid"]) for p in points])
    return np.exp(log_y + slope * (np.log(depths) - log_m))


def draw_lr_max(ax, boundary: Mapping[str, Any]) -> None:
    """lr_max(m) on log-log axes: brackets as error bars, open brackets as lower bounds, the
    fitted power law with its band (ci95_with_bracket, else the OLS interval), and 1/m."""
    bracketed = _entries(boundary, BRACKETED)
    for limit, marker, color, label in LIMIT_STYLES:
        group = [b for b in bracketed if b.get("limited_by") == limit]
        if not group:
            continue
        depths = np.array([b["depth"] for b in group], float)
        lo = np.array([b["bracket"][0] for b in group])
        hi = np.array([b["bracket"][1] for b in group])
        ax.errorbar(
            depths,
            lo,
            yerr=[np.zeros_like(lo), hi - lo],
            fmt=marker,
            color=color,
            capsize=3,
            label=label,
        )
    moved = [
        b
        for b in boundary["depths"].values()
        if (b.get("with_edge") or {}).get("lr_max") not in (None, b.get("lr_max"))
    ]
    marks = (  # (entries, their lr_max, plot style and legend)
        (
            moved,
            lambda b: b["with_edge"]["lr_max"],
            dict(marker="d", mfc="none", color=GREY),
            r"$\eta_{\max}$ with edge-of-stability runs as minima",
        ),
        (
            [b for b in bracketed if b.get("non_monotone")],
            lambda b: b["lr_max"],
            dict(marker="x", color=RED, markersize=10),
            "non-monotone (a minimum above a stability failure)",
        ),
        (
            _entries(boundary, OPEN_ABOVE),
            lambda b: b["lr_max"],
            dict(marker="^", color=ORANGE),
            "not bracketed (lower bound)",
        ),
    )
    for entries, value, style, label in marks:
        if entries:
            ax.plot(
                [b["depth"] for b in entries],
                [value(b) for b in entries],
                ls="none",
                label=label,
                **style,
            )
    fit = boundary.get("fit") or {}
    if fit.get("exponent") is not None and fit.get("points"):
        m = np.geomspace(
            min(p["depth"] for p in fit["points"]), max(p["depth"] for p in fit["points"]), 50
        )
        ax.plot(
            m,
            _fit_line(fit, m, fit["exponent"]),
            color=RED,
            label=rf"fit $m^{{{fit['exponent']:.2f}}}$",
        )
        band = fit.get("ci95_with_bracket") or fit.get("ci95")
        if band:
            edges = np.array([_fit_line(fit, m, slope) for slope in band])
            ax.fill_between(
                m,
                edges.min(0),
                edges.max(0),
                color=RED,
                alpha=0.15,
                label=f"95% CI of p: [{band[0]:.2f}, {band[1]:.2f}]",
            )
        ax.plot(m, _fit_line(fit, m, -1.0), "--", color=GREY, label=r"$\propto 1/m$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    depths = sorted(int(d) for d in boundary["depths"])
    ax.set_xticks(depths, [str(d) for d in depths], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlabel("depth m")
    ax.set_ylabel(r"largest stable step size $\eta_{\max}$")
    ax.grid(alpha=0.3, which="both")


def draw_sharpness_vs_limit(ax, stability: Sequence[Mapping[str, Any]]) -> None:
    """Per depth: the flattest converged lambda_max, and 2 / lr_max (with 2 / hi below it:
    the stability limit lies between them)."""
    with_limit = [s for s in stability if s.get("two_over_lr_max") is not None]
    if with_limit:
        depths = [s["depth"] for s in with_limit]
        upper = [s["two_over_lr_max"] for s in with_limit]
        ax.plot(depths, upper, "s-", color=GREY, label=r"$2/\eta_{\max}$ (App. I, eq. S4)")
        closed = [s for s in with_limit if s.get("two_over_lr_max_hi") is not None]
        if closed:  # 2/hi < the limit <= 2/lo: the band the bracket leaves open
            ax.errorbar(
                [s["depth"] for s in closed],
                [s["two_over_lr_max"] for s in closed],
                yerr=[
                    [s["two_over_lr_max"] - s["two_over_lr_max_hi"] for s in closed],
                    [0.0] * len(closed),
                ],
                fmt="none",
                ecolor=GREY,
                capsize=3,
                label=r"$2/\eta$ over the bracket",
            )
    flattest = [s for s in stability if s.get("flattest_lambda_max") is not None]
    if flattest:
        ax.plot(
            [s["depth"] for s in flattest],
            [s["flattest_lambda_max"] for s in flattest],
            "o",
            color=BLUE,
            label=r"flattest converged $\lambda_{\max}$ (grid)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("depth m")
    ax.set_ylabel(r"$\lambda_{\max}$")
    ax.grid(alpha=0.3, which="both")


def boundary_figure(boundary: Mapping[str, Any], path: str | Path) -> Path:
    """Both panels from the boundary stage's saved json; PNG + PDF at `path`."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    draw_lr_max(left, boundary)
    draw_sharpness_vs_limit(right, boundary.get("stability") or [])
    missing = [
        d for d, b in boundary["depths"].items() if b["state"] not in (BRACKETED, OPEN_ABOVE)
    ]
    title = f"stability boundary by bisection (resolution {boundary['resolution']:.3g}x)"
    if missing:
        title += f"; no converged run at depth {', '.join(missing)}"
    left.set_title(title, fontsize=9)
    right.set_title(r"flattest minimum vs the linear-stability limit", fontsize=9)
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save(fig, path, FORMATS)
