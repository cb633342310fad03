"""DVC stage `figures`: draw Figures 4-7 (and the stability and linear-check views) from saved
results. Never trains.

    python -m pipelines.figures [--params params.yaml] [--root .]

Writes figures/{fig4a_sharpness_identity, fig4b_flattest_vs_depth, fig4c_stability_identity,
fig5a_sharpness_he, fig5b_training_curves, fig6_gains, fig7_cross_sections,
fig_hessian_density, linear_check}.{png,pdf}, and fig7_cross_sections_<method>.{png,pdf} for each
method beyond the paper's two (flat_vs_sharp's methods in params.yaml, e.g. SAM).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipelines.common import stage_main
from src.paper import figures
from src.paper.tables import load_json, read_csv

LABELS = {"sgd": "SGD (flat)", "adam": "Adam (sharp)", "sam": "SAM"}


def run(root: str) -> list[Path]:
    root = Path(root)
    results, out = root / "results", root / "figures"
    identity = read_csv(results / "grid_identity" / "grid.csv")
    he = read_csv(results / "grid_he" / "grid.csv")
    # one colour scale for both inits: Fig. 4a and 5a are compared tile by tile
    limits = figures.sharpness_limits(identity, he)
    ratio_span = figures.loss_ratio_span(identity, he)
    paths = [
        figures.sharpness_heatmap(
            identity,
            out / "fig4a_sharpness_identity.png",
            "identity init: sharpness of the minimum reached",
            limits,
            ratio_span,
        ),
        figures.flattest_vs_depth(
            identity,
            out / "fig4b_flattest_vs_depth.png",
            "identity init: flattest minimum per depth",
        ),
        figures.stability(
            identity,
            out / "fig4c_stability_identity.png",
            r"identity init: $\lambda_{\max}$ vs the limit $2/\eta$",
        ),
        figures.sharpness_heatmap(
            he,
            out / "fig5a_sharpness_he.png",
            "He init: sharpness of the minimum reached",
            limits,
            ratio_span,
        ),
        figures.training_curves(
            read_csv(results / "curves" / "curves.csv"),
            out / "fig5b_training_curves.png",
            "training loss, identity vs He init",
        ),
        figures.gain_profiles(
            load_json(results / "flat_vs_sharp" / "gains.json"), out / "fig6_gains.png", LABELS
        ),
        figures.linear_check(
            read_csv(results / "linear_check" / "grid.csv"), out / "linear_check.png"
        ),
    ]
    arrays = dict(np.load(results / "flat_vs_sharp" / "cross_sections.npz"))
    if "unavailable" not in arrays:
        pairs = read_csv(results / "flat_vs_sharp" / "pairs.csv")
        paths.append(figures.cross_sections(arrays, pairs, out / "fig7_cross_sections.png", LABELS))
    else:  # keep the fixed output present and say why it is empty
        fig, ax = figures.plt.subplots(figsize=(5, 2))
        ax.text(0.5, 0.5, "no cross-sections: a flat_vs_sharp run diverged", ha="center")
        ax.axis("off")
        paths.append(figures.save(fig, out / "fig7_cross_sections.png", figures.FORMATS))
    paths += others_cross_sections(results / "flat_vs_sharp", out)
    paths.append(
        figures.spectral_densities(
            load_json(results / "flat_vs_sharp" / "spectra.json"),
            out / "fig_hessian_density.png",
            LABELS,
        )
    )
    return paths


def others_cross_sections(results: Path, out: Path) -> list[Path]:
    """Fig. 7 for the methods beyond the paper's two (e.g. SAM) against the sharp one, one
    figure each: figures/fig7_cross_sections_<method>.png. A method without a pair of minima
    gets a figure that says so."""
    stored = dict(np.load(results / "cross_sections_others.npz"))
    pairs = read_csv(results / "pairs_others.csv")
    methods = list(dict.fromkeys(key.split(":", 1)[0] for key in stored))
    paths = []
    for method in methods:
        arrays = {k.split(":", 1)[1]: v for k, v in stored.items() if k.startswith(f"{method}:")}
        path = out / f"fig7_cross_sections_{method}.png"
        if "unavailable" in arrays:
            fig, ax = figures.plt.subplots(figsize=(5, 2))
            ax.text(
                0.5, 0.5, f"no cross-sections: no pair of {method} and sharp minima", ha="center"
            )
            ax.axis("off")
            paths.append(figures.save(fig, path, figures.FORMATS))
            continue
        own = [p for p in pairs if p.get("method") == method]
        paths.append(
            figures.cross_sections(arrays, own, path, LABELS, subject=LABELS.get(method, method))
        )
    return paths


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: print(*run(args.root), sep="\n"), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
