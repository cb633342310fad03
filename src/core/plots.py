"""Small matplotlib helpers shared by the analysis callback and the figure stage.

Everything here draws from saved numbers (dicts, arrays) and never trains or measures.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402

from src.core.files import write_bytes  # noqa: E402

BLUE, RED, GREEN, ORANGE, GREY = "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#7f7f7f"


def draw_gain_profile(ax, gains: dict, title: str | None = None) -> None:
    """Fig. 6 panel: max gain up to layer k (blue dots), gains of the maximal input (red circles)."""
    layers = list(range(1, len(gains["max_gain"]) + 1))
    ax.plot(layers, gains["max_gain"], "o", color=BLUE, label="max gain to layer k")
    ax.plot(
        layers,
        gains["maximal_input_gains"],
        "o",
        mfc="none",
        mec=RED,
        ms=11,
        mew=1.5,
        label="maximally amplified input",
    )
    ax.set_xlabel("layer k")
    ax.set_ylabel(r"gain $\|h_k(x)\| / \|x\|$")
    ax.set_xticks(layers)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)


def plot_gain_profile(gains: dict, path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    draw_gain_profile(ax, gains)
    ax.legend(fontsize=8)
    return save(fig, path)


def save(fig, path: str | Path, formats: Sequence[str] | None = None) -> Path:
    """Save to `path` (and the other `formats` next to it, e.g. ('png', 'pdf')), each file
    written atomically (src.core.files.write_bytes); close the figure."""
    path = Path(path)
    try:
        fig.tight_layout()
        for fmt in formats or (path.suffix.lstrip("."),):
            # no creation date in the PDF: the same data gives the same file (DVC sees no change)
            metadata = {"CreationDate": None} if fmt == "pdf" else None
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=150, metadata=metadata)
            write_bytes(path.with_suffix(f".{fmt}"), buffer.getvalue())
    finally:
        plt.close(fig)
    return path
