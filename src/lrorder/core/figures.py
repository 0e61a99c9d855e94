"""Figure helpers shared by the recipes: a headless backend, seed bands, atomic PNG writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from lrorder.core.rundir import write_atomic  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                     "axes.spines.top": False, "axes.spines.right": False})


def figure(columns: int = 1, rows: int = 1, width: float = 5.0, height: float = 3.6):
    """A new figure with a grid of axes sized for a slide."""
    return plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)


def save(fig, path: Path) -> None:
    """Write `fig` as a PNG atomically and release it."""
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png"), mode="wb")
    plt.close(fig)


def seed_band(ax, x: Sequence[float], per_seed: np.ndarray, label: str, color=None) -> None:
    """Mean over seeds (rows of `per_seed`) as a line, mean ± std as a shaded band."""
    values = np.asarray(per_seed, dtype=float)
    mean = np.nanmean(values, axis=0)
    line, = ax.plot(x, mean, label=label, color=color)
    if values.shape[0] > 1:
        std = np.nanstd(values, axis=0)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
