"""Figures 1-3 are produced from saved data, as non-empty PNG and PDF files."""

import numpy as np

from src.theory import figures


def test_figures_are_written_from_saved_data(tmp_path):
    data = figures.compute_figure_data(seed=0, fig3_dim=3, fig3_depth=3, fig3_networks=2)
    path = figures.save_figure_data(data, tmp_path / "data.npz")
    loaded = figures.load_figure_data(path)
    assert set(loaded) == set(data)
    written = figures.make_figures(loaded, tmp_path / "figs")
    assert len(written) == 6
    for name in figures.FIGURE_NAMES:
        png, pdf = tmp_path / "figs" / f"{name}.png", tmp_path / "figs" / f"{name}.pdf"
        assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.stat().st_size > 5_000 and pdf.read_bytes()[:5] == b"%PDF-"


def test_figure_data_shows_what_the_paper_says():
    data = {**figures.figure1_data(), **figures.figure2_data()}
    # Fig. 1: both runs start unstable and end at a minimum that is stable for them.
    lr, lr_m, beta = (float(data[k]) for k in ("fig1_lr", "fig1_momentum_lr", "fig1_momentum"))
    assert float(data["fig1_sharpness_start"]) > max(2 / lr, 2 * (1 + beta) / lr_m)
    assert float(data["fig1_sharpness_gd_end"]) <= 2 / lr
    assert float(data["fig1_sharpness_momentum_end"]) <= 2 * (1 + beta) / lr_m
    # Fig. 2: equal curvature along the line, very different true sharpness.
    curvature, true = data["fig2_line_curvature"], data["fig2_true_sharpness"]
    assert abs(curvature[0] - curvature[1]) <= 1e-12 * curvature[0]
    assert true[1] > 3 * true[0]
    # Fig. 3: flattest implementations sit at the bound, arbitrary ones far above.
    fig3 = figures.figure3_data(seed=1, dim=3, depth=4, networks=2)
    ratio, flat = fig3["fig3_sharpness_over_bound"], fig3["fig3_is_flattest"]
    np.testing.assert_allclose(ratio[flat], 1.0, rtol=1e-8)
    assert np.all(ratio[~flat] > 1.5)
    # Thm 2(i) at the flattest ones: the gain of v equals s^(k/m).
    s = np.linalg.norm(fig3["fig3_T"], 2)
    np.testing.assert_allclose(
        fig3["fig3_gain_of_v"][flat], np.tile(s ** (np.arange(1, 5) / 4), (2, 1)), rtol=1e-3
    )
