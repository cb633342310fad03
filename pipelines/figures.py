"""DVC stage `figures`: draw Figures 4-7 (and the stability and linear-check views) from saved
results. Never trains.

    python -m pipelines.figures [--params params.yaml] [--root .]

Writes figures/{fig4a_sharpness_identity, fig4b_flattest_vs_depth, fig4c_stability_identity,
fig5a_sharpness_he, fig5b_training_curves, fig6_gains, fig7_cross_sections,
linear_check}.{png,pdf}.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipelines.common import stage_main
from src.paper import figures
from src.paper.tables import load_json, read_csv

LABELS = {"sgd": "SGD (flat)", "adam": "Adam (sharp)"}


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
    return paths


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: print(*run(args.root), sep="\n"), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
