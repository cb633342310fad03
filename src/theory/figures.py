"""Figures 1-3 of the paper: compute their data once, save it, and draw from the saved file.

``compute_figure_data`` does all numerical work and returns plain arrays (saved with
``save_figure_data`` to one .npz); the ``plot_*`` functions only read such a dict, so a figure
can be re-styled without recomputing anything.

    python -m src.theory.figures --data results/theory/figure_data.npz --out-dir figures/theory \
        --compute
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from src.theory import linear, scalar  # noqa: E402

FIGURE_NAMES = ("fig1_scalar_valley", "fig2_interpolation", "fig3_gains")

# Fig. 1: two-layer scalar net with tau = sigma_x^2 = 1. The start lies next to the minimum
# (0.45, 1/0.45) whose sharpness 2(1/0.45^2 + 0.45^2) = 10.3 exceeds both stability thresholds
# 2/eta = 8 (GD) and 2(1 + beta)/eta = 8.7 (heavy ball), so neither can settle there.
FIG1 = {
    "tau": 1.0,
    "sharp_w1": 0.45,
    "offset": 0.01,
    "lr": 0.25,
    "momentum_lr": 0.3,
    "momentum": 0.3,
}
# Fig. 2: the flattest minimum (1, 1) and the sharper minimum (0.4, 2.5) of the same net.
FIG2 = {"tau": 1.0, "flat": (1.0, 1.0), "sharp": (0.4, 2.5)}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def figure1_data(steps: int = 400) -> dict[str, np.ndarray]:
    """Loss level sets, the hyperbola of minima (7), the flattest point (12) and two GD paths."""
    tau = FIG1["tau"]
    w1, w2 = np.meshgrid(np.linspace(0.0, 2.4, 400), np.linspace(0.0, 2.8, 400))
    loss = scalar.scalar_excess_loss(np.stack([w1, w2], axis=-1), tau)
    sharp = np.array([FIG1["sharp_w1"], tau / FIG1["sharp_w1"]])
    start = (sharp[0] + FIG1["offset"], sharp[1])  # just off the valley, next to the star
    gd = scalar.two_layer_descent(start, tau, FIG1["lr"], steps)
    heavy_ball = scalar.two_layer_descent(
        start, tau, FIG1["momentum_lr"], steps, momentum=FIG1["momentum"]
    )
    return {
        "fig1_w1": w1,
        "fig1_w2": w2,
        "fig1_loss": loss,
        "fig1_tau": np.array(tau),
        "fig1_flattest": scalar.flattest_scalar_minima(tau, 2)[0],
        "fig1_sharp_minimum": sharp,
        "fig1_gd_path": gd,
        "fig1_momentum_path": heavy_ball,
        "fig1_lr": np.array(FIG1["lr"]),
        "fig1_momentum_lr": np.array(FIG1["momentum_lr"]),
        "fig1_momentum": np.array(FIG1["momentum"]),
        "fig1_sharpness_start": np.array(scalar.scalar_sharpness(sharp, tau)),
        "fig1_sharpness_gd_end": np.array(scalar.scalar_sharpness(gd[-1], tau)),
        "fig1_sharpness_momentum_end": np.array(scalar.scalar_sharpness(heavy_ball[-1], tau)),
    }


def figure2_data() -> dict[str, np.ndarray]:
    """Loss along the line through a flattest and a sharp minimum (Fig. 2, Claim S1, (S32))."""
    tau = FIG2["tau"]
    flat, sharp = np.array(FIG2["flat"]), np.array(FIG2["sharp"])
    t = np.linspace(-0.35, 1.35, 600)
    line = flat[None] + t[:, None] * (sharp - flat)[None]
    distance = np.linalg.norm(sharp - flat)
    s = np.linspace(-0.1, 0.1, 201)  # signed offsets along the unit line direction
    direction = (sharp - flat) / distance
    w1, w2 = np.meshgrid(np.linspace(0.0, 2.4, 300), np.linspace(0.0, 3.0, 300))
    return {
        "fig2_w1": w1,
        "fig2_w2": w2,
        "fig2_loss_grid": scalar.scalar_excess_loss(np.stack([w1, w2], axis=-1), tau),
        "fig2_flat": flat,
        "fig2_sharp": sharp,
        "fig2_t": t,
        "fig2_line_loss": scalar.scalar_excess_loss(line, tau),
        "fig2_distance": np.array(distance),
        "fig2_offsets": s,
        "fig2_local_flat": scalar.scalar_excess_loss(flat[None] + s[:, None] * direction, tau),
        "fig2_local_sharp": scalar.scalar_excess_loss(sharp[None] + s[:, None] * direction, tau),
        "fig2_line_curvature": np.array(
            [scalar.line_curvature(flat, sharp, tau), scalar.line_curvature(sharp, flat, tau)]
        ),
        "fig2_true_sharpness": np.array(
            [scalar.scalar_sharpness(flat, tau), scalar.scalar_sharpness(sharp, tau)]
        ),
    }


def figure3_data(
    seed: int = 0, dim: int = 4, depth: int = 6, networks: int = 4
) -> dict[str, np.ndarray]:
    """Gains of ``networks`` arbitrary (S104) and flattest implementations of one T (Fig. 3).

    T comes from whitened synthetic data (App. IX.1); flattest minima are found by the greedy
    walk from random minima (S105)-(S106) (`linear.find_flattest_minimum`).
    """
    rng = np.random.default_rng([seed, 3])
    X, Y = linear.synthetic_regression(10 * dim, dim, dim, rng, white=True)
    T = linear.least_squares_target(X, Y)
    dims = (dim,) * (depth + 1)
    bound = linear.flattest_sharpness(T, depth)
    arbitrary = [linear.arbitrary_minimum(T, dims, rng) for _ in range(networks)]
    flattest = []
    for _ in range(networks):
        start = linear.random_walk_start(T, dims, rng)
        flattest.append(linear.find_flattest_minimum(start, rng, T=T, target=bound)[1].weights)
    profiles = [linear.gain_profile(w, T) for w in arbitrary + flattest]
    return {
        "fig3_singular_values": np.array([np.stack(p.singular_values) for p in profiles]),
        "fig3_gain_of_v": np.array([p.gain_of_v for p in profiles]),
        "fig3_bound": profiles[0].bound,
        "fig3_is_flattest": np.array([False] * networks + [True] * networks),
        "fig3_sharpness_over_bound": np.array(
            [linear.top_hessian_eigenvalue_at_minimum(w) / bound for w in arbitrary + flattest]
        ),
        "fig3_T": T,
    }


def compute_figure_data(
    seed: int = 0, fig3_dim: int = 4, fig3_depth: int = 6, fig3_networks: int = 4
) -> dict[str, np.ndarray]:
    """All data behind Figures 1-3."""
    return {
        **figure1_data(),
        **figure2_data(),
        **figure3_data(seed, fig3_dim, fig3_depth, fig3_networks),
    }


def save_figure_data(data: dict[str, np.ndarray], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **data)
    return path


def load_figure_data(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


# --------------------------------------------------------------------------------------------
# Drawing (reads saved data only)
# --------------------------------------------------------------------------------------------

FLAT_COLOR, SHARP_COLOR = "tab:green", "tab:orange"


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=160, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})  # reproducible PDF
    plt.close(fig)
    return paths


def _level_sets(ax, w1: np.ndarray, w2: np.ndarray, loss: np.ndarray) -> None:
    """Filled, log-spaced level sets of the loss (the valley is orders of magnitude flatter)."""
    levels = np.geomspace(1e-4, loss.max(), 15)
    ax.contourf(
        w1,
        w2,
        np.maximum(loss, 1e-4),
        levels=levels,
        cmap="Blues_r",
        norm=matplotlib.colors.LogNorm(),
        alpha=0.75,
    )
    ax.contour(w1, w2, loss, levels=levels, colors="white", linewidths=0.4)


def _minima_hyperbola(ax, tau: float, w1_max: float, w2_max: float) -> None:
    w1 = np.linspace(tau / w2_max, w1_max, 400)
    ax.plot(w1, tau / w1, "k--", lw=1.2, label=r"global minima $w_1 w_2 = \tau$")


def plot_figure1(data: dict[str, np.ndarray], stem: str | Path) -> list[Path]:
    """Fig. 1: level sets, the valley of minima, the flattest point and GD paths."""
    w1, w2, loss = data["fig1_w1"], data["fig1_w2"], data["fig1_loss"]
    tau = float(data["fig1_tau"])
    fig, ax = plt.subplots(figsize=(5.6, 5.6))
    _level_sets(ax, w1, w2, loss)
    _minima_hyperbola(ax, tau, w1.max(), w2.max())
    gd, hb = data["fig1_gd_path"], data["fig1_momentum_path"]
    ax.plot(
        gd[:, 0],
        gd[:, 1],
        "-o",
        color="tab:red",
        ms=2.5,
        lw=0.9,
        label=rf"GD, $\eta={float(data['fig1_lr']):g}$ ($2/\eta={2 / float(data['fig1_lr']):.1f}$)",
    )
    beta, lr_m = float(data["fig1_momentum"]), float(data["fig1_momentum_lr"])
    ax.plot(
        hb[:, 0],
        hb[:, 1],
        "-s",
        color="tab:purple",
        ms=2.2,
        lw=0.9,
        label=rf"GD + momentum {beta:g}, $\eta={lr_m:g}$ ($2(1+\beta)/\eta={2 * (1 + beta) / lr_m:.1f}$)",
    )
    sharp, flat = data["fig1_sharp_minimum"], data["fig1_flattest"]
    ax.plot(
        *sharp,
        "*",
        color="gold",
        mec="k",
        ms=16,
        zorder=5,
        label=rf"sharp minimum, $\lambda_{{\max}}={float(data['fig1_sharpness_start']):.1f}$",
    )
    ax.plot(
        *flat,
        "o",
        color=FLAT_COLOR,
        mec="k",
        ms=10,
        zorder=5,
        label=r"flattest minimum, $\lambda_{\max}=4$",
    )
    for path, color in ((gd, "tab:red"), (hb, "tab:purple")):
        ax.plot(*path[-1], "X", color=color, mec="k", ms=9, zorder=6)
    ax.set_xlim(w1.min(), w1.max())
    ax.set_ylim(w2.min(), w2.max())
    ax.set_xlabel(r"$w_1$")
    ax.set_ylabel(r"$w_2$")
    ax.set_title(
        "Two-layer scalar net: GD leaves the sharp part of the valley\n"
        rf"(ends at $\lambda_{{\max}}$ = {float(data['fig1_sharpness_gd_end']):.2f} and "
        rf"{float(data['fig1_sharpness_momentum_end']):.2f}; X marks the end)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    ax.set_aspect("equal")
    return _save(fig, Path(stem))


def plot_figure2(data: dict[str, np.ndarray], stem: str | Path) -> list[Path]:
    """Fig. 2: (a) the line through two minima, (b) the loss along it, (c) local cross-sections."""
    flat, sharp = data["fig2_flat"], data["fig2_sharp"]
    curv, true = data["fig2_line_curvature"], data["fig2_true_sharpness"]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0))
    ax = axes[0]
    w1, w2 = data["fig2_w1"], data["fig2_w2"]
    _level_sets(ax, w1, w2, data["fig2_loss_grid"])
    _minima_hyperbola(ax, 1.0, w1.max(), w2.max())
    t = data["fig2_t"]
    line = flat[None] + t[:, None] * (sharp - flat)[None]
    ax.plot(line[:, 0], line[:, 1], "-", color="tab:red", lw=1.5, label="interpolation line")
    ax.plot(*flat, "o", color=FLAT_COLOR, mec="k", ms=9, label=r"$w^{(1)}$ flattest")
    ax.plot(*sharp, "o", color=SHARP_COLOR, mec="k", ms=9, label=r"$w^{(2)}$ sharper")
    ax.set_xlim(w1.min(), w1.max())
    ax.set_ylim(w2.min(), w2.max())
    ax.set_xlabel(r"$w_1$")
    ax.set_ylabel(r"$w_2$")
    ax.set_title("(a) two minima of a two-layer scalar net", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[1]
    ax.plot(t, data["fig2_line_loss"], color="k", lw=1.4)
    ax.plot([0], [0], "o", color=FLAT_COLOR, mec="k", ms=9)
    ax.plot([1], [0], "o", color=SHARP_COLOR, mec="k", ms=9)
    ax.set_xlabel(r"$t$ on $w^{(1)} + t\,(w^{(2)} - w^{(1)})$")
    ax.set_ylabel(r"$\ell(w) - \min \ell$")
    ax.set_title("(b) loss along the line", fontsize=10)

    ax = axes[2]
    s = data["fig2_offsets"]
    ax.plot(
        s,
        data["fig2_local_flat"],
        color=FLAT_COLOR,
        lw=3,
        label=rf"around $w^{{(1)}}$: true $\lambda_{{\max}}$ = {true[0]:.2f}",
    )
    ax.plot(
        s,
        data["fig2_local_sharp"],
        "--",
        color=SHARP_COLOR,
        lw=2,
        label=rf"around $w^{{(2)}}$: true $\lambda_{{\max}}$ = {true[1]:.2f}",
    )
    ax.set_xlabel("signed distance from the minimum along the line")
    ax.set_ylabel(r"$\ell(w) - \min \ell$")
    ax.set_title(rf"(c) same curvature on the line: {curv[0]:.3f} vs {curv[1]:.3f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    return _save(fig, Path(stem))


def plot_figure3(data: dict[str, np.ndarray], stem: str | Path) -> list[Path]:
    """Fig. 3: singular values of W_k...W_1 (dots), gain of v (circle), Thm 2(ii) bound (line)."""
    svals, gains, bound = data["fig3_singular_values"], data["fig3_gain_of_v"], data["fig3_bound"]
    flat = data["fig3_is_flattest"].astype(bool)
    ratio = data["fig3_sharpness_over_bound"]
    depth = bound.shape[0]
    k = np.arange(1, depth + 1)
    columns = int(max(flat.sum(), (~flat).sum()))
    fig, axes = plt.subplots(2, columns, figsize=(3.0 * columns, 6.4), squeeze=False)
    low = min(svals[svals > 0].min(), gains.min(), bound.min()) / 2
    high = max(svals.max(), gains.max(), bound.max()) * 2
    for row, (mask, title) in enumerate(
        ((~flat, "(a) arbitrary minima"), (flat, "(b) flattest minima"))
    ):
        for col, index in enumerate(np.flatnonzero(mask)):
            ax = axes[row, col]
            for j in range(svals.shape[2]):
                ax.plot(
                    k,
                    svals[index, :, j],
                    "o",
                    color="tab:blue",
                    ms=4,
                    label=r"$\sigma(W_k\cdots W_1)$" if j == 0 else None,
                )
            ax.plot(
                k,
                gains[index],
                "o",
                mfc="none",
                mec="tab:red",
                ms=10,
                mew=1.5,
                label=r"$\|W_k\cdots W_1 v\|$",
            )
            ax.plot(k, bound, "k:", lw=1.5, label=r"$\sqrt{m}\,\sigma_{\max}(T)^{k/m}$")
            ax.set_yscale("log")
            ax.set_ylim(low, high)
            ax.set_xticks(k)
            ax.set_xlabel("layer k")
            ax.set_title(rf"$\lambda_{{\max}}$ / bound = {ratio[index]:.3g}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{title}\nintermediate gain")
        for col in range(int(mask.sum()), columns):
            axes[row, col].set_visible(False)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"Deep linear nets, d = {svals.shape[2]}, m = {depth}: one T, eight minima", fontsize=11
    )
    fig.tight_layout()
    return _save(fig, Path(stem))


def make_figures(data: dict[str, np.ndarray], out_dir: str | Path) -> list[Path]:
    """Draw Figures 1-3 (PNG and PDF) into ``out_dir`` from saved data."""
    out_dir = Path(out_dir)
    paths = []
    for name, plot in zip(FIGURE_NAMES, (plot_figure1, plot_figure2, plot_figure3)):
        paths += plot(data, out_dir / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Figures 1-3 of the paper from saved data.")
    parser.add_argument("--data", required=True, help=".npz with the figure data")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument(
        "--compute", action="store_true", help="(re)compute and save the data first"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.compute:
        save_figure_data(compute_figure_data(args.seed), args.data)
    for path in make_figures(load_figure_data(args.data), args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
