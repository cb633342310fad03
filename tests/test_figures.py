"""Grid figures (4a, 4b, 4c, 5a) never hide a run: every status has its own mark and legend
entry, and the loss relative to the affine denoiser is shown next to lambda_max."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from src.core.status import STATUSES
from src.paper import figures

AFFINE = 0.04


def run(depth, lr, status, lam=None, ratio=None, seed=0, **extra) -> dict:
    """One row of grid.csv in the current format (spec: results/<stage>/grid.csv)."""
    return {
        "depth": depth,
        "lr": lr,
        "seed": seed,
        "init": "identity",
        "optimizer": "sgd",
        "status": status,
        "reason": "some_reason",
        "epochs": 50,
        "final_train_loss": None if ratio is None else ratio * AFFINE,
        "final_val_loss": None,
        "affine_baseline_loss": AFFINE,
        "loss_vs_affine": ratio,
        "grad_norm_ratio": 0.01,
        "dead_fraction_max": 0.0,
        "lambda_max": lam,
        "lr_times_lambda_max": None if lam is None else lr * lam,
        "key": f"{depth}-{lr}-{seed}",
        **extra,
    }


# depth index 0 = depth 2, 1 = depth 4; lr index 0..3 = 0.5, 1, 2, 4
ROWS = [
    run(2, 0.5, "converged", lam=0.4, ratio=0.7),
    run(2, 1.0, "converged", lam=0.2, ratio=0.8),
    run(2, 2.0, "plateau", lam=0.1, ratio=1.3),
    run(2, 4.0, "diverged"),
    run(4, 0.5, "budget_exhausted", lam=0.9, ratio=1.05),
    run(4, 1.0, "converged", lam=0.5, ratio=0.75),
    run(4, 2.0, "unstable", lam=1.5, ratio=0.9),
    run(4, 4.0, "unverified", ratio=0.85),
]


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


def legend_of(fig):
    """The status legend: on the top (lambda_max) panel."""
    return fig.axes[0].get_legend()


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_grid_figures_are_written_as_png_and_pdf(tmp_path):
    limits = figures.sharpness_limits(ROWS)
    paths = [
        figures.sharpness_heatmap(ROWS, tmp_path / "a.png", "t", limits, 1.5),
        figures.flattest_vs_depth(ROWS, tmp_path / "b.png", "t"),
        figures.stability(ROWS, tmp_path / "c.png", "t"),
    ]
    assert paths == [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    for path in paths:
        for ext in ("png", "pdf"):
            assert path.with_suffix(f".{ext}").stat().st_size > 1000
    assert plt.get_fignums() == []  # saving closes the figure


def test_legend_has_one_entry_per_status_with_counts(close_figures):
    fig = figures.sharpness_figure(ROWS, "t")
    labels = [t.get_text() for t in legend_of(fig).get_texts()]
    assert labels == [
        "converged (3)",
        "plateau (1)",
        "budget_exhausted (1)",
        "unstable (1)",
        "diverged (1)",
        "unverified (1)",
    ]
    fewer = figures.sharpness_figure([r for r in ROWS if r["status"] != "plateau"], "t")
    assert "plateau (1)" not in [t.get_text() for t in legend_of(fewer).get_texts()]
    assert len(legend_of(fewer).get_texts()) == 5


def test_each_status_has_its_own_marker_on_its_tile(close_figures):
    fig = figures.sharpness_figure(ROWS, "t")
    handles = legend_of(fig).legend_handles
    markers = [h.get_marker() for h in handles]
    assert len(set(markers)) == len(markers) == 6
    lines = {line.get_label(): line.get_xydata().tolist() for line in fig.axes[0].lines}
    # x = step-size index, y = depth index
    assert lines["plateau (1)"] == [[2.0, 0.0]]
    assert lines["diverged (1)"] == [[3.0, 0.0]]
    assert lines["budget_exhausted (1)"] == [[0.0, 1.0]]
    assert lines["unstable (1)"] == [[2.0, 1.0]]
    assert lines["unverified (1)"] == [[3.0, 1.0]]
    assert "converged (3)" not in lines  # converged runs are coloured tiles, not marks


def test_style_table_covers_every_training_status():
    assert tuple(figures.STATUS_STYLES) == STATUSES
    styles = figures.status_styles([*STATUSES, "not_converged", "unknown"])
    assert len({marker for marker, _ in styles.values()}) == len(STATUSES) + 2


def test_only_converged_tiles_are_coloured_and_labelled_by_lambda(close_figures):
    fig = figures.sharpness_figure(ROWS, "t")
    top = fig.axes[0]
    assert sorted(texts(top)) == ["0.2", "0.4", "0.5"]  # plateau's 0.1 is no minimum
    image = top.get_images()[0].get_array()
    assert image.mask.tolist() == [[False, False, True, True], [True, False, True, True]]
    assert image[0, 0] == pytest.approx(0.4)


def test_an_edge_of_stability_tile_is_coloured_by_its_lambda_and_marked(close_figures):
    rows = [*ROWS[:3], run(2, 4.0, "edge_of_stability", lam=0.6, ratio=0.9), *ROWS[4:]]
    fig = figures.sharpness_figure(rows, "t")
    top = fig.axes[0]
    assert sorted(texts(top)) == ["0.2", "0.4", "0.5", "0.6"]
    assert top.get_images()[0].get_array()[0, 3] == pytest.approx(0.6)
    lines = {line.get_label(): line.get_xydata().tolist() for line in top.lines}
    assert lines["edge_of_stability (1)"] == [[3.0, 0.0]]
    # a tile with a converged seed is not marked as the edge
    mixed = [*rows, run(2, 4.0, "converged", lam=0.5, ratio=0.8, seed=1)]
    lines = {
        line.get_label(): line.get_xydata().tolist()
        for line in figures.sharpness_figure(mixed, "t").axes[0].lines
    }
    assert lines["edge_of_stability (1)"] == []


def test_loss_vs_affine_is_written_in_every_tile(close_figures):
    fig = figures.sharpness_figure(ROWS, "t", ratio_span=2.0)
    bottom = fig.axes[1]
    assert bottom.get_xlabel() == r"step size $\eta$"
    assert texts(bottom) == ["0.70", "0.80", "1.30", "n/a", "1.05", "0.75", "0.90", "0.85"]
    norm = bottom.get_images()[0].norm
    assert (norm.vmin, norm.vmax) == pytest.approx((0.5, 2.0))  # centred at 1 (log scale)
    assert fig.axes[3].get_ylabel() == "train loss / affine"


def test_ratio_span_is_shared_and_never_narrower_than_the_minimum():
    assert figures.loss_ratio_span(ROWS) == pytest.approx(1 / 0.7)  # the widest ratio, 0.7
    assert figures.loss_ratio_span([run(2, 1.0, "plateau", ratio=1.1)]) == figures.MIN_RATIO_SPAN
    wide = [run(2, 1.0, "plateau", ratio=1.6)]
    assert figures.loss_ratio_span(ROWS, wide) == pytest.approx(1.6)
    assert figures.loss_ratio_span([run(2, 1.0, "converged", ratio=0.4)]) == pytest.approx(2.5)


def test_rows_without_the_new_columns_do_not_crash(tmp_path, close_figures):
    """Old grid.csv: no reason / affine columns, status `not_converged`, one row lacks status."""
    old = [
        {
            "depth": 2,
            "lr": 1.0,
            "status": "converged",
            "final_train_loss": 0.045,
            "lambda_max": 0.1,
        },
        {"depth": 2, "lr": 2.0, "status": "not_converged", "final_train_loss": 0.05},
        {"depth": 4, "lr": 1.0, "status": "diverged", "final_train_loss": None},
        {"depth": 4, "lr": 2.0, "final_train_loss": 0.047, "lambda_max": ""},
    ]
    fig = figures.sharpness_figure(old, "t")
    labels = [t.get_text() for t in legend_of(fig).get_texts()]
    assert labels == ["converged (1)", "diverged (1)", "not_converged (1)", "unknown (1)"]
    assert texts(fig.axes[1]) == ["0.045", "0.05", "n/a", "0.047"]  # plain loss: no affine ref.
    assert fig.axes[3].get_ylabel() == "train loss (no affine ref.)"
    assert figures.sharpness_limits(old) == (0.1, 0.1)
    assert figures.loss_ratio_span(old) == figures.MIN_RATIO_SPAN
    figures.flattest_vs_depth(old, tmp_path / "b.png", "t")
    figures.stability(old, tmp_path / "c.png", "t")
    assert (tmp_path / "b.pdf").exists() and (tmp_path / "c.pdf").exists()


def test_ratio_is_recomputed_from_the_losses_when_only_they_are_present():
    row = {"depth": 2, "lr": 1.0, "status": "plateau", "final_train_loss": 0.02}
    (normal,) = figures.normalize_rows([{**row, "affine_baseline_loss": 0.04}])
    assert normal["loss_vs_affine"] == pytest.approx(0.5)
    assert normal["reason"] is None and normal["lambda_max"] is None


def test_a_cell_with_mixed_seeds_says_how_many_converged(close_figures):
    rows = [
        run(2, 1.0, "converged", lam=0.2, ratio=0.8),
        run(2, 1.0, "plateau", lam=0.05, ratio=1.2, seed=1),
    ]
    fig = figures.sharpness_figure(rows, "t")
    assert texts(fig.axes[0]) == ["0.2\n1/2"]
    assert texts(fig.axes[1]) == ["0.98"]  # geometric mean of 0.8 and 1.2


def test_flattest_figure_counts_runs_and_marks_depths_without_a_minimum(close_figures):
    rows = [*ROWS, run(6, 1.0, "diverged"), run(6, 2.0, "plateau", lam=0.3, ratio=1.3)]
    fig = figures.flattest_figure(rows, "t")
    ax = fig.axes[0]
    assert texts(ax) == ["2/4 conv.", "1/4 conv.", "0/2 conv."]
    flattest = next(line for line in ax.lines if line.get_label() == "flattest minimum found")
    assert flattest.get_xydata().tolist() == [[2.0, 0.2], [4.0, 0.5]]
    missing = next(line for line in ax.lines if line.get_label() == "no converged run")
    assert missing.get_xdata().tolist() == [6]
    assert "10 runs: 3 converged, 2 plateau, 1 budget_exhausted" in ax.get_title()


def test_stability_figure_plots_measured_failures_and_counts_the_rest(close_figures):
    fig = figures.stability_figure(ROWS, "t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "m=2",
        "m=4",
        "plateau (1, 1 plotted)",
        "budget_exhausted (1, 1 plotted)",
        "unstable (1, 1 plotted)",
        "diverged (1, 0 plotted)",
        "unverified (1, 0 plotted)",
        r"$2/\eta$",
    ]
    points = [line.get_xydata().tolist() for line in ax.lines if line.get_label().startswith("_")]
    assert [[2.0, 1.5]] in points  # the unstable run, above 2 / eta = 1
    assert [[2.0, 0.1]] in points  # the plateau


def test_density_figure_draws_each_method_on_a_log_axis_and_marks_lambda_max(tmp_path, monkeypatch):
    import numpy as np

    grid = np.linspace(-0.5, 12.0, 200)

    def bump(centre):
        return (np.exp(-((grid - centre) ** 2) / 0.02) / np.sqrt(0.02 * np.pi)).tolist()

    spectra = {
        "runs": {"sgd": [], "adam": [], "sam": []},
        "densities": {
            "sgd": {"seed": 0, "grid": grid.tolist(), "density": bump(2.0), "lambda_max": 2.0},
            "adam": {"seed": 1, "grid": grid.tolist(), "density": bump(10.0), "lambda_max": 10.0},
        },
    }
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path, formats: drawn.setdefault("fig", fig))
    figures.spectral_densities(spectra, tmp_path / "density.png", {"sgd": "SGD"})
    (ax,) = drawn["fig"].axes
    assert ax.get_yscale() == "log"
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["SGD (seed 0)", "adam (seed 1)"]
    marks = sorted(
        line.get_xdata()[0] for line in ax.get_lines() if line.get_label().startswith("_")
    )
    assert marks == [2.0, 10.0]  # each lambda_max as a vertical line
    assert "no converged run: sam" in ax.get_title()
    # the Gaussian tails underflow to 0: floored (not dropped) so the log axis can show them
    assert min(min(line.get_ydata()) for line in ax.get_lines()[::2]) > 0
    plt.close(drawn["fig"])
