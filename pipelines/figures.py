"""DVC stage `figures`: draw Figures 4-7 (and the stability and linear-check views) from saved
results (src.paper.figures). Never trains.

    python -m pipelines.figures [--params params.yaml] [--root .]

Writes figures/{fig4a_sharpness_identity, fig4b_flattest_vs_depth, fig4c_stability_identity,
fig5a_sharpness_he, fig5b_training_curves, fig6_gains, fig7_cross_sections,
fig_hessian_density, linear_check}.{png,pdf}, and fig7_cross_sections_<method>.{png,pdf} for each
method beyond the paper's two (flat_vs_sharp's methods in params.yaml, e.g. SAM).
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.core.files import read_csv, read_json
from src.paper import figures
from src.paper.figures import METHOD_LABELS
from src.runtime.stage import stage_main


def run(root: str) -> list[Path]:
    results, out = Path(root) / "results", Path(root) / "figures"
    identity = read_csv(results / "grid_identity" / "grid.csv")
    he = read_csv(results / "grid_he" / "grid.csv")
    # one colour scale for both inits: Fig. 4a and 5a are compared tile by tile
    limits = figures.sharpness_limits(identity, he)
    ratio_span = figures.loss_ratio_span(identity, he)
    flat_vs_sharp = results / "flat_vs_sharp"
    return [
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
            read_json(flat_vs_sharp / "gains.json"), out / "fig6_gains.png", METHOD_LABELS
        ),
        figures.linear_check(
            read_csv(results / "linear_check" / "grid.csv"), out / "linear_check.png"
        ),
        *figures.cross_section_figures(flat_vs_sharp, out, METHOD_LABELS),
        figures.spectral_densities(
            read_json(flat_vs_sharp / "spectra.json"),
            out / "fig_hessian_density.png",
            METHOD_LABELS,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return stage_main(lambda args: print(*run(args.root), sep="\n"), __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
